"""OpenSSH's sshd from Debian on a free port, serving SFTP to the user running the tests, by key only.

Keys are generated per session: a host key (written to a known_hosts file the client is given), a user key
in the AuthorizedKeysFile, and a second user key the server does not know (for "wrong credentials").
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool

from .process import ServerProcess, free_port


@dataclass
class SshServer:
    process: ServerProcess
    user: str
    key_file: Path
    locked_key_file: Path  # a key the server knows, with PASSPHRASE
    wrong_key_file: Path
    known_hosts: Path
    files: Path  # a directory the user may write, for the tests' destinations

    @property
    def port(self) -> int:
        return self.process.port


PASSPHRASE = "k3y@pass:/phrase"
SSHD = "/usr/sbin/sshd"


def _keygen(path: Path, passphrase: str = "") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    # /usr/sbin is not on every user's PATH.
    sshd = SSHD if os.path.exists(SSHD) else require_tool("sshd", "the SFTP tests use OpenSSH (Debian: openssh-server)")
    require_tool("ssh-keygen", "to make the test keys (Debian: openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
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
    server = ServerProcess("sshd", [sshd, "-D", "-e", "-f", str(d / "sshd_config")], port, d / "sshd.log")
    server.start()
    files = d / "files"
    files.mkdir()
    try:
        keys = (d / "user_key", d / "locked_key", d / "wrong_key")
        yield SshServer(server, user, *keys, d / "known_hosts", files)
    finally:
        server.stop()
