"""cf (cf://bucket/prefix, cloudfront://): S3 as the origin of a CloudFront distribution.

Files go to the bucket exactly as with s3:// (same settings); URLs are on the distribution's domain, and every
path uploaded again or deleted is invalidated on CloudFront, in batches: paths collect for ``invalidate_after``
seconds (or until 1,000 are waiting, CloudFront's limit per request) and then go in one CreateInvalidation, so
1,000 changed files cost one request, not 1,000.

Two ways to batch them: fc-transport sets ``defer_invalidations`` and takes the paths from
``invalidation_paths()`` into its state file, in the transaction that records the upload, and sends them through
``invalidate()`` (stages/transport/purge.py): a crash loses none.  Used on its own (a library user, the contract
suite), the transporter collects them in memory (``Invalidations``) and ``close()`` sends what still waits.

Settings (besides s3's):
    distribution_id   the distribution's ID (E2ABC...); required
    domain            its domain (d111.cloudfront.net or your CNAME; default: asked from CloudFront once)
    invalidate        no: don't invalidate (for versioned file names, which never change)
    invalidate_after  seconds a changed path may wait for others before its batch is sent (default 10)

The distribution's origin is the bucket's root: object ``static/a.css`` is https://DOMAIN/static/a.css.
``fc-transport create-distribution`` (cf_setup.py) makes such a distribution and waits until it is deployed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote

import botocore.exceptions as bce

from ..errors import ConfigError, FCError
from ..report import get_logger
from .base import PermanentError, TransientError, safe_rel
from .destination import Destination
from .s3 import S3, _code, _default_url, client_config, make_client

log = get_logger(__name__)
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
                _create_invalidation(client, self.distribution_id, batch)
            except BaseException:
                with self.lock:
                    self.pending = {**dict.fromkeys(paths[i:]), **self.pending}
                raise
            self.sent.append(batch)


def _create_invalidation(client: Any, distribution_id: str, paths: list[str]) -> None:
    client.create_invalidation(
        DistributionId=distribution_id,
        InvalidationBatch={
            "Paths": {"Quantity": len(paths), "Items": paths},
            "CallerReference": f"fileconveyor-{uuid.uuid4()}",
        },
    )


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
        self.invalidate_after = after
        self._cloudfront: Any = None  # the client invalidate() reuses
        self.invalidations: Invalidations | None = None
        self.invalidating = dest.flag("invalidate", True)
        if self.invalidating:
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

    def _upload(self, src: BinaryIO, rel: bytes) -> str | None:
        sent = super()._upload(src, rel)
        if self.invalidations is not None and not self.skipped and not self.defer_invalidations:
            self.invalidations.add(self.path(rel))
        return sent

    def _delete(self, rel: bytes) -> None:
        super()._delete(rel)
        if self.invalidations is not None and not self.defer_invalidations:
            self.invalidations.add(self.path(rel))

    def invalidation_paths(self, remote_rel: bytes | str) -> list[str]:
        return [self.path(self.check_name(safe_rel(remote_rel)))] if self.invalidating else []

    def invalidate(self, paths: list[str]) -> None:
        """One CreateInvalidation for ``paths`` (fc-transport's durable queue sends its batches through this)."""
        if paths:
            self._guard("invalidate", b"", lambda: _create_invalidation(self._api(), self.distribution_id, paths))

    def _api(self) -> Any:
        if self._cloudfront is None:
            self._cloudfront = self.cloudfront()
        return self._cloudfront

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
