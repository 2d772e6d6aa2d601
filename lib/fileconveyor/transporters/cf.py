"""cf (cf://bucket/prefix, cloudfront://): S3 as the origin of a CloudFront distribution.

Files go to the bucket exactly as with s3:// (same settings); URLs are on the distribution's domain, and every
path uploaded again or deleted is invalidated on CloudFront, in batches: paths collect for ``invalidate_after``
seconds (or until 1,000 are waiting, CloudFront's limit per request) and then go in one CreateInvalidation, so
1,000 changed files cost one request, not 1,000.  ``close()`` (fc-transport's end) sends what is still waiting.

Settings (besides s3's):
    distribution_id   the distribution's ID (E2ABC...); required
    domain            its domain (d111.cloudfront.net or your CNAME; default: asked from CloudFront once)
    invalidate        no: don't invalidate (for versioned file names, which never change)
    invalidate_after  seconds a changed path may wait for others before its batch is sent (default 10)

The distribution's origin is the bucket's root: object ``static/a.css`` is https://DOMAIN/static/a.css.
``create_distribution()`` makes such a distribution and waits until CloudFront has deployed it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote

import botocore.exceptions as bce

from ..errors import ConfigError, FCError
from .base import PermanentError, TransientError, safe_rel
from .destination import Destination
from .s3 import S3, _code, _default_url, client_config, make_client

log = logging.getLogger(__name__)
MAX_PATHS = 1000  # CloudFront's limit of paths in one invalidation request
TRANSIENT_CODES = {"TooManyInvalidationsInProgress", "Throttling", "ServiceUnavailable", "InternalError"}


class Invalidations:
    """Paths waiting to be invalidated on one distribution, shared by every connection to it."""

    def __init__(self, make_client: Callable[[], Any], distribution_id: str, after: float):
        self.make_client, self.distribution_id, self.after = make_client, distribution_id, after
        self.lock = threading.Lock()
        self.pending: dict[str, None] = {}  # ordered set
        self.timer: threading.Timer | None = None
        self.sent: list[list[str]] = []  # the batches sent, for --progress and the tests
        self.client: Any = None

    def add(self, path: str) -> None:
        with self.lock:
            self.pending[path] = None
            full = len(self.pending) >= MAX_PATHS
            if not full and self.timer is None:
                self.timer = threading.Timer(self.after, self._on_timer)
                self.timer.daemon = True
                self.timer.start()
        if full:
            self.flush()

    def _on_timer(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # the paths stay pending: the next flush (or close) tries them again
            log.warning("CloudFront invalidation of %s failed, will retry: %s", self.distribution_id, exc)
            with self.lock:
                if self.timer is None and self.pending:
                    self.timer = threading.Timer(self.after, self._on_timer)
                    self.timer.daemon = True
                    self.timer.start()

    def flush(self) -> None:
        """Send every waiting path now, MAX_PATHS per request; on failure the unsent ones stay pending."""
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            paths, self.pending = list(self.pending), {}
            if self.client is None and paths:
                self.client = self.make_client()
            client = self.client
        for i in range(0, len(paths), MAX_PATHS):
            batch = paths[i : i + MAX_PATHS]
            try:
                client.create_invalidation(
                    DistributionId=self.distribution_id,
                    InvalidationBatch={
                        "Paths": {"Quantity": len(batch), "Items": batch},
                        "CallerReference": f"fileconveyor-{uuid.uuid4()}",
                    },
                )
            except BaseException:
                with self.lock:
                    self.pending = {**dict.fromkeys(paths[i:]), **self.pending}
                raise
            self.sent.append(batch)


_batches: dict[tuple[str, str | None, str | None], Invalidations] = {}
_batches_lock = threading.Lock()


class CloudFront(S3):
    """The s3 transporter with URLs on a CloudFront distribution and batched invalidations of changed paths."""

    name = "cf"
    schemes = ("cf", "cloudfront")
    settings: ClassVar[dict[str, str]] = {
        **S3.settings,
        "distribution_id": "the CloudFront distribution's ID (required)",
        "domain": "the distribution's domain or CNAME (default: asked from CloudFront)",
        "invalidate": "no: don't invalidate changed and deleted paths (versioned file names)",
        "invalidate_after": "seconds changed paths collect before one invalidation request (default 10)",
    }

    def __init__(self, dest: Destination):
        super().__init__(dest)
        self.distribution_id = dest.settings.get("distribution_id", "")
        if not self.distribution_id:
            raise ConfigError(f"{dest}: setting distribution_id is required (fc-transport --list)")
        try:
            after = float(dest.settings.get("invalidate_after", 10))
        except ValueError:
            raise ConfigError(f"{dest}: invalidate_after must be a number of seconds") from None
        self.domain = dest.settings.get("domain", "")
        self.invalidations: Invalidations | None = None
        if dest.flag("invalidate", True):
            ident = (self.distribution_id, self.endpoint_url, dest.settings.get("profile"))
            with _batches_lock:
                if ident not in _batches:
                    _batches[ident] = Invalidations(self.cloudfront, self.distribution_id, after)
                self.invalidations = _batches[ident]

    def cloudfront(self) -> Any:
        """A CloudFront API client (a global service: its region is always us-east-1)."""
        return make_client(
            self.dest.settings.get("profile") or None,
            "cloudfront",
            region_name="us-east-1",
            endpoint_url=self.endpoint_url,
            config=client_config(self.dest, self.timeout),
        )

    def _upload(self, src: BinaryIO, rel: bytes) -> None:
        super()._upload(src, rel)
        if self.invalidations is not None and not self.skipped:
            self.invalidations.add(self.path(rel))

    def _delete(self, rel: bytes) -> None:
        super()._delete(rel)
        if self.invalidations is not None:
            self.invalidations.add(self.path(rel))

    def path(self, rel: bytes) -> str:
        """The path CloudFront serves ``rel`` at, percent-encoded (so * and ? are never wildcards)."""
        return "/" + quote(self.key(rel), safe="/~")

    def flush(self) -> None:
        """Send the waiting invalidations now (raises TransientError or PermanentError; they stay pending)."""
        if self.invalidations is None:
            return
        # Not through _guard: its error path calls close(), which flushes.
        try:
            self.invalidations.flush()
        except Exception as exc:
            err = self.classify(exc)
            raise type(err)(f"{self.dest}: invalidate: {err}") from exc

    def close(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # close() never raises; the paths stay pending for the next flush
            log.warning("%s", exc)
        super().close()

    def url(self, remote_rel: bytes | str) -> str:
        rel = self.check_name(safe_rel(remote_rel))
        if self.dest.base_url != _default_url(self.dest) or self.presign:
            return super().url(rel)
        if not self.domain:
            self.domain = self._guard("look up the domain of", b"", self._lookup_domain)
        return f"https://{self.domain}/" + quote(self.key(rel), safe="/~")

    def _lookup_domain(self) -> str:
        reply = self.cloudfront().get_distribution(Id=self.distribution_id)
        return str(reply["Distribution"]["DomainName"])

    def classify(self, exc: BaseException) -> FCError:
        if isinstance(exc, bce.ClientError):
            code = _code(exc)
            if code in TRANSIENT_CODES:
                return TransientError(f"CloudFront: {code}")
            if code == "NoSuchDistribution":
                return PermanentError(f"no CloudFront distribution {self.distribution_id}")
        return super().classify(exc)


def create_distribution(
    bucket: str,
    *,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
    profile: str | None = None,
    comment: str = "File Conveyor",
    cnames: tuple[str, ...] = (),
    wait: bool = True,
    poll: float = 20.0,
    progress: Callable[[str], None] = lambda text: None,
) -> tuple[str, str]:
    """Create a distribution serving ``bucket`` (its public-read objects) and return (id, domain).

    With ``wait``, polls until CloudFront reports it Deployed (typically 5 to 15 minutes), calling
    ``progress`` with a line of text at each poll; the seed had a Python-shell recipe for this."""
    config = _plain_config()
    client = make_client(profile, "cloudfront", region_name="us-east-1", endpoint_url=endpoint_url, config=config)
    origin = f"{bucket}.s3.{region}.amazonaws.com"
    reply = client.create_distribution(
        DistributionConfig={
            "CallerReference": f"fileconveyor-{uuid.uuid4()}",
            "Comment": comment,
            "Enabled": True,
            "Aliases": {"Quantity": len(cnames), "Items": list(cnames)},
            "Origins": {
                "Quantity": 1,
                "Items": [{"Id": "s3", "DomainName": origin, "S3OriginConfig": {"OriginAccessIdentity": ""}}],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "s3",
                "ViewerProtocolPolicy": "redirect-to-https",
                "Compress": True,
                # AWS's managed "CachingOptimized" policy: honours the objects' Cache-Control.
                "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",
            },
        }
    )
    dist = reply["Distribution"]
    ident, domain, started = dist["Id"], dist["DomainName"], time.monotonic()
    progress(f"created distribution {ident} ({domain}) for bucket {bucket}: {dist.get('Status', '?')}")
    while wait and dist.get("Status") != "Deployed":
        time.sleep(poll)
        dist = client.get_distribution(Id=ident)["Distribution"]
        progress(f"{ident}: {dist.get('Status')} after {time.monotonic() - started:.0f} s")
    return ident, domain


def _plain_config() -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": 3, "mode": "standard"})
