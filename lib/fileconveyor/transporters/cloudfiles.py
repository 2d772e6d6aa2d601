"""cloudfiles (cloudfiles://user@container/prefix, swift://): Rackspace Cloud Files and any OpenStack Swift.

Settings:
    auth_url        the identity endpoint (default Rackspace's v2.0 one); v1 endpoints (Rackspace-style
                    X-Auth-User/X-Auth-Key, Swift's tempauth) end in /v1.0 or /auth/v1.0
    auth_version    1, 2 or 3 (default: 3 when auth_url ends in /v3, 1 when in /v1.0, else 2)
    tenant          the tenant (v2) or project (v3) name
    user_domain     v3: the user's domain (default "Default"); project_domain likewise
    project_domain  v3: the project's domain (default "Default")
    region          the region whose object-store endpoint to use (e.g. DFW, ORD, RegionOne)
    container       the container, when its name is not a valid host name (the URL's host is lowercased)
    cdn_url         the container's public CDN URL, e.g. https://abc.ssl.cf1.rackcdn.com (default: its storage URL)
    cache_control   Cache-Control header of uploaded objects
    content_encoding  Content-Encoding header of uploaded objects
    skip_unchanged  yes: don't upload a file whose MD5 the container already holds (one HEAD per file)
    segment_mb      a file above this many MiB goes up in segments as a Static Large Object (default 5120,
                    Swift's 5 GiB limit; see cloudfiles_slo.py)
The key or password comes from FC_<NAME>_PASSWORD, FC_PASSWORD or a private config file, never the URL.

    cloudfiles://deploy@static/css  +  upload(b"/tmp/work/a.css", b"a.css")  ->  object css/a.css in "static"

A Swift PUT makes the object visible only once it is complete, and carries the content's MD5 (ETag) for the
server to check, so uploads are atomic and verified without a temporary name.  The original crashed on its own
error path here; every swiftclient and HTTP error is classified below.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote

import requests.exceptions
import swiftclient
from swiftclient.exceptions import ClientException

from ..errors import ConfigError, FCError
from . import cloudfiles_slo as slo
from .base import UNCHANGED, AuthError, PermanentError, RemoteStat, TransientError, Transporter, safe_rel, unchanged
from .destination import Destination

RACKSPACE_AUTH = "https://identity.api.rackspacecloud.com/v2.0/"
SEGMENT_MB = 5120  # Swift's largest single object: 5 GiB


class CloudFiles(Transporter):
    """Uploads objects to a Swift container with python-swiftclient."""

    name = "cloudfiles"
    schemes = ("cloudfiles", "swift")
    settings: ClassVar[dict[str, str]] = {
        "auth_url": "identity endpoint (default Rackspace's v2.0); .../v1.0 for Rackspace-style or tempauth",
        "auth_version": "1, 2 or 3 (default: guessed from auth_url)",
        "tenant": "tenant (v2) or project (v3) name",
        "user_domain": "v3: the user's domain (default Default)",
        "project_domain": "v3: the project's domain (default Default)",
        "region": "region of the object-store endpoint (DFW, ORD, RegionOne...)",
        "container": "the container, when its name is no valid host name (the URL's host is lowercased)",
        "cdn_url": "the container's public (CDN) URL (default: its storage URL)",
        "cache_control": "Cache-Control header of uploaded objects",
        "content_encoding": "Content-Encoding header of uploaded objects",
        "skip_unchanged": "yes: don't upload a file whose MD5 the container already holds (one HEAD per file)",
        "segment_mb": "a file above this many MiB goes up in segments of it, as a Static Large Object "
        "(default 5120: Swift's 5 GiB limit per object)",
    }
    default_connections = 8

    def __init__(self, dest: Destination):
        super().__init__(dest)
        self.container = dest.settings.get("container") or dest.host
        if not self.container:
            raise ConfigError(f"{dest}: no container: write {dest.scheme}://user@CONTAINER/prefix")
        root = dest.root.strip(b"/")
        self.prefix = self._text(root) + "/" if root else ""
        self.auth_url = dest.settings.get("auth_url", RACKSPACE_AUTH)
        version = dest.settings.get("auth_version") or _guess_version(self.auth_url)
        if version not in ("1", "1.0", "2", "2.0", "3"):
            raise ConfigError(f"{dest}: auth_version must be 1, 2 or 3")
        self.auth_version = version[0]
        try:
            self.segment = int(float(dest.settings.get("segment_mb", SEGMENT_MB)) * (1 << 20))
        except ValueError:
            self.segment = 0
        if not 1 << 20 <= self.segment <= SEGMENT_MB << 20:
            raise ConfigError(f"{dest}: segment_mb must be a number of MiB from 1 to {SEGMENT_MB}")
        self.skipped = False
        self.conn: Any = None

    def _connect(self) -> None:
        s = self.dest.settings
        os_options = {
            k: v
            for k, v in {
                "tenant_name": s.get("tenant"),
                "project_name": s.get("tenant"),
                "user_domain_name": s.get("user_domain", "Default") if self.auth_version == "3" else None,
                "project_domain_name": s.get("project_domain", "Default") if self.auth_version == "3" else None,
                "region_name": s.get("region"),
            }.items()
            if v
        }
        conn = swiftclient.Connection(
            authurl=self.auth_url,
            user=self.dest.user,
            key=self.dest.secret("password") or "",
            auth_version=self.auth_version,
            tenant_name=s.get("tenant"),
            os_options=os_options,
            timeout=self.timeout,
            retries=0,  # fc-transport retries with back-off; swiftclient's own retries hide a dead server
        )
        conn.get_auth()  # fail now, once, on wrong credentials; also learns the storage URL
        self.conn = conn

    def _check_root(self) -> None:
        try:
            self.conn.head_container(self.container)
        except ClientException as exc:
            if exc.http_status == 404:
                raise PermanentError(f"no container {self.container!r} (404 Not Found)") from exc
            raise

    def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def key(self, rel: bytes) -> str:
        return self.prefix + self._text(rel)

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(f"Swift cannot carry {raw!r}: object names are UTF-8") from None

    def check_name(self, rel: bytes) -> bytes:
        self._text(rel)
        if len(self.prefix.encode()) + len(rel) > 1024:
            raise PermanentError(f"Swift cannot carry {rel!r}: object names are at most 1024 bytes")
        return rel

    def _upload(self, src: BinaryIO, rel: bytes) -> str | None:
        key = self.key(rel)
        self.skipped = False
        content_type, _ = mimetypes.guess_type(key, strict=False)
        headers = {}
        if "cache_control" in self.dest.settings:
            headers["Cache-Control"] = self.dest.settings["cache_control"]
        if "content_encoding" in self.dest.settings:
            headers["Content-Encoding"] = self.dest.settings["content_encoding"]
        etag = size = None
        if src.seekable():
            h = hashlib.md5(usedforsecurity=False)
            while chunk := src.read(1 << 20):
                h.update(chunk)
            etag, size = h.hexdigest(), src.tell()
            unchanged(src, size)  # the ETag is of one version of the file; Swift checks what arrives against it
            head = self._head(key) if self.skip_unchanged or size > self.segment else None
            if self.skip_unchanged and etag in ((head or {}).get("etag"), (head or {}).get(slo.MD5_META.lower())):
                self.skipped = True
                return UNCHANGED
            src.seek(0)
        try:
            if size is not None and etag is not None and size > self.segment:
                ctype = content_type or "application/octet-stream"
                slo.put_slo(self.conn, self.container, key, src, size, etag, self.segment, ctype, headers, head)
            else:
                self._put(src, key, size, etag, content_type, headers)
        except ClientException as exc:
            if exc.http_status == 404:  # a PUT finds no object missing: the container is
                raise PermanentError(f"no container {self.container!r} (404 Not Found)") from exc
            raise
        return None

    def _put(
        self, src: BinaryIO, key: str, size: int | None, etag: str | None, content_type: str | None, headers: dict
    ) -> None:
        self.conn.put_object(
            self.container,
            key,
            contents=src,
            content_length=size,  # None for a pipe: sent chunked
            etag=etag,  # the server refuses (422) a body whose MD5 differs
            content_type=content_type or "application/octet-stream",
            headers=headers,
            chunk_size=1 << 20,
        )

    def _head(self, key: str) -> dict[str, str] | None:
        try:
            return self.conn.head_object(self.container, key)  # type: ignore[no-any-return]
        except ClientException as exc:
            if exc.http_status == 404:
                return None
            raise

    def _delete(self, rel: bytes) -> None:
        key = self.key(rel)
        try:
            # A HEAD first: a large object's segments go with it (and a plain DELETE would leave them).
            if slo.is_slo(self._head(key)):
                slo.delete_slo(self.conn, self.container, key)
            else:
                self.conn.delete_object(self.container, key)
        except ClientException as exc:
            if exc.http_status != 404:  # already gone is success
                raise

    def _stat(self, rel: bytes) -> RemoteStat | None:
        head = self._head(self.key(rel))
        if head is None:
            return None
        stamp = head.get("x-timestamp")
        return RemoteStat(int(head.get("content-length", 0)), float(stamp) if stamp else None)

    def url(self, remote_rel: bytes | str) -> str:
        rel = self.check_name(safe_rel(remote_rel))
        cdn = self.dest.settings.get("cdn_url")
        if cdn:
            return cdn.rstrip("/") + "/" + quote(self.key(rel), safe="/~")
        if self.dest.base_url != str(self.dest).rstrip("/") + "/":  # --url given
            return super().url(rel)
        self._run("authenticate for the URL of", rel, lambda: None)  # the storage URL comes with the token
        return f"{self.conn.url.rstrip('/')}/{quote(self.container)}/{quote(self.key(rel), safe='/~')}"

    def classify(self, exc: BaseException) -> FCError:
        if isinstance(exc, ClientException):
            status = exc.http_status or 0
            reason = f"{status} {exc.http_reason}".strip() if status else str(exc)
            if status == 401:
                return AuthError(f"credentials refused by {self.auth_url} ({reason})")
            # Keystone (v2/v3) answers reach us as swiftclient messages without a status: a refused login
            # or a catalog without our endpoint is no outage to retry ("Authorization Failure" is: Keystone
            # unreachable).
            if not status and str(exc).startswith("Unauthorized"):
                return AuthError(f"credentials refused by {self.auth_url} ({exc})")
            if not status and str(exc).startswith("Endpoint for "):
                region = self.dest.settings.get("region")
                where = f"in region {region!r}" if region else "(setting region)"
                return AuthError(f"the catalog of {self.auth_url} has no object-store endpoint {where}")
            if not status and "python-keystoneclient" in str(exc):  # swiftclient's v2/v3 auth imports it
                return AuthError(
                    f"auth_version {self.auth_version} (Keystone) needs python-keystoneclient: "
                    f"pip install python-keystoneclient"
                )
            if status == 403:
                return AuthError(f"access to container {self.container!r} refused ({reason})")
            if status in (408, 429, 498) or status >= 500 or not status:
                return TransientError(reason if status else f"connection failed: {exc}")
            if status == 422:  # the body's MD5 is not the ETag: damaged on its way, or rewritten while sent
                return TransientError(f"{reason}: the body that arrived is not the file we read (sent again)")
            return PermanentError(reason)
        if isinstance(exc, requests.exceptions.Timeout):
            return TransientError(f"timed out after {self.timeout:g} s")
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            return TransientError(f"connection failed: {exc}")
        if isinstance(exc, requests.exceptions.RequestException):
            return TransientError(str(exc))
        return super().classify(exc)


def _guess_version(auth_url: str) -> str:
    path = auth_url.rstrip("/")
    if path.endswith("/v3"):
        return "3"
    if path.endswith(("/v1.0", "/v1")) or os.path.basename(path) == "auth":
        return "1"
    return "2"
