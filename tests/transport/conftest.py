"""fc-transport's tests run the real commands (bin/fc-*) as subprocesses, against a local folder and the real
sshd of tests/servers/, so a kill -9 is a real kill and a pipeline is a real pipeline."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from fileconveyor.delivery.stage import Done, Item
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from tests.conftest import ROOT
from tests.servers.ftpd import ftp_server  # noqa: F401 - fixture
from tests.servers.sshd import SshServer, sshd_server  # noqa: F401 - fixture

BIN = ROOT / "bin"


def fc(cmd: str) -> list[str]:
    return [sys.executable, str(BIN / cmd)]


def sftp_spec(server: SshServer, files: Path, **settings: str) -> str:
    query = {
        "key_file": str(server.key_file),
        "known_hosts": str(server.known_hosts),
        "agent": "no",
        "timeout": "10",
        **settings,
    }
    return f"sftp://{server.user}@127.0.0.1:{server.port}{quote(str(files))}?{urlencode(query)}"


@pytest.fixture
def sftp_dir(sshd_server: SshServer) -> Path:  # noqa: F811
    d = sshd_server.files / ("tr-" + secrets.token_hex(4))
    return d


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of the commands: their state files in this test's directory."""
    return {**os.environ, "FC_STATE_DIR": str(tmp_path / "state"), "PYTHONDONTWRITEBYTECODE": "1"}


def transport(
    args: Sequence[str], env: dict[str, str], stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*fc("fc-transport"), *args], input=stdin, capture_output=True, env=env, timeout=timeout)


def lines(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def event(root: Path, rel: str, kind: str = "created", **extra: object) -> dict:
    path = root / rel
    ev: dict = {"v": 1, "kind": kind, "source": "site", "root": str(root), "path": str(path), "rel": rel}
    if kind != "deleted" and path.exists():
        ev["size"] = path.stat().st_size
    ev.update(extra)
    return ev


def jsonl(events: Sequence[dict]) -> bytes:
    return b"".join(json.dumps(ev).encode() + b"\n" for ev in events)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (temporary .fc-* files included, so a leftover shows), with its content."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def file_argv(spec: str, tmp_path: Path, evs: list[dict]) -> tuple[list[str], Path]:
    """fc-transport to ``spec`` reading ``evs`` from a file and writing to one, with its own state file: a
    command that can be killed and run again.  Returns the command and its output file."""
    (tmp_path / "in.jsonl").write_bytes(jsonl(evs))
    out = tmp_path / "out.jsonl"
    argv = [*fc("fc-transport"), "--to", spec, "--input", str(tmp_path / "in.jsonl"), "--output", str(out)]
    return [*argv, "--state", str(tmp_path / "t.db")], out


class FaultAfter(TransportStage):
    """fc-transport to ``spec`` whose bookkeeping raises once, just after record() did its part for the first
    item for which ``when`` holds: the round's commit is rolled back after that record() and redone item by item
    (tests of what record() does outside the state file: test_redone_commit.py)."""

    def __init__(self, spec: str, when: Callable[[TransportStage, Done], bool], **settings: Any) -> None:
        super().__init__(targets_from([("to", spec)]), **settings)
        self.when = when
        self.raised = False

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        due = not self.raised and self.when(self, outcome)
        super().record(db, item, outcome)
        if due:
            self.raised = True
            raise OverflowError("a bug in the stage's bookkeeping")
