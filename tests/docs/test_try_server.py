"""make try-sftp / make try-ftp (tools/try-server): the printed commands send the demo site to the server it
started, and Ctrl-C stops the server and removes its folder (README "Trying FTP and SFTP servers")."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

from .conftest import TryServer, start_try_server

SITE = ROOT / "examples" / "site"


def _site_files() -> set[str]:
    return {p.relative_to(SITE).as_posix() for p in SITE.rglob("*") if p.is_file()}


def _sent(files: Path) -> set[str]:
    return {p.relative_to(files).as_posix() for p in files.rglob("*") if p.is_file()}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def _processes_in(folder: Path) -> list[int]:
    """The processes whose command line names ``folder``: the server (sshd -f FOLDER/sshd_config, ftp_main.py PORT
    FOLDER/files), not a port another test's server may have taken since."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _run_printed(t: TryServer, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Its commands, pasted into a shell: bash with only the user's usual environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FC_")}
    script = "set -e -o pipefail\n" + "\n".join(t.commands) + "\n"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("kind", ["sftp", "ftp"])
def test_printed_commands_send_the_demo_site_and_ctrl_c_cleans_up(kind: str, tmp_path: Path) -> None:
    t = start_try_server(kind)
    try:
        folder = t.files.parent
        port = int(t.line(f"{kind.upper()} server").split("127.0.0.1:", 1)[1].split(":", 1)[0])
        assert _listening(port) and _processes_in(folder)
        # what a user pastes: the URL is the one printed, with its key (sftp) or its password (ftp)
        (to,) = [c for c in t.commands if c.startswith("fc-watch ")]
        assert f"--to '{kind}://" in to and f"127.0.0.1:{port}/" in to
        out = _run_printed(t, tmp_path)
        assert out.returncode == 0, out.stderr
        assert _sent(t.files) == _site_files()
        for rel in _site_files():
            assert (t.files / rel).read_bytes() == (SITE / rel).read_bytes(), rel
        # its state files stay in its own folder: nothing in the user's state directory
        assert any((folder / "state").iterdir())
    finally:
        status, rest = t.ctrl_c()
    assert status == 0, rest
    assert f"stopped; removed {folder}" in rest and "Traceback" not in rest
    assert not folder.exists()
    assert not _processes_in(folder)


def test_keep_keeps_the_folder(tmp_path: Path) -> None:
    t = start_try_server("ftp", "--keep")
    folder = t.files.parent
    status, rest = t.ctrl_c()
    try:
        assert status == 0 and f"stopped; kept {folder}" in rest
        assert (folder / "files").is_dir()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
