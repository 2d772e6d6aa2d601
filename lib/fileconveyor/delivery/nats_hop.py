"""The broker hop: File Conveyor events through a NATS JetStream stream, between hosts.

Everything fc-publish and fc-consume know about NATS is here (issue 18: another kind of hop is one module):

- the address: ``nats://[user:password@]host:port/STREAM`` (STREAM defaults to FC);
- the stream: subjects ``STREAM.p.<k>``, one per partition and only those (a message to any other is refused),
  kept on disk (file storage), work-queue retention (a message goes once its partition's consumer acknowledged
  it), duplicates dropped by ``Nats-Msg-Id`` within the duplicate window; the number of partitions is written in
  the stream's description, so both ends agree;
- partitions: a hash of an event's path (BLAKE2b, 64 bits) modulo the number of partitions, so all events of one
  path go through one partition, in order, to the one consumer that owns it (CRC-32 was tried first: it is
  linear, so numbered names can fall into partitions in a regular pattern: f00000.txt to f00399.txt went
  60/40/60/40..., one of 4 workers getting 30%; a cryptographic hash spreads any names like a random one);
- the message id: the event's ``id`` with the writer's epoch and seq (``hop``): fc-watch re-sends a line
  unchanged (same id, same seq), which the server then drops; a file deleted and restored with the same
  metadata has an id seen before, but not with the same seq, so it is not taken for a duplicate;
- the upstream order (``Fc-Epoch``, ``Fc-Seq`` headers): fc-consume's per-path fence compares them, since a
  line re-published after the duplicate window comes later in the stream than newer events of its path.

The client (nats-py) is asyncio; ``Broker`` runs one connection on an event loop in a thread of its own, so
the stages, which are threads, call it with ``call``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from .. import events as E
from ..errors import ConfigError, UsageError
from .nats_auth import HEADER_EPOCH, HEADER_ID, HEADER_SEQ, Credentials  # noqa: F401  (N.HEADER_*)

DEFAULT_STREAM = "FC"
DEFAULT_PARTITIONS = 8
MAX_PARTITIONS = 1024
# What a message may be, headers and payload, on a server that does not say (nats-server's max_payload by default)
DEFAULT_MAX_PAYLOAD = 1 << 20
# Room for what a message's headers take besides their keys and values ("NATS/1.0", ": " and CRLF on each line, the
# blank line) and for the signature fc-publish adds (nats_auth.HEADER_SIG: a key id and an HMAC in hex)
HEADER_ROOM = 256
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PARTITIONS = re.compile(r"partitions=(\d+)")

T = TypeVar("T")


class StreamMissing(Exception):
    """The stream is not there (yet): fc-consume waits for fc-publish to make it."""


@dataclass(frozen=True)
class Target:
    servers: str  # nats://host:port, with user:password@ when given
    stream: str
    shown: str  # the address without the password, for messages
    has_auth: bool = False  # the URL names a user, password or token (then the environment's are not read)


def parse_url(url: str) -> Target:
    """``nats://[user:password@]host[:port][/STREAM]``; a usage error otherwise, which never shows the password."""
    said = repr(hide_secrets(url))
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port or 4222
    except ValueError:
        raise UsageError(f"{said}: not a valid broker address (nats://HOST:PORT/STREAM)") from None
    if parts.scheme not in ("nats", "tls") or not hostname:
        raise UsageError(f"{said}: not a broker address (nats://HOST:PORT/STREAM)")
    stream = unquote(parts.path.strip("/")) or DEFAULT_STREAM
    if not _NAME.match(stream):
        raise UsageError(f"{said}: stream name {stream!r}: letters, digits, - and _ only")
    if parts.query or parts.fragment:
        raise UsageError(f"{said}: no ?query or #fragment in a broker address")
    host = f"[{hostname}]" if ":" in hostname else hostname
    auth = parts.netloc.rpartition("@")[0]
    servers = f"{parts.scheme}://{auth + '@' if auth else ''}{host}:{port}"
    shown = hide_secrets(f"{parts.scheme}://{auth + '@' if auth else ''}{host}:{port}/{stream}")
    return Target(servers, stream, shown, bool(auth))


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")  # any scheme: a mistyped one too


def hide_secrets(arg: str) -> str:
    """A broker URL (or a command-line argument ``--flag=URL``) as messages may show it: ``user:password@``
    keeps only the user, and a lone ``token@`` of a nats:// or tls:// URL (NATS token authentication) is not
    shown at all.  Any scheme: a mistyped one (``http://``) is said in an error message too."""

    def hide(m: re.Match[str]) -> str:
        user, colon, _ = m.group(2).partition(":")
        token = not colon and m.group(1).lower() in ("nats://", "tls://")
        return m.group(1) + ("***@" if token else user + "@")

    flag, eq, value = arg.partition("=")
    if eq and _USERINFO.match(value) and not _USERINFO.match(arg):
        return flag + "=" + _USERINFO.sub(hide, value)
    return _USERINFO.sub(hide, arg)


def parse_partitions(text: str, total: int | None = None) -> list[int]:
    """``0-3,6`` -> [0, 1, 2, 3, 6]; checked against ``total`` when known."""
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise UsageError(f"--partitions {text!r}: write numbers and ranges, e.g. 0-3,6") from None
        if a < 0 or b < a:
            raise UsageError(f"--partitions {text!r}: {part.strip()!r} is not a range")
        out.update(range(a, b + 1))
    if total is not None and max(out) >= total:
        raise ConfigError(f"--partitions {text}: the stream has {total} partitions (0 to {total - 1})")
    return sorted(out)


def partition_of(path: bytes, partitions: int) -> int:
    """Stable across processes and hosts (Python's hash() is not)."""
    return int.from_bytes(hashlib.blake2b(path, digest_size=8).digest(), "big") % partitions


def subject(stream: str, partition: int) -> str:
    return f"{stream}.p.{partition}"


def consumer_name(stream: str, partition: int) -> str:
    return f"fc-{stream}-p{partition}"


def message_id(ev: dict, line: bytes) -> str:
    """What makes a re-sent line a duplicate the server drops, and nothing else (see the module's text)."""
    hop = ev.get("hop") if isinstance(ev.get("hop"), dict) else None
    if hop is not None and isinstance(ev.get("id"), str):
        return f"{ev['id']}-{hop.get('epoch')}-{hop.get('seq')}"
    return hashlib.sha256(line).hexdigest()[:32]


def upstream_order(ev: dict) -> dict[str, str]:
    """The headers that carry the writer's order of a line (for fc-consume's per-path fence)."""
    hop = ev.get("hop")
    if isinstance(hop, dict) and isinstance(hop.get("epoch"), str) and type(hop.get("seq")) is int:
        return {HEADER_EPOCH: hop["epoch"], HEADER_SEQ: str(hop["seq"])}
    return {}


def message_size(data: bytes, headers: dict[str, str]) -> int:
    """What a message of ``data`` with ``headers`` counts against the server's max_payload (HEADER_ROOM spared)."""
    return len(data) + HEADER_ROOM + sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())


def payload(ev: dict) -> bytes:
    """The event as published: without the hop of the publisher's host (fc-consume writes its own)."""
    return E.encode({k: v for k, v in ev.items() if k != "hop"})


def _client() -> Any:
    try:
        import nats
    except ImportError:
        raise ConfigError("the NATS client is not installed: pip install 'fileconveyor[nats]' (nats-py)") from None
    return nats


def _quiet(text: str) -> None:
    pass


class Broker:
    """One connection to a NATS server, on an asyncio loop in a thread of its own."""

    def __init__(
        self,
        target: Target,
        timeout: float = 5.0,
        say: Callable[[str], None] = _quiet,
        inform: Callable[[str], None] = _quiet,
        credentials: Credentials | None = None,
    ):
        self.target = target
        self.credentials = credentials or Credentials()
        self.timeout = timeout
        self.say, self.inform = say, inform  # a warning, and what only -v shows
        self.nats = _client()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nats", daemon=True)
        self._thread.start()
        self.nc: Any = None
        self.js: Any = None
        self.partitions: int | None = None
        self._refused = False  # the server said "Authorization Violation" while connecting

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the broker's loop and wait for it (``timeout``: seconds, default the broker's)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(self.timeout * 2 if timeout is None else timeout)
        except concurrent.futures.TimeoutError:  # not the built-in TimeoutError before Python 3.11
            fut.cancel()
            raise

    def max_payload(self) -> int:
        """How large a message the server takes (its INFO's max_payload, once connected)."""
        try:
            return int(self.nc.max_payload) if self.nc is not None else DEFAULT_MAX_PAYLOAD
        except (AttributeError, TypeError, ValueError):
            return DEFAULT_MAX_PAYLOAD

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the broker's loop without waiting (acknowledgements: losing one costs a redelivery)."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def connect(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            return
        self._refused = False
        task = asyncio.ensure_future(
            self.nats.connect(
                self.target.servers,
                connect_timeout=2,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,  # a broker restarting is waited for, with the work kept
                allow_reconnect=True,
                error_cb=self._error,
                disconnected_cb=_ignore_cb,
                reconnected_cb=_ignore_cb,
                closed_cb=_ignore_cb,
                **self.credentials.options,
            )
        )
        try:
            while not task.done():
                await asyncio.wait([task], timeout=0.1)
                if self._refused and not task.done():
                    # nats-py tries a refused login again for ever, as it does a server that is down: it never
                    # gets better, so it is said (exit 3) instead of waited for in silence
                    how = self.credentials.how if self.credentials.how != "none" else "no credentials given"
                    raise ConfigError(
                        f"{self.target.shown}: the server refused the login ({how}): check the user and password "
                        "(NATS_USER, NATS_PASSWORD), the token (NATS_TOKEN) or the key file (--nkey, --creds)"
                    )
        finally:  # refused, or our caller gave up waiting (cancelled): the attempt ends with us
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.nc = task.result()
        self.js = self.nc.jetstream(timeout=self.timeout)

    async def _error(self, exc: Exception) -> None:
        """nats-py logs connection trouble itself; the stages report what it costs them (a retry).  A login the
        server refuses is remembered: connect() says it."""
        if "authorization violation" in str(exc).lower() or type(exc).__name__ == "AuthorizationError":
            self._refused = True

    async def ensure_stream(self, partitions: int | None, duplicate_window: float = 120.0, create: bool = True) -> int:
        """The stream's number of partitions; a missing stream is made (``create``: with ``partitions``, or the
        default) or is an error the caller waits out (StreamMissing).  A stream made with another number is a
        configuration error: events of one path would go through two partitions."""
        await self.connect()
        from nats.js import api
        from nats.js.errors import NotFoundError

        try:
            info = await self.js.stream_info(self.target.stream)
        except NotFoundError:
            others = await self._others()
            if not create:
                raise StreamMissing(
                    f"{self.target.shown}: the stream does not exist yet (fc-publish makes it){others}"
                ) from None
            n = partitions or DEFAULT_PARTITIONS
            config = api.StreamConfig(
                name=self.target.stream,
                # each partition's subject, not STREAM.p.*: a message published to STREAM.p.99 or STREAM.p.x
                # (by anything but fc-publish) is refused, instead of kept for ever where no consumer reads
                subjects=[subject(self.target.stream, k) for k in range(n)],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.WORK_QUEUE,
                duplicate_window=duplicate_window,
                description=f"File Conveyor events, partitions={n}",
            )
            info = await self.js.add_stream(config)
            # a typo in the stream's name makes a stream no worker reads: said where the user looks
            (self.say if others else self.inform)(f"{self.target.shown}: made the stream ({n} partitions){others}")
        found = _PARTITIONS.search(info.config.description or "")
        if found is None:
            raise ConfigError(
                f"{self.target.shown}: the stream was not made by File Conveyor (no partitions=N in its description)"
            )
        n = int(found.group(1))
        if partitions is not None and partitions != n:
            raise ConfigError(f"{self.target.shown}: the stream has {n} partitions, not {partitions} (--partitions)")
        self.partitions = n
        return n

    async def _others(self) -> str:
        """ "; other File Conveyor streams on this server: A, B" (for a name that may be a typo), or ""."""
        try:
            names = sorted(
                i.config.name
                for i in await self.js.streams_info()
                if _PARTITIONS.search(i.config.description or "") and i.config.name != self.target.stream
            )
        except Exception:  # not allowed to list them (accounts), or not now: only a hint is lost
            return ""
        return f"; other File Conveyor streams on this server: {', '.join(names)}" if names else ""

    def close(self) -> None:
        async def _close() -> None:
            if self.nc is not None and not self.nc.is_closed:
                await self.nc.close()

        try:
            self.call(_close(), timeout=5)
        except Exception:  # closing a connection that is down: nothing is pending that matters
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(2)


async def _ignore_cb() -> None:
    pass
