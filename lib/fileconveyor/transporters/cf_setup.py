"""``fc-transport create-distribution``: a CloudFront distribution in front of a bucket, ready for cf://.

The seed had a recipe to paste into a Python shell for this.  Here it is one call: the distribution serves the
bucket's public-read objects (the s3 transporter's default ACL) at the bucket's root, so object
``static/a.css`` is ``https://DOMAIN/static/a.css``, exactly the URLs the cf transporter emits.  CloudFront
takes 5 to 15 minutes to deploy a new distribution; ``wait`` polls until it says ``Deployed``, reporting each
poll to ``progress``, and gives up after ``timeout`` seconds (the distribution goes on deploying regardless).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions as bce
from botocore.config import Config

from ..errors import ConfigError, FCError
from .base import AuthError, TransientError
from .s3 import AUTH_CODES, TRANSIENT_CODES, _code, make_client

# AWS's managed cache policy "CachingOptimized": caches by path and honours the objects' Cache-Control.
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"


@dataclass
class Distribution:
    id: str
    domain: str
    origin: str
    status: str

    def spec(self, bucket: str) -> str:
        """The --to destination that uploads to ``bucket`` with URLs on this distribution."""
        return f"cf://{bucket}/?distribution_id={self.id}"


class NotDeployed(TransientError):
    """Waiting timed out; the distribution exists and CloudFront goes on deploying it."""


def origin_domain(bucket: str, region: str) -> str:
    """The S3 REST endpoint of ``bucket``: what CloudFront fetches objects from."""
    return f"{bucket}.s3.{region}.amazonaws.com"


def create_distribution(
    bucket: str,
    *,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
    profile: str | None = None,
    origin: str | None = None,
    comment: str = "File Conveyor",
    cnames: tuple[str, ...] = (),
    wait: bool = True,
    poll: float = 20.0,
    timeout: float = 1800.0,
    progress: Callable[[Distribution, float], None] = lambda dist, elapsed: None,
    stopped: Callable[[], bool] = lambda: False,
) -> Distribution:
    """Create a distribution serving ``bucket`` and return it; with ``wait``, once it is Deployed.

    ``progress(distribution, seconds waited)`` is called after the creation and after each poll.  Raises
    NotDeployed after ``timeout`` seconds (its ``dist`` attribute is the distribution), AuthError when
    CloudFront refuses the credentials, TransientError (try later) or ConfigError (a bad request) for the rest."""
    client = make_client(
        profile,
        "cloudfront",
        region_name="us-east-1",  # a global service
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=30, read_timeout=60),
    )
    origin = origin or origin_domain(bucket, region)
    config = {
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
            "CachePolicyId": CACHING_OPTIMIZED,
        },
    }
    reply = _call(lambda: client.create_distribution(DistributionConfig=config))
    dist = _distribution(reply["Distribution"], origin)
    ident = dist.id
    started = time.monotonic()
    progress(dist, 0.0)
    while wait and dist.status != "Deployed" and not stopped():
        waited = time.monotonic() - started
        if waited >= timeout:
            exc = NotDeployed(
                f"distribution {dist.id} is still {dist.status} after {waited:.0f} s; CloudFront goes on deploying "
                f"it (see: aws cloudfront get-distribution --id {dist.id})"
            )
            exc.dist = dist  # type: ignore[attr-defined]
            raise exc
        _sleep(min(poll, timeout - waited), stopped)
        reply = _call(lambda: client.get_distribution(Id=ident))
        dist = _distribution(reply["Distribution"], origin)
        progress(dist, time.monotonic() - started)
    return dist


def _distribution(d: dict[str, Any], origin: str) -> Distribution:
    return Distribution(str(d["Id"]), str(d["DomainName"]), origin, str(d.get("Status") or "?"))


def _sleep(seconds: float, stopped: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stopped() and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))


def _call(op: Callable[[], Any]) -> Any:
    try:
        return op()
    except Exception as exc:
        raise _error(exc) from exc


def _error(exc: BaseException) -> FCError:
    if isinstance(exc, bce.NoCredentialsError):
        return AuthError("no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    if isinstance(exc, bce.ClientError):
        code = _code(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in AUTH_CODES or status == 403:
            return AuthError(f"CloudFront refused the credentials ({code}: {message})")
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"CloudFront: {code}: {message}")
        return ConfigError(f"CloudFront: {code}: {message}")  # a bad name, a CNAME in use: fix the command
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionClosedError, bce.HTTPClientError)):
        return TransientError(f"CloudFront: connection failed: {exc}")
    if isinstance(exc, (bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        return TransientError(f"CloudFront: timed out: {exc}")
    return ConfigError(f"CloudFront: {exc}")
