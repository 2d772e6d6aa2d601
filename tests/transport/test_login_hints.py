"""A login refused at start says what was missing, when what was missing is the password: a new user's first FTP
run, with the user in the URL and no FC_PASSWORD, only read "530 Authentication failed".  Real fc-transport, real
FTP server (tests/servers/ftp_main.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.servers.ftpd import PASSWORD, USER, FtpServer

from .conftest import transport


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("FC_") and k.endswith("PASSWORD"))}
    return {**env, "FC_STATE_DIR": str(tmp_path / "state"), **extra}


def test_an_ftp_login_refused_without_a_password_names_where_the_password_goes(
    tmp_path: Path, ftp_server: FtpServer
) -> None:
    spec = f"ftp://{USER}@127.0.0.1:{ftp_server.port}/hints"
    p = transport(["--to", spec], _env(tmp_path))
    err = p.stderr.decode()
    assert p.returncode == 3, err
    assert "login refused: 530" in err and "no password given: set FC_127_0_0_1_PASSWORD or FC_PASSWORD" in err, err
    # A wrong password is refused as before, without the hint; the right one gets in.
    p = transport(["--to", spec], _env(tmp_path, FC_PASSWORD="wrong"))
    err = p.stderr.decode()
    assert p.returncode == 3 and "login refused: 530" in err and "no password given" not in err, err
    p = transport(["--to", spec], _env(tmp_path, FC_PASSWORD=PASSWORD))
    assert p.returncode == 0, p.stderr.decode()
