"""Reaching PostgreSQL for the record (postgres.py, pg_reader.py): the URL and what may be shown of it, the
connection, and its errors as File Conveyor's (a login refused is configuration, a server down is for later).

A password in the URL is a secret: messages show the URL without it (``shown``; ``hide_secrets`` for a command
line).  libpq's own ways are better: ``PGPASSFILE`` (or ``~/.pgpass``), ``PGPASSWORD``, ``PGSERVICE``; psycopg
reads them.  psycopg (``pip install 'fileconveyor[postgresql]'``) is imported only when a URL is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigError, RetryableError
from .model import db_key, key_bytes

SCHEMES = ("postgresql://", "postgres://")
LOCK_TIMEOUT_MS = 30_000  # a row another writer holds this long: the round is retried (SQLite's busy timeout)


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(SCHEMES)


def _ambiguous(url: str) -> bool:
    """More than one '@': a password written without percent-encoding, which no parser splits the same way
    (libpq and urllib disagree), so no part of the URL can be shown without risking a piece of it."""
    return url.count("@") > 1


def shown(url: str) -> str:
    """The URL without its password (in the netloc or as ``?password=``): what messages may print."""
    if _ambiguous(url):
        return "postgresql://(a URL with more than one '@', not shown)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unreadable URL)"
    start = len(parts.scheme) + 3  # after "scheme://"
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:  # only the user stays of "user:password@"
        url = url[:start] + userinfo.partition(":")[0] + "@" + hostport + url[start + len(netloc) :]
    if parts.query:
        head, _, query = url.partition("?")
        query, hash_, fragment = query.partition("#")
        kept = [p for p in query.split("&") if unquote(p.partition("=")[0]) != "password"]
        url = head + ("?" + "&".join(kept) if kept else "") + hash_ + fragment
    return url


def hide_secrets(arg: str) -> str:
    """A command-line argument as it may be shown: a URL (or ``--db=URL``) without its password."""
    flag, eq, value = arg.partition("=")
    if eq and is_url(value) and not is_url(arg):
        return flag + "=" + shown(value)
    return shown(arg) if is_url(arg) else arg


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "a postgresql:// record needs psycopg: pip install 'fileconveyor[postgresql]' (or psycopg[binary])"
        ) from None
    return psycopg


def password(url: str) -> str | None:
    """The password the URL carries (``?password=`` or in its user part, decoded), or None: what fc-conveyor
    hands the stages as ``PGPASSWORD`` instead of putting it on their command lines."""
    parts = urlsplit(url)
    found = [v for k, v in parse_qsl(parts.query) if k == "password"]
    if parts.password:
        found.append(unquote(parts.password))
    return found[0] if found and found[0] else None


def _secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [v for k, v in parse_qsl(parts.query) if k == "password"]
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return [s for s in found if s]


def translate(exc: Exception, url: str) -> Exception:
    """An FCError for a driver error: a login refused or no such database is configuration (exit 3), a server
    down, restarting, a deadlock or a lock held too long is worth a retry (exit 4).  Anything else (a bug in
    our SQL) is returned as it is.  The message is one line and never holds the password."""
    text = " ".join(str(exc).split())
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    where = shown(url)
    state = getattr(exc, "sqlstate", None) or ""
    psycopg = _driver()
    if state.startswith("28") or "password" in text or "authentication" in text:
        return ConfigError(f"{where}: login refused: {text} (give the password in PGPASSFILE or PGPASSWORD)")
    if state == "3D000" or ("does not exist" in text and "database" in text):
        return ConfigError(f"{where}: {text} (create it first: createdb)")
    if state == "42501":
        return ConfigError(f"{where}: {text} (grant this user the rights fc-record needs: docs/scale-out.md)")
    if isinstance(exc, psycopg.ProgrammingError) and not state:
        return ConfigError(f"{where}: {text}")  # a bad URL or option, found before any server was asked
    if (
        not state
        or state.startswith(("08", "40", "53", "57"))
        or state == "55P03"
        or isinstance(exc, psycopg.OperationalError)
    ):
        return RetryableError(f"{where}: {text} (try again later)")
    return exc


def connect(url: str, read_only: bool = False) -> Any:
    """A connection in autocommit mode (transactions are begun explicitly); FCError when there is none."""
    psycopg = _driver()
    options = f"-c lock_timeout={LOCK_TIMEOUT_MS}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    try:
        return psycopg.connect(
            url, autocommit=True, connect_timeout=10, application_name="fileconveyor", options=options
        )
    except psycopg.Error as exc:
        raise translate(exc, url) from None


def _text(value: str | bytes | None) -> str | None:
    """What a text column holds: the name, or a readable form of one that is not UTF-8."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "backslashreplace")


def _raw(value: str | bytes | None) -> bytes | None:
    return None if value is None else key_bytes(value)


def _name(text: str | None, raw: bytes | None) -> str | bytes | None:
    """A name read back as SQLite's rows give it: text when UTF-8, else the bytes."""
    return db_key(bytes(raw)) if raw is not None else text


class _Conn:
    """One connection and the translation of its errors."""

    def __init__(self, url: str, read_only: bool):
        if _ambiguous(url):
            raise ConfigError(
                "a postgresql:// URL with more than one '@': percent-encode the password (@ is %40, / is %2F, "
                ": is %3A) or, better, leave it out and put it in PGPASSFILE (docs/scale-out.md)"
            )
        self.target, self.read_only = url, read_only  # not "url": Reader.url is the lookup
        self.name = shown(url)
        self.conn: Any = None
        self.conn = connect(url, read_only)

    def ensure(self) -> None:
        """A connection again after one was lost (a server restart): only between transactions."""
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.target, self.read_only)

    def x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        psycopg = _driver()
        if self.conn is None or self.conn.closed:
            # never reconnect here: a statement of a transaction would run outside it, on a new connection
            raise RetryableError(f"{self.name}: the connection was lost (try again later)")
        try:
            return self.conn.execute(sql, params)
        except psycopg.Error as exc:
            raise translate(exc, self.target) from None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
