"""Helpers for fc-process tests: events for real files, runs of the command, output checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fileconveyor import events as E
from fileconveyor.cli.process import main
from tests.conftest import ROOT, Result, call

FIXTURES = Path(__file__).parent / "fixtures"
SRC = FIXTURES / "src"
BIN = ROOT / "bin"


def event(path: Path | bytes, kind: str = "created", root: Path | bytes | None = None, **extra: Any) -> dict:
    """A File Conveyor event for a real file (as fc-watch writes it)."""
    raw = os.fsencode(path)
    base = os.fsencode(root) if root is not None else os.path.dirname(raw)
    ev: dict = {"v": 1, "kind": kind, "source": "t"}
    E.put_path(ev, "root", base)
    E.put_path(ev, "path", raw)
    E.put_path(ev, "rel", os.path.relpath(raw, base))
    if kind != "deleted":
        st = os.stat(raw)
        ev.update(size=st.st_size, mtime_ns=str(st.st_mtime_ns))
    ev.update(extra)
    return ev


def lines(events: Sequence[dict]) -> bytes:
    return b"".join(E.encode(e) for e in events)


def outputs(result: Result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def by_path(evs: Sequence[dict]) -> dict[bytes, list[dict]]:
    out: dict[bytes, list[dict]] = {}
    for ev in evs:
        out.setdefault(E.get_path(ev, "path"), []).append(ev)
    return out


def run(tmp: Path, argv: Sequence[str], events: Sequence[dict] | bytes, *, jobs: int = 4) -> Result:
    """fc-process in-process, with its state and work directory inside ``tmp``."""
    stdin = events if isinstance(events, bytes) else lines(events)
    args = [*argv, "--state", str(tmp / "process.db"), "--work-dir", str(tmp / "work"), "--jobs", str(jobs)]
    return call(main, args, stdin)


def work_root(tmp: Path) -> Path:
    return tmp / "work" / "process.db.work"


def file_of(ev: dict) -> bytes:
    """The file a transporter would send: ``file``, else ``path``."""
    return E.get_path(ev, "file") if ("file" in ev or "file_b64" in ev) else E.get_path(ev, "path")


def content(path: bytes | str | Path) -> bytes:
    return Path(os.fsdecode(path)).read_bytes()


def subprocess_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FC_STATE_DIR"] = str(state_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launcher(cmd: str) -> list[str]:
    return [sys.executable, str(BIN / cmd)]


def run_shell_pipeline(
    script: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False
    )
