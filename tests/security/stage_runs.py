"""The event-reading stages run for real (bin/fc-*, subprocesses) on lines a test makes, for the bad-line tests
and the fuzz test: each with what it needs (source files, a destination folder, a database), a good line of its
input, and a way to see that a good line got through."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import RELAY, ROOT

BIN = ROOT / "bin"
# runs a command and prints its peak memory (KiB) on the last line of stderr
_MAXRSS = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(f'maxrss={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(r.returncode)"
)


@dataclass
class Stage:
    name: str  # the command
    stateful: bool = True

    def argv(self, d: Path, *extra: str) -> list[str]:
        args = {
            # into a file: fc-filter passes lines through there (into a pipe read by a test it would be the durable
            # stage it was, which fc-relay is: stages/filter/run.py, passes_through)
            "fc-filter": ["--extensions", "txt", "--output", str(self.output(d))],
            "fc-relay": ["--extensions", "txt"],
            "fc-process": ["--work-dir", str(d / "work"), "--processor", "filename.SpacesToUnderscores"],
            "fc-transport": ["--to", f"file://{d / 'dst'}"],
            "fc-record": ["--db", str(d / "synced.db")],
            "fc-tee": ["--output", "-", "--first-wait", "0"],
        }[self.name]
        state = ["--state", str(self.state(d)), "--drain-timeout", "5"] if self.stateful else []
        command = RELAY if self.name == "fc-relay" else BIN / self.name
        return [sys.executable, str(command), *args, *state, *extra]

    def state(self, d: Path) -> Path:
        return d / f"{self.name}.db"

    def good(self, d: Path, i: int) -> bytes:
        """Good input line number ``i`` (its file is made too)."""
        src = d / "src"
        src.mkdir(exist_ok=True)
        rel = f"good {i}.txt"
        (src / rel).write_text(f"content {i}\n")
        ev: dict = {"v": 1, "id": f"{i:032x}", "kind": "created", "source": "src", "root": str(src)}
        ev.update(path=str(src / rel), rel=rel, size=len(f"content {i}\n"), mtime_ns=str(1_700_000_000 * 10**9 + i))
        if self.name == "fc-record":
            ev.update(server="file", url=f"http://cdn/{rel}", transported="uploaded", remote=rel)
        return (json.dumps(ev) + "\n").encode()

    def output(self, d: Path) -> Path:
        return d / f"{self.name}.out"

    def run(self, d: Path, data: bytes, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
        self.output(d).unlink(missing_ok=True)
        p = subprocess.run(self.argv(d, *extra), input=data, capture_output=True, timeout=timeout, env=env(d))
        return self._output_of(d, p)

    def _output_of(self, d: Path, p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        """fc-filter's lines are in its --output file: they are its stdout for the tests."""
        if self.name == "fc-filter":
            assert p.stdout == b"", p.stdout[:500]
            p.stdout = self.output(d).read_bytes() if self.output(d).exists() else b""
        return p

    def run_measured(self, d: Path, data: bytes, *extra: str) -> tuple[subprocess.CompletedProcess, int]:
        """Run, and the command's peak resident memory in KiB."""
        self.output(d).unlink(missing_ok=True)
        p = subprocess.run(
            [sys.executable, "-c", _MAXRSS, *self.argv(d, *extra)],
            input=data,
            capture_output=True,
            timeout=120,
            env=env(d),
        )
        last = p.stderr.decode(errors="replace").rstrip("\n").rsplit("\n", 1)[-1]
        assert last.startswith("maxrss="), p.stderr[-2000:]
        return self._output_of(d, p), int(last.removeprefix("maxrss="))

    def good_seen(self, d: Path, out: bytes) -> set[str]:
        """The rels of the good lines that got through: in its output (and, for fc-record, its database)."""
        rels = set()
        for line in out.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and isinstance(ev.get("rel"), str) and ev["rel"].startswith("good "):
                if self.name == "fc-transport" and not (d / "dst" / ev["rel"]).is_file():
                    continue
                rels.add(ev["rel"])
        if self.name == "fc-record":
            with sqlite3.connect(d / "synced.db") as db:
                recorded = {row[0] for row in db.execute("SELECT rel FROM synced_files")}
            rels &= {r if isinstance(r, str) else r.decode() for r in recorded}
        return rels


# fc-filter passes lines through (no state file) but judges every line; fc-relay is its conditions in the durable
# runner (tests/relay.py)
STAGES = [
    Stage("fc-filter", False),
    Stage("fc-relay"),
    Stage("fc-process"),
    Stage("fc-transport"),
    Stage("fc-record"),
    Stage("fc-tee", False),
]
RUNNER_STAGES = [s for s in STAGES if s.stateful]
JUDGES = [s for s in STAGES if s.name != "fc-tee"]  # the stages that decode every line


def env(d: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["FC_STATE_DIR"] = str(d / "state")
    e["PYTHONPATH"] = str(ROOT / "lib")
    return e


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
