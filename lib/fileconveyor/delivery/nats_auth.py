"""Who may talk to the broker, and which messages a worker believes (docs/scale-out.md, "Trust of the broker hop").

Two things live here, both for fc-publish and fc-consume:

- **Credentials** other than in the URL, where ``ps`` and every message would show them: ``NATS_USER`` and
  ``NATS_PASSWORD``, or ``NATS_TOKEN``, from the environment (fc-conveyor hands them over so, as it does libpq's
  ``PGPASSWORD``), and an nkey seed file (``--nkey`` / ``NATS_NKEY``) or a credentials file with a JWT
  (``--creds`` / ``NATS_CREDS``), which nats-py reads itself.  A user or password in the URL still works; the
  environment is only read when the URL has none.
- **Signed messages.**  The server's permissions say who may publish to the stream, but not that a message came
  from fc-publish: another client with publish rights, a broker account taken over, an operator's mistake.  With a
  shared key (``--key-file`` or ``FC_BROKER_KEYS``), fc-publish puts an HMAC-SHA256 into header ``Fc-Sig`` over
  the subject, ``Nats-Msg-Id``, ``Fc-Epoch``, ``Fc-Seq`` and the payload, and fc-consume applies only messages
  whose signature one of its keys verifies.  That is what lets the per-path fence trust ``Fc-Epoch``/``Fc-Seq``:
  a forged huge seq would otherwise make the worker drop the path's real events.

Keys: several may be given (one per line of the file, or separated by spaces or commas in the variable).
fc-publish signs with the first; fc-consume accepts any of them, which is how a key is changed without losing a
message still in the stream (docs/scale-out.md: rotation).  The header names the key by an id (a hash of it),
so a message signed with a key a worker lacks is told apart from a forged one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import private
from ..errors import ConfigError

HEADER_ID = "Nats-Msg-Id"
HEADER_EPOCH = "Fc-Epoch"
HEADER_SEQ = "Fc-Seq"
HEADER_SIG = "Fc-Sig"
KEYS_VAR = "FC_BROKER_KEYS"
USER_VAR, PASSWORD_VAR, TOKEN_VAR = "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN"
NKEY_VAR, CREDS_VAR = "NATS_NKEY", "NATS_CREDS"
MIN_KEY_BYTES = 16  # a key is a random secret (head -c 32 /dev/urandom | base64), not a password to remember
_VERSION = b"fc-sig-1"


# -- credentials ------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What nats-py's connect() gets besides the URL; ``repr`` shows no secret."""

    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    how: str = "none"  # for messages: "user fc (NATS_PASSWORD)", "nkey file /etc/...", ...


def credentials(
    url_has_auth: bool, creds: str | None = None, nkey: str | None = None, env: Mapping[str, str] | None = None
) -> Credentials:
    """The credentials to connect with, from the flags and the environment (``env``, default os.environ).  Files
    are checked here (readable, owner-only), so a mistake is said at start (exit 3), not as a refused login."""
    env = os.environ if env is None else env
    creds = creds or env.get(CREDS_VAR) or None
    nkey = nkey or env.get(NKEY_VAR) or None
    if creds and nkey:
        raise ConfigError(f"--creds and --nkey ({CREDS_VAR}, {NKEY_VAR}): give one of them")
    if creds or nkey:
        path = creds or nkey
        assert path is not None
        _secret_file(path, "--creds" if creds else "--nkey")
        try:
            import nkeys  # noqa: F401  (nats-py signs the server's challenge with it)
        except ImportError:
            raise ConfigError("--creds/--nkey need the nkeys package: pip install 'fileconveyor[nats]'") from None
        if creds:
            return Credentials({"user_credentials": path}, f"credentials file {path}")
        return Credentials({"nkeys_seed": path}, f"nkey seed file {path}")
    if url_has_auth:
        return Credentials({}, "the URL's")
    user, password, token = env.get(USER_VAR), env.get(PASSWORD_VAR), env.get(TOKEN_VAR)
    if token and (user or password):
        raise ConfigError(f"{TOKEN_VAR} and {USER_VAR}/{PASSWORD_VAR} are both set: give one of them")
    if token:
        return Credentials({"token": token}, TOKEN_VAR)
    if password and not user:
        raise ConfigError(f"{PASSWORD_VAR} is set without {USER_VAR}")
    if user:
        return Credentials({"user": user, "password": password or ""}, f"user {user} ({PASSWORD_VAR})")
    return Credentials()


def _secret_file(path: str, flag: str) -> None:
    try:
        st = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    problem = private.secret_problem(path, st)
    if problem:
        raise ConfigError(f"{flag}: {problem}")


MAX_KEY_FILE = 64 * 1024  # bytes: a few keys and comments; more is some other file named by mistake


def _read_key_file(path: str) -> bytes:
    """The text of a key file, checked on the file read (opened once: a FIFO fed by ``cat keys > fifo``, or
    ``<(...)``, is read, where a first open to check it took the writer's only chance; a path swapped between a
    check and the read is not read): a regular file or a pipe, owner-only, at most MAX_KEY_FILE bytes (a device
    such as /dev/zero is never read without end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"--key-file {path}: {exc.strerror or exc}") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise ConfigError(f"--key-file {path}: not a regular file or a pipe")
        problem = private.secret_problem(path, st)
        if problem:
            raise ConfigError(f"--key-file: {problem}")
        try:
            text = f.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise ConfigError(f"--key-file {path}: {exc.strerror or exc}") from None
    if len(text) > MAX_KEY_FILE:
        raise ConfigError(f"--key-file {path}: more than {MAX_KEY_FILE // 1024} KiB: not a file of keys")
    return text


# -- signed messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The shared keys, the first one signing; ``repr`` shows only their ids."""

    secrets: tuple[bytes, ...] = field(repr=False)

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    @functools.cached_property
    def _by_id(self) -> dict[str, bytes]:
        return {key_id(k): k for k in self.secrets}

    def sign(self, subject: str, headers: Mapping[str, str], data: bytes) -> str:
        kid = next(iter(self._by_id))  # the first key's
        return f"{kid}:{_mac(self._by_id[kid], subject, headers, data)}"

    def check(self, subject: str, headers: Mapping[str, str] | None, data: bytes) -> str | None:
        """None when one of our keys signed exactly this message; else why not, for the report."""
        given = (headers or {}).get(HEADER_SIG)
        if not given:
            return f"not signed (no {HEADER_SIG} header)"
        kid, _, mac = given.partition(":")
        key = self._by_id.get(kid)
        if key is None:
            return f"signed with a key this worker does not have (key {kid[:16]!r}; ours: {', '.join(self.ids)})"
        # compare_digest raises TypeError on str with non-ASCII characters (anyone with publish rights may send
        # them): such a header is simply wrong, never a crash of the partition's puller
        if mac.isascii() and hmac.compare_digest(mac, _mac(key, subject, headers or {}, data)):
            return None
        return f"a wrong signature (key {kid})"


def key_id(key: bytes) -> str:
    """Names a key in the header and in messages without giving it away (a key is random: no guessing back)."""
    return hashlib.sha256(b"fc-key-id\0" + key).hexdigest()[:12]


def _mac(key: bytes, subject: str, headers: Mapping[str, str], data: bytes) -> str:
    h = hmac.new(key, _VERSION, hashlib.sha256)
    for part in (subject, headers.get(HEADER_ID, ""), headers.get(HEADER_EPOCH, ""), headers.get(HEADER_SEQ, "")):
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big") + raw)  # lengths first: no two messages give the same bytes
    h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def load_keys(path: str | None, env: Mapping[str, str] | None = None) -> Keys | None:
    """The keys from ``--key-file`` (one per line; blank lines and ``#`` comments skipped), else from
    ``FC_BROKER_KEYS``; None when neither is given (messages are neither signed nor checked)."""
    env = os.environ if env is None else env
    if path:
        text = _read_key_file(path)
        where = f"--key-file {path}"
        found = [line.strip() for line in text.splitlines()]
        secrets = [k for k in found if k and not k.startswith(b"#")]
    elif env.get(KEYS_VAR):
        where = KEYS_VAR
        secrets = [k.encode() for k in re.split(r"[\s,]+", env[KEYS_VAR]) if k]
    else:
        return None
    if not secrets:
        raise ConfigError(f"{where}: no key in it")
    for i, key in enumerate(secrets, 1):
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"{where}: key {i} is {len(key)} bytes, fewer than {MIN_KEY_BYTES}: make one with "
                "head -c 32 /dev/urandom | base64"
            )
    return Keys(tuple(secrets))
