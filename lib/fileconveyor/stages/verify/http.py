"""fc-verify's look at a public URL: HTTP(S) HEAD (or GET), TLS verified, redirects followed, with a timeout.

The original verify.py sent a plain-HTTP HEAD to port 80 whatever the URL said (an https URL was asked in clear
text, on the wrong port), dropped the query string (signed URLs failed), had no timeout, and counted anything but
"200 OK" as missing.  Here:

- urllib with the default SSL context: certificates and host names are verified (``--ca-file`` adds a CA);
- redirects are followed (urllib's handler, up to 10) only on the same host: the same scheme and port, or
  http to https (a CDN's upgrade); the query string is kept.  A recorded URL is what an event said: a forged row
  on a CDN the attacker runs would otherwise send fc-verify on to http://169.254.169.254/, an internal port or
  ftp:// (urllib follows redirects to ftp).  The original verify.py followed none;
- ``Accept-Encoding: identity``, so Content-Length is the size of the file and not of a compressed copy;
- 404 and 410 mean missing; any other failure (DNS, refused, timeout, TLS, 403, 5xx) means "could not check",
  which is reported as such and never as missing;
- HEAD answered 405/501, or without a Content-Length, falls back to GET and counts the bytes;
  ``--get`` always downloads, and also gives a SHA-256 of the content.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

from ... import __version__


@dataclass(slots=True)
class Remote:
    """What a check found at the destination: exists True/False, or None with ``error`` when it could not tell."""

    exists: bool | None
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    detail: str | None = None


class HTTPChecker:
    def __init__(self, timeout: float = 30.0, get: bool = False, ca_file: str | None = None):
        self.timeout = timeout
        self.get = get
        try:
            ctx = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            from ...errors import ConfigError

            raise ConfigError(f"--ca-file {ca_file}: {exc}") from None
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), _Redirects())

    def check(self, url: str) -> Remote:
        # A recorded URL is what an event said (fc-record stores it as given): one that is no URL at all (a broken
        # IPv6 host, a NUL byte in a file URL) is a row that cannot be checked, never the end of the run.
        try:
            return self._check(url)
        except ValueError as exc:
            return Remote(None, error=f"cannot check {url!r}: {exc}")

    def _check(self, url: str) -> Remote:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return _file(url)
        if scheme not in ("http", "https"):
            return Remote(None, error=f"cannot check a {scheme or 'relative'} URL over HTTP: give --to for its server")
        if not self.get:
            got = self._request(url, "HEAD")
            if got.exists is not None or got.error != "retry with GET":
                return got
        return self._request(url, "GET")

    def _request(self, url: str, method: str) -> Remote:
        req = urllib.request.Request(
            url, method=method, headers={"Accept-Encoding": "identity", "User-Agent": f"fc-verify/{__version__}"}
        )
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                length = resp.headers.get("Content-Length")
                if method == "HEAD":
                    if length is None or not length.isdigit():
                        return Remote(None, error="retry with GET")
                    return Remote(True, int(length), detail=f"HTTP {resp.status}")
                digest, size = hashlib.sha256(), 0
                while chunk := resp.read(1 << 16):
                    digest.update(chunk)
                    size += len(chunk)
                return Remote(True, size, digest.hexdigest(), detail=f"HTTP {resp.status}")
        except RedirectRefused as exc:
            return Remote(None, error=f"redirected off its host, not followed: {exc}")
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (404, 410):
                return Remote(False, detail=f"HTTP {exc.code} {exc.reason}")
            if method == "HEAD" and exc.code in (405, 501):
                return Remote(None, error="retry with GET")
            return Remote(None, error=f"HTTP {exc.code} {exc.reason}")
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                return Remote(None, error=f"TLS certificate not trusted: {reason.verify_message}")
            return Remote(None, error=f"{urlsplit(url).netloc}: {getattr(reason, 'strerror', None) or reason}")
        except TimeoutError:
            return Remote(None, error=f"timed out after {self.timeout:g} s")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return Remote(None, error=str(exc) or type(exc).__name__)


class RedirectRefused(Exception):
    """A redirect fc-verify does not follow (its text: the URL it pointed to)."""


def may_follow(old: str, new: str) -> bool:
    """Whether a redirect from ``old`` to ``new`` stays where ``old`` was: the same host, and the same scheme and
    port, or http to https (to port 443 or the same port).  Never to another host, port or scheme (ftp, file)."""
    try:
        a, b = urlsplit(old), urlsplit(new)
        if not a.hostname or a.hostname != b.hostname or b.scheme not in ("http", "https"):
            return False
        port_a, port_b = a.port or _PORTS.get(a.scheme), b.port or _PORTS[b.scheme]
    except (ValueError, KeyError):
        return False
    if a.scheme == b.scheme:
        return port_a == port_b
    return a.scheme == "http" and port_b in (443, port_a)


_PORTS = {"http": 80, "https": 443}


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows only redirects on the same host (may_follow); urllib turns a redirected HEAD into a GET: keep it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not may_follow(req.full_url, newurl):
            fp.close()
            raise RedirectRefused(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


def _file(url: str) -> Remote:
    """A file:// URL (fc-transport's default for a local folder without --url): look at the file itself."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return Remote(None, error=f"file URL on another host: {parts.netloc}")
    try:
        st = os.stat(unquote_to_bytes(parts.path))
    except FileNotFoundError:
        return Remote(False, detail="no such file")
    except OSError as exc:
        return Remote(None, error=exc.strerror or str(exc))
    return Remote(True, st.st_size, detail="file")
