"""Reaching PostgreSQL for the record (postgres.py, pg_reader.py): the URL and what may be shown of it, the
connection, and its errors as File Conveyor's (a login refused is configuration, a server down is for later).

A password in the URL is a secret: messages show the URL without it (``shown``; ``hide_secrets`` for a command
line).  libpq's own ways are better: ``PGPASSFILE`` (or ``~/.pgpass``), ``PGPASSWORD``, ``PGSERVICE``; psycopg
reads them.  psycopg (``pip install 'fileconveyor[postgresql]'``) is imported only when a URL is used.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from ..errors import ConfigError, RetryableError
from .model import db_key, key_bytes

SCHEMES = ("postgresql://", "postgres://")
# libpq's words for an option it cannot take (a port that is no number, sslmode=bogus): no retry helps
_BAD_OPTION = re.compile(r"invalid (?:\w+ )?value|invalid connection option|invalid URI")
LOCK_TIMEOUT_MS = 30_000  # a row another writer holds this long: the round is retried (SQLite's busy timeout)


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(SCHEMES)


def _ambiguous(url: str) -> bool:
    """More than one '@': a password written without percent-encoding, which no parser splits the same way
    (libpq and urllib disagree), so no part of the URL can be shown without risking a piece of it."""
    return url.count("@") > 1


def _split(url: str) -> tuple[str, str, str | None, str]:
    """(``scheme://``, user, password as written or None, the rest after the '@').  Everything before the one '@'
    is the user part, whatever it holds: a password with '#', '?' or '/' not percent-encoded is one to libpq,
    while urllib would take the rest for a fragment, a query or a path and show it."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not at:
        return scheme + sep, "", None, rest
    user, colon, secret = userinfo.partition(":")
    return scheme + sep, user, secret if colon else None, after


def shown(url: str) -> str:
    """The URL without its password (in the user part or as ``?password=``): what messages may print."""
    if _ambiguous(url):
        return "postgresql://(a URL with more than one '@', not shown)"
    scheme, user, _, rest = _split(url)
    if "?" in rest:
        head, _, query = rest.partition("?")
        query, hash_, fragment = query.partition("#")
        kept = [p for p in query.split("&") if unquote(p.partition("=")[0]) != "password"]
        rest = head + ("?" + "&".join(kept) if kept else "") + hash_ + fragment
    return scheme + (user + "@" if user else "") + rest


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
    found = _query_passwords(url)
    secret = _split(url)[2]
    if secret:
        found.append(unquote(secret))
    return found[0] if found and found[0] else None


def _query_passwords(url: str) -> list[str]:
    query = _split(url)[3].partition("?")[2].partition("#")[0]
    return [v for k, v in parse_qsl(query) if k == "password"]


def _secrets(url: str) -> list[str]:
    found = _query_passwords(url)
    secret = _split(url)[2]
    if secret:
        found += [secret, unquote(secret)]
    return sorted((s for s in found if s), key=len, reverse=True)  # the longest first: no piece of one left


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
    if not state and (isinstance(exc, psycopg.ProgrammingError) or _BAD_OPTION.search(text)):
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
    except (ValueError, UnicodeError) as exc:  # psycopg reading the URL (a database name not UTF-8, ...)
        raise ConfigError(f"{shown(url)}: not a URL psycopg can read ({type(exc).__name__})") from None


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
