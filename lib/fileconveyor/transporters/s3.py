"""s3 (s3://bucket/prefix): Amazon S3 and every S3-compatible store (MinIO, Ceph, Cloudflare R2, Backblaze B2...).

Settings:
    region          the bucket's region (default: boto3's configuration, else us-east-1)
    endpoint_url    the store's endpoint for S3-compatible services, e.g. http://127.0.0.1:9000
    profile         the AWS profile to take credentials from (~/.aws/credentials)
    addressing_style  auto (default), path or virtual: how bucket names go into request and public URLs
    acl             canned ACL of uploaded objects (default public-read, as a CDN origin needs); none: send no
                    ACL, for buckets whose Object Ownership setting forbids ACLs
    cache_control   Cache-Control of uploaded objects, e.g. "public, max-age=315360000" for versioned assets
    content_encoding  Content-Encoding of uploaded objects (e.g. gzip, for files fc-process compressed)
    presign         seconds: URLs are presigned and expire after this long (default: plain, permanent URLs)
    multipart_mb    files of this many MiB or more go as multipart uploads of 8 MiB parts, 4 at once (default 64)
    skip_unchanged  yes: don't upload a file whose content the bucket already holds (costs one HEAD request)
Credentials come only from boto3's own chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile in
~/.aws/credentials (setting ``profile`` or AWS_PROFILE), an instance or task role.  Never from the URL.

    s3://my-bucket/static  +  upload(b"/tmp/work/a.css", b"css/a.css")  ->  object static/css/a.css

An S3 PUT publishes the object only once it is complete, so uploads are atomic without a temporary name; files
of 64 MiB or more (and streams from pipes) go as multipart uploads (several parts at once; an interrupted
one is aborted).  What arrives is checked against fc-transport's one read of the file (the SHA-256 it stores as
``fc-sha256``): one PUT carries that hash, each part the hash of its part of that read (_part_hash).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import re
import threading
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import botocore.exceptions as bce
import botocore.handlers
import botocore.utils
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from s3transfer.utils import ChunksizeAdjuster

from ..errors import ConfigError, FCError
from .base import UNCHANGED, AuthError, PermanentError, RemoteStat, TransientError, Transporter, safe_rel, unchanged
from .destination import Destination
from .s3_body import (
    HASH_KEY,
    KNOWN_SHA256,
    FullReads,
    PartHashes,
    expect_for_large_bodies,
    known_body_hash,
    read_all,
)

MULTIPART = 8 * 1024 * 1024  # part size (boto3's default), and the threshold for streams of unknown size
IN_MEMORY = 1024 * 1024  # files below this are read at once and sent from memory
AUTH_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
    "403",  # HEAD replies carry no body, hence no code: the bare status
}
TRANSIENT_CODES = {
    # A body that does not match its digest (Content-MD5, x-amz-checksum-*, the signed SHA-256) or its length was
    # damaged on its way, or the file was rewritten while it was sent: the next try sends it whole.
    "BadDigest",
    "IncompleteBody",
    "XAmzContentSHA256Mismatch",
    "InternalError",
    "OperationAborted",
    "RequestTimeout",
    "RequestTimeTooSkewed",  # a clock being corrected; also what a paused laptop sees
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
}
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
# Bucket names that can be a host name label under TLS (no dots: *.s3.amazonaws.com certificates).
_VIRTUAL_OK = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")

# boto3.Session() reads the configuration files each time: share one per profile.  A session is not thread-safe
# (fc-transport's worker threads connect at the same time), so everything that uses one holds the lock.
_sessions: dict[str | None, boto3.Session] = {}
_sessions_lock = threading.Lock()


def _session(profile: str | None) -> boto3.Session:
    if profile not in _sessions:
        try:
            _sessions[profile] = boto3.Session(profile_name=profile)
        except bce.ProfileNotFound:
            raise ConfigError(f"AWS profile {profile!r} is in no AWS configuration file") from None
    return _sessions[profile]


def make_client(profile: str | None, service: str, **kwargs: Any) -> Any:
    """A boto3 client of ``service`` with the credentials of ``profile`` (None: boto3's default chain)."""
    with _sessions_lock:
        return _session(profile).client(service, **kwargs)


def default_region(profile: str | None) -> str | None:
    with _sessions_lock:
        return _session(profile).region_name  # type: ignore[no-any-return]


def _aws(dest: Destination) -> bool:
    """Whether ``dest`` is AWS itself (no endpoint_url): the store that has the checksums boto3 sends."""
    return "endpoint_url" not in dest.settings


def client_config(dest: Destination, timeout: float, **extra: Any) -> Config:
    """Timeouts, few retries (fc-transport retries with back-off itself) and the addressing style."""
    style = dest.settings.get("addressing_style", "auto")
    if style not in ("auto", "path", "virtual"):
        raise ConfigError(f"{dest}: addressing_style must be auto, path or virtual, not {style!r}")
    # Stores other than AWS often lack the CRC checksums boto3 sends by default since 2025 (uploads then fail
    # with a 400): ask for them only where the protocol requires them.
    checksums = "when_supported" if _aws(dest) else "when_required"
    return Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": style},
        signature_version="s3v4",  # presigned URLs too: SigV2 is refused by every region opened since 2014
        request_checksum_calculation=checksums,
        response_checksum_validation=checksums,
        **extra,
    )


class S3(Transporter):
    """Uploads objects to an S3 bucket with boto3: one PUT (atomic) or a multipart upload for big files."""

    name = "s3"
    schemes = ("s3",)
    settings: ClassVar[dict[str, str]] = {
        "region": "the bucket's region (default: boto3's configuration, else us-east-1)",
        "endpoint_url": "endpoint of an S3-compatible store (MinIO, R2, B2...), e.g. http://127.0.0.1:9000",
        "profile": "AWS profile holding the credentials (default: boto3's chain: environment, profile, role)",
        "addressing_style": "auto (default), path or virtual: bucket name in the URL path or in the host name",
        "acl": "canned ACL of uploaded objects (default public-read); none: no ACL (buckets that forbid them)",
        "cache_control": "Cache-Control header of uploaded objects, e.g. 'public, max-age=315360000'",
        "content_encoding": "Content-Encoding header of uploaded objects, e.g. gzip",
        "presign": "seconds: hand out presigned URLs expiring after this long (default: plain public URLs)",
        "multipart_mb": "files of this many MiB or more go as multipart uploads, 4 parts at once (default 64)",
        "skip_unchanged": "yes: don't upload a file whose content the bucket already holds (one HEAD per file)",
    }
    default_connections = 8  # HTTP requests are cheap to run side by side; latency, not bandwidth, limits S3

    def __init__(self, dest: Destination):
        super().__init__(dest)
        if not dest.host:
            raise ConfigError(f"{dest}: no bucket: write s3://BUCKET/prefix")
        self.bucket = dest.host
        root = dest.root.strip(b"/")
        self.prefix = self._text(root) + "/" if root else ""
        self.endpoint_url = dest.settings.get("endpoint_url") or None
        if self.endpoint_url and not urlsplit(self.endpoint_url).scheme.startswith("http"):
            raise ConfigError(f"{dest}: endpoint_url must be an http:// or https:// URL")
        acl = dest.settings.get("acl", "public-read")
        self.acl = None if acl.lower() in ("", "none", "no", "off") else acl
        presign = dest.settings.get("presign", "")
        try:
            self.presign = int(presign) if presign else 0
        except ValueError:
            raise ConfigError(f"{dest}: presign must be a number of seconds") from None
        client_config(dest, self.timeout)  # checks the settings now, not at the first upload
        try:
            self.threshold = int(float(dest.settings.get("multipart_mb", 64)) * 1024 * 1024)
        except ValueError:
            raise ConfigError(f"{dest}: multipart_mb must be a number of MiB") from None
        # Parts of 8 MiB, boto3's default; s3transfer makes them bigger for files past 10,000 parts (78 GiB).
        self.transfer = TransferConfig(
            multipart_threshold=min(self.threshold, MULTIPART), multipart_chunksize=MULTIPART, max_concurrency=4
        )
        self.skipped = False  # whether the last upload found the content already there (skip_unchanged)
        self._parts: dict[str, list[bytes]] = {}  # key -> SHA-256 of each part of our read, for _part_hash
        self._client: Any = None
        self._region: str | None = None

    # -- boto3 ------------------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            client = make_client(
                self.dest.settings.get("profile") or None,
                "s3",
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=client_config(self.dest, self.timeout),
            )
            # botocore asks "Expect: 100-continue" before every body, and waits for the store's go-ahead: one
            # more round trip per file, a good part of a small file's time.  Only a large body is worth it.
            client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
            client.meta.events.register("before-call.s3", expect_for_large_bodies)
            client.meta.events.register("before-parameter-build.s3.PutObject", known_body_hash)
            client.meta.events.register("before-parameter-build.s3.UploadPart", self._part_hash)
            self._client = client
        return self._client

    @property
    def region(self) -> str:
        if self._region is None:
            profile = self.dest.settings.get("profile") or None
            self._region = self.dest.settings.get("region") or default_region(profile) or "us-east-1"
        return self._region

    def _connect(self) -> None:
        # No request here: a deploy user often may PutObject but not ListBucket, which HeadBucket needs.
        # Bad credentials show on the first real request instead (AuthError, once).
        self.client()

    def _check_root(self) -> None:
        # One cheap signed request proves the credentials and the bucket.  A deploy user that may PutObject but
        # not list (AccessDenied here) is fine: its key and signature were accepted.
        try:
            self.client().list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except bce.ClientError as exc:
            if _code(exc) != "AccessDenied":
                raise

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- operations -------------------------------------------------------------------------------

    def key(self, rel: bytes) -> str:
        return self.prefix + self._text(rel)

    def check_name(self, rel: bytes) -> bytes:
        self._text(rel)
        if _CONTROL.search(rel):
            # AWS stores them, but XML listings turn \r into \n, and many S3-compatible stores (moto, some
            # MinIO versions) answer 404 or 400: refused here, the same everywhere, rather than half-working.
            raise PermanentError(f"S3 cannot carry {rel!r}: control characters in object keys")
        if len(self.prefix.encode()) + len(rel) > 1024:
            raise PermanentError(f"S3 cannot carry {rel!r}: object keys are at most 1024 bytes")
        return rel

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(f"S3 cannot carry {raw!r}: object keys are UTF-8") from None

    def extra_args(self, key: str, digest: str | None) -> dict[str, Any]:
        """Headers of the new object: Content-Type from the name, and the configured ones."""
        content_type, _ = mimetypes.guess_type(key, strict=False)
        extra: dict[str, Any] = {"ContentType": content_type or "application/octet-stream"}
        if self.acl:
            extra["ACL"] = self.acl
        if "cache_control" in self.dest.settings:
            extra["CacheControl"] = self.dest.settings["cache_control"]
        if "content_encoding" in self.dest.settings:
            extra["ContentEncoding"] = self.dest.settings["content_encoding"]
        if digest:
            extra["Metadata"] = {HASH_KEY: digest}
        return extra

    def _upload(self, src: BinaryIO, rel: bytes) -> str | None:
        key, client = self.key(rel), self.client()
        self.skipped = False
        if not src.seekable():  # a pipe: stream it, no hash (we cannot read it twice)
            client.upload_fileobj(
                FullReads(src), self.bucket, key, ExtraArgs=self.extra_args(key, None), Config=self.transfer
            )
            return None
        size = os.fstat(src.fileno()).st_size
        # SHA-256 for the metadata and for the signature (known_body_hash); MD5 only to compare with the ETag of
        # an object some other tool uploaded (skip_unchanged): it is the slowest pass (32 ms per 20 MiB here).
        md5 = hashlib.md5(usedforsecurity=False) if self.skip_unchanged else None
        sha = hashlib.sha256()
        parts = PartHashes(ChunksizeAdjuster().adjust_chunksize(MULTIPART, size)) if size >= self.threshold else None
        data = read_all(src) if size < IN_MEMORY else b""
        for chunk in [data] if size < IN_MEMORY else iter(lambda: src.read(1 << 20), b""):
            sha.update(chunk)
            if md5:
                md5.update(chunk)
            if parts:
                parts.update(chunk)
        if size >= IN_MEMORY:
            src.seek(0)
        # What was hashed is one version of the file (the signed hash and the multipart check below cover the send).
        unchanged(src, len(data) if size < IN_MEMORY else None)
        digest = sha.hexdigest()
        if md5 and self._holds(key, digest, md5.hexdigest()):
            self.skipped = True
            return UNCHANGED
        extra = self.extra_args(key, digest)
        if size < self.threshold:
            # One PUT: no transfer-manager threads, and its signature carries the SHA-256 of the body
            # (x-amz-content-sha256), so the store checks that what arrived is what we hashed: another version of
            # the file is refused.  Multipart below ~64 MiB costs more requests than its parallel parts save.
            body = data if size < IN_MEMORY else src
            if _aws(self.dest):
                # Over HTTPS botocore signs no body (a CRC32 trailer of what it reads while sending instead): the
                # same SHA-256 as a checksum header, which AWS checks, so a file rewritten after our read (same
                # size and mtime: the check after the send misses it) is refused, not stored under a wrong hash.
                # It was Content-MD5 of our read before d5a6231.  Other stores often lack these checksums: there
                # the signature carries the hash (no checksum header: botocore signs the body, _payload_hash).
                extra = {**extra, "ChecksumSHA256": base64.b64encode(sha.digest()).decode()}
            client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        else:
            # Each part goes with the SHA-256 of that part of our read (_part_hash), which the store checks: a
            # file rewritten after our read (size and mtime kept) or a part damaged on its way is refused before
            # the object is complete, never published under the fc-sha256 of another version.  To AWS as the
            # part's checksum header (SHA256 checksums: the object's is the composite of its parts'), elsewhere
            # as the signed hash, as for one PUT.
            if _aws(self.dest):
                extra = {**extra, "ChecksumAlgorithm": "SHA256"}
            self._parts[key] = parts.digests() if parts else []
            try:
                client.upload_fileobj(src, self.bucket, key, ExtraArgs=extra, Config=self.transfer)
            finally:
                self._parts.pop(key, None)
        return None

    def _part_hash(self, params: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
        """An UploadPart of ours: the SHA-256 of that part of our read, as its checksum (AWS) or signed hash."""
        digests, number = self._parts.get(params.get("Key", "")), params.get("PartNumber")
        if not digests or not isinstance(number, int) or not 1 <= number <= len(digests):
            return  # a stream from a pipe: not read before, botocore hashes what it sends
        digest = digests[number - 1]
        context[KNOWN_SHA256] = digest.hex()
        if _aws(self.dest):
            params["ChecksumSHA256"] = base64.b64encode(digest).decode()

    def _holds(self, key: str, digest: str, md5: str | None) -> bool:
        """Whether the bucket's object at ``key`` has this content (our metadata hash, else a plain PUT's ETag)."""
        head = self._head(key)
        if head is None:
            return False
        if head.get("Metadata", {}).get(HASH_KEY) == digest:
            return True
        etag = head.get("ETag", "").strip('"')
        return md5 is not None and "-" not in etag and etag == md5  # a multipart ETag is no MD5 of the content

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client().head_object(Bucket=self.bucket, Key=key)  # type: ignore[no-any-return]
        except bce.ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _delete(self, rel: bytes) -> None:
        self.client().delete_object(Bucket=self.bucket, Key=self.key(rel))  # 204 for a missing key too

    def _stat(self, rel: bytes) -> RemoteStat | None:
        head = self._head(self.key(rel))
        if head is None:
            return None
        modified = head.get("LastModified")
        return RemoteStat(int(head["ContentLength"]), modified.timestamp() if modified else None)

    # -- URLs -------------------------------------------------------------------------------------

    def url(self, remote_rel: bytes | str) -> str:
        rel = self.check_name(safe_rel(remote_rel))
        if self.dest.base_url != _default_url(self.dest):  # the user said where the files are served from
            return super().url(rel)
        key = self.key(rel)
        if self.presign:
            return str(
                self.client().generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign
                )
            )
        return self.public_base() + quote(key, safe="/~")

    def public_base(self) -> str:
        """The plain URL of the bucket's root, ending in "/": what a browser GETs for a public-read object."""
        style = self.dest.settings.get("addressing_style", "auto")
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url.rstrip("/"))
            if style == "virtual":
                return f"{parts.scheme}://{self.bucket}.{parts.netloc}{parts.path}/"
            return f"{self.endpoint_url.rstrip('/')}/{quote(self.bucket)}/"  # path style: works for any name
        if style == "path" or not _VIRTUAL_OK.match(self.bucket):
            return f"https://s3.{self.region}.amazonaws.com/{quote(self.bucket)}/"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/"

    # -- errors -----------------------------------------------------------------------------------

    def classify(self, exc: BaseException) -> FCError:
        if isinstance(exc, bce.NoCredentialsError):
            return AuthError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the profile "
                "setting, or run on an instance with a role"
            )
        if isinstance(exc, (bce.PartialCredentialsError, bce.CredentialRetrievalError)):
            return AuthError(f"AWS credentials incomplete: {exc}")
        if isinstance(exc, (bce.ConnectTimeoutError, bce.ReadTimeoutError)):
            return TransientError(f"timed out after {self.timeout:g} s: {exc}")
        if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionClosedError, bce.HTTPClientError)):
            return TransientError(f"connection failed: {exc}")
        if isinstance(exc, bce.ClientError):
            code = _code(exc)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = exc.response.get("Error", {}).get("Message") or ""
            text = f"{code}: {message}" if message else code
            if code in AUTH_CODES or status == 403:
                return AuthError(f"{self.bucket}: access refused ({text})")
            if code in TRANSIENT_CODES or status >= 500 or status == 429:
                return TransientError(text)
            if code == "NoSuchBucket":
                return PermanentError(f"no bucket {self.bucket!r} at this endpoint ({text})")
            return PermanentError(text)
        if isinstance(exc, bce.BotoCoreError):
            return PermanentError(str(exc))
        return super().classify(exc)


def _code(exc: bce.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _default_url(dest: Destination) -> str:
    # What parse_destination makes when no --url was given: the spec itself.
    return str(dest).rstrip("/") + "/"
