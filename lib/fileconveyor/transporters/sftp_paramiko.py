"""The sftp transporter's paramiko engine: SSH in Python, for logins OpenSSH's ssh can't do without a prompt.

Used for passwords, key passphrases, encrypted key files and trust_unknown_host=yes (and engine=paramiko).  Only
this module imports paramiko, and only when such a destination connects: the import costs a quarter of a second.
The SFTP requests themselves go through sftp_client over the SSH channel, as they do over ssh's pipes.
"""

from __future__ import annotations

import getpass
import os

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from ..errors import FCError
from ..report import get_logger
from .base import AuthError, PermanentError, TransientError
from .destination import Destination

log = get_logger(__name__)
# What an SFTP write request adds around its data, with room for a long handle: the request and its data go in
# one SSH packet (a 32 KB write did not fit, and paramiko then sent each as a big packet and a tiny one).
WRITE_ROOM = 128


class _Refuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise AuthError(
            f"host key of {hostname} ({key.get_name()} {key.fingerprint}) is not in {self.known_hosts}: "
            f"add it (ssh-keyscan) after checking it, or set trust_unknown_host=yes"
        )


class _Trust(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("trusting unknown host key of %s: %s %s", hostname, key.get_name(), key.fingerprint)


_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class _Transport(paramiko.Transport):
    # AES-GCM first: it needs no separate HMAC pass, which in paramiko costs Python time per packet (7% more
    # throughput on bulk uploads here).  Servers without it negotiate the next cipher in paramiko's usual order.
    _preferred_ciphers = (*_GCM, *(c for c in paramiko.Transport._preferred_ciphers if c not in _GCM))


def connect(
    dest: Destination, timeout: float, known_hosts: str, key_file: str | None
) -> tuple[paramiko.SSHClient, paramiko.Channel, int]:
    """A logged-in SSH client, a channel running the server's SFTP subsystem, and the largest write to send."""
    if key_file:
        _check_key(dest, key_file)
    client = paramiko.SSHClient()
    try:
        if os.path.exists(known_hosts):
            client.load_host_keys(known_hosts)
        trust = dest.flag("trust_unknown_host")
        client.set_missing_host_key_policy(_Trust() if trust else _Refuse(known_hosts))
        client.connect(
            dest.host,
            dest.port or 22,
            username=dest.user or getpass.getuser(),
            password=dest.secret("password"),
            key_filename=key_file,
            passphrase=dest.secret("passphrase"),
            allow_agent=dest.flag("agent", True),
            look_for_keys=key_file is None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            transport_factory=_Transport,
        )
        transport = client.get_transport()
        assert transport is not None  # connect() succeeded
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)  # before the subsystem's first answer: one that never answers can't hang us
        try:
            channel.invoke_subsystem("sftp")
        except paramiko.SSHException:
            if transport.is_active():  # logged in, still connected: the server refused SFTP itself
                raise PermanentError(f"{dest.host}:{dest.port or 22} offers no SFTP subsystem") from None
            raise
    except BaseException:
        client.close()
        raise
    return client, channel, max(1024, channel.out_max_packet_size - WRITE_ROOM)


def _check_key(dest: Destination, key_file: str) -> None:
    """Read the key file first: a missing or wrong passphrase is then one clear refusal, where paramiko's login
    says "Invalid key", which reads as a passing SSH failure (retried for minutes)."""
    passphrase = dest.secret("passphrase")
    try:
        paramiko.PKey.from_path(key_file, passphrase.encode() if passphrase else None)
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        # PasswordRequiredException, or for new-format keys cryptography's "Key is password-protected".
        if not passphrase and (isinstance(exc, paramiko.PasswordRequiredException) or "password" in str(exc)):
            raise AuthError(
                f"the key file {key_file} needs a passphrase: put it in {dest.secret_source('passphrase')}"
            ) from None
        if passphrase:
            raise AuthError(
                f"cannot open the key file {key_file} with the passphrase from "
                f"{dest.secret_source('passphrase')} (a wrong passphrase?): {exc}"
            ) from None
        raise AuthError(f"cannot read the key file {key_file}: {exc}") from None


def alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def classify(exc: BaseException) -> FCError | BaseException:
    """What paramiko's own exceptions mean; any other exception is returned for the generic rules (when every
    address refused, the first address's error: one message, not paramiko's list)."""
    if isinstance(exc, paramiko.BadHostKeyException):
        return AuthError(f"host key mismatch: {exc} (possible man-in-the-middle; check, then fix known_hosts)")
    if isinstance(exc, paramiko.PasswordRequiredException):
        return AuthError(f"the key file needs a passphrase: {exc}")
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthError(f"authentication refused: {exc}")
    if isinstance(exc, NoValidConnectionsError):
        return next(iter(exc.errors.values()))
    if isinstance(exc, paramiko.SSHException):
        return TransientError(f"SSH: {exc}")  # banner timeouts, dropped connections, failed negotiation
    return exc
