"""OpenSSH's sshd from Debian on a free 127.0.0.1 port, serving SFTP to the user who starts it, by key only: the one
home of its start-up, for the test suite's fixture (sshd.py) and for tools/try-server (a user trying sftp://
destinations).  No pytest here: tools/try-server runs without the test dependencies.

Keys are generated per start: a host key (written to a known_hosts file the client is given), a user key in the
AuthorizedKeysFile, a second one with a passphrase, and a third the server does not know (for "wrong credentials").
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from .process import ServerProcess, free_port

PASSPHRASE = "k3y@pass:/phrase"
SSHD = "/usr/sbin/sshd"


class Missing(RuntimeError):
    """A tool the server needs is not installed; the message says which package has it."""


@dataclass
class SshServer:
    process: ServerProcess
    user: str
    key_file: Path
    locked_key_file: Path  # a key the server knows, with PASSPHRASE
    wrong_key_file: Path
    known_hosts: Path
    files: Path  # a directory the user may write, for the destinations

    @property
    def port(self) -> int:
        return self.process.port

    def sftp_url(self, folder: Path | None = None) -> str:
        """The ``--to`` of fc-transport for ``folder`` (default: ``files``) on this server, with its key and
        known_hosts (agent=no: the user's own ssh agent keys are not tried on it)."""
        settings = {"key_file": str(self.key_file), "known_hosts": str(self.known_hosts), "agent": "no"}
        query = urlencode(settings, safe="/")  # readable paths: a / needs no escape in a query
        return f"sftp://{self.user}@127.0.0.1:{self.port}{quote(str(folder or self.files))}?{query}"


def sshd_path() -> str:
    """sshd's path (/usr/sbin is not on every user's PATH), else Missing."""
    found = SSHD if os.path.exists(SSHD) else shutil.which("sshd")
    if found is None:
        raise Missing("sshd is not installed: the SFTP server is OpenSSH's (Debian: apt-get install openssh-server)")
    if shutil.which("ssh-keygen") is None:
        raise Missing("ssh-keygen is not installed: it makes the keys (Debian: apt-get install openssh-client)")
    return found


def _keygen(path: Path, passphrase: str = "") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)], check=True)


def start(d: Path, own_session: bool = False) -> SshServer:
    """sshd serving SFTP on a free port, its keys, config and log in ``d``, the files in ``d/files``.  Stop it with
    ``.process.stop()``; ``own_session``: see ServerProcess.  Missing if sshd or ssh-keygen is not installed;
    RuntimeError if it does not start."""
    sshd = sshd_path()
    for name in ("host_key", "user_key", "wrong_key"):
        _keygen(d / name)
    _keygen(d / "locked_key", PASSPHRASE)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text() + (d / "locked_key.pub").read_text())
    user = pwd.getpwuid(os.geteuid()).pw_name  # a non-root sshd can log in only its own user
    port = free_port()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text().strip()}\n")
    # StrictModes no: pytest's temporary directories are not the 0700 tree sshd wants for keys.
    (d / "sshd_config").write_text(
        f"""ListenAddress 127.0.0.1
Port {port}
HostKey {d / "host_key"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # the privilege separation directory sshd requires
    files = d / "files"
    files.mkdir()
    argv = [sshd, "-D", "-e", "-f", str(d / "sshd_config")]
    server = ServerProcess("sshd", argv, port, d / "sshd.log", None, own_session)
    server.start()
    keys = (d / "user_key", d / "locked_key", d / "wrong_key")
    return SshServer(server, user, *keys, d / "known_hosts", files)
