"""config.xml's settings for running beyond one machine (docs/scale-out.md): the broker and a shared record.

    <settings>
      <BROKER>nats://broker:4222/FC</BROKER>                        <!-- fc-conveyor --role publisher|worker -->
      <BROKER_PARTITIONS>8</BROKER_PARTITIONS>                      <!-- when fc-publish makes a stream -->
      <SYNCED_FILES_DB>postgresql://fc@db.example/cdn</SYNCED_FILES_DB>
    </settings>

A password is a secret.  In the record's URL it is taken out of every command line (``ps`` shows those, and
--print, --supervisord and --systemd print them) and handed to the stages as libpq's ``PGPASSWORD`` in their
environment, named, never printed; ``~/.pgpass`` (``PGPASSFILE``) is better still.  The broker's user and
password (or token) in <BROKER> go the same way, as ``NATS_USER``/``NATS_PASSWORD`` (``NATS_TOKEN``), which
fc-publish and fc-consume read (delivery/nats_auth.py); <BROKER_NKEY>, <BROKER_CREDS> and <BROKER_KEY_FILE> name
files, given to them as --nkey, --creds and --key-file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..delivery import nats_auth as A
from ..delivery.nats_hop import parse_partitions, parse_url
from ..errors import Exit, FCError, UsageError
from ..records import is_url, shown
from ..records.pg_connect import password as pg_password

if TYPE_CHECKING:
    from .config_types import Config

PASSWORD_VAR = "PGPASSWORD"  # libpq's own: psycopg reads it when the URL has no password


def broker_url(given: dict[str, tuple[str, int]], error: Callable[[int, str], None]) -> str | None:
    """<BROKER>, checked as fc-publish checks it; its problems go to ``error``, never showing a password."""
    if "BROKER" not in given:
        return None
    text, line = given["BROKER"]
    if not text:
        error(line, "<BROKER> is empty; give the broker's address, e.g. nats://broker:4222/FC")
        return None
    try:
        parse_url(text)
    except UsageError as exc:
        error(line, f"<BROKER>: {exc}")
        return None
    return text


def record_target(given: dict[str, tuple[str, int]], base: Path, error: Callable[[int, str], None]) -> str | None:
    """<SYNCED_FILES_DB> when it is a postgresql:// URL (a file path is the caller's), else None."""
    if "SYNCED_FILES_DB" not in given:
        return None
    text, line = given["SYNCED_FILES_DB"]
    if not is_url(text):
        return None
    if shown(text).startswith("postgresql://("):  # two '@' (a password not percent-encoded), or unreadable
        error(line, f"<SYNCED_FILES_DB> {shown(text)}: percent-encode the password ('@' is %40) or use ~/.pgpass")
        return None
    return text


def split_password(target: Path | str) -> tuple[str, dict[str, str]]:
    """The record as the stages get it on their command line, and the environment that carries its password."""
    if not is_url(str(target)):
        return str(target), {}
    url = str(target)
    secret = pg_password(url)
    return shown(url), ({PASSWORD_VAR: secret} if secret else {})


def holds_secret(target: Path | str) -> bool:
    return bool(split_password(target)[1])


def split_broker(broker: str) -> tuple[str, dict[str, str]]:
    """<BROKER> as the stages get it on their command line (no user, password or token), and the environment
    that carries those (fc-publish and fc-consume read it when the URL has none)."""
    parts = urlsplit(broker)
    auth, at, host = parts.netloc.rpartition("@")
    if not at:
        return broker, {}
    clean = parts._replace(netloc=host).geturl()
    user, colon, password = auth.partition(":")
    if not colon:  # nats://TOKEN@host: NATS's token form
        return clean, {A.TOKEN_VAR: unquote(user)}
    return clean, {A.USER_VAR: unquote(user), A.PASSWORD_VAR: unquote(password)}


def stream_url(broker: str, source: str) -> str:
    """Each source's events go through a stream of their own, STREAM-SOURCE: a worker's stages check an event's
    source (--source), and a stream's partitions are per path of one tree."""
    head, _, stream = broker.rstrip("/").rpartition("/")
    if head.endswith(":/"):  # no /STREAM in the URL: fc-publish's default
        head, stream = broker.rstrip("/"), "FC"
    return f"{head}/{stream}-{source}"


def role_problem(config: Config, role: str | None, partitions: str | None) -> tuple[int, str] | None:
    """Why ``role`` cannot run from ``config``: (exit status, one line naming what is missing), or None."""
    if partitions is not None and role != "worker":
        return Exit.USAGE, "--partitions goes with --role worker"
    if role is None:
        return None
    broker = config.settings.broker
    if broker is None:
        return Exit.CONFIG, (
            f"{config.path}: --role {role} needs the broker's address: add <BROKER>nats://HOST:4222/FC</BROKER> "
            f"to <settings>"
        )
    for source in config.sources:
        stream = stream_url(broker, source.name).rpartition("/")[2]
        if len(stream) > 64:
            return (
                Exit.CONFIG,
                f"{config.path}: stream {stream} (<BROKER>'s, '-', source {source.name}) is over 64 characters",
            )
    if partitions is not None and partitions != "auto":  # auto: fc-consume takes its share by leases
        try:
            parse_partitions(partitions, config.settings.broker_partitions)
        except FCError as exc:
            return exc.exit, str(exc)
    return None
