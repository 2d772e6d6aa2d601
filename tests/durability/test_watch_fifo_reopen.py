"""fc-watch writing into a named FIFO whose reader dies in the middle of a block: the next reader must get whole
lines, not what the dead one left unread in the pipe (half a line) glued to the block fc-watch writes again.

A FIFO's pipe, with the bytes in it, lives as long as one end is open: fc-watch kept its old write end open while
it waited for the next reader, so that reader opened the same pipe and read the leftovers first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import RELAY, ROOT

WATCH = [sys.executable, str(ROOT / "bin" / "fc-watch")]
FILTER = [sys.executable, str(RELAY)]
N = 600  # about 200 KB of lines: more than a pipe holds, so fc-watch is in the middle of its block


def test_next_reader_of_a_fifo_gets_whole_lines_not_the_last_ones_leftovers(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for i in range(N):
        (site / f"file-with-a-longish-name-{i:04d}.css").write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.ndjson"
    watch = subprocess.Popen(
        [*WATCH, "--state", str(tmp_path / "w.db"), "--output", str(fifo), str(site)],
        stderr=(tmp_path / "w.err").open("wb"),
    )
    procs = [watch]
    try:
        # a reader that reads part of a line and dies
        fd = os.open(fifo, os.O_RDONLY)
        got = os.read(fd, 1000)
        while got.endswith(b"\n"):
            got += os.read(fd, 1)
        time.sleep(0.3)
        os.close(fd)
        err = tmp_path / "f.err"
        procs.append(
            subprocess.Popen(
                [*FILTER, "--input", str(fifo), "--output", str(out), "--state", str(tmp_path / "f.db")],
                stderr=err.open("wb"),
            )
        )
        deadline = time.monotonic() + 30
        rels: set[str] = set()
        while time.monotonic() < deadline and len(rels) < N:
            time.sleep(0.2)
            data = out.read_bytes() if out.exists() else b""
            rels = {json.loads(x)["rel"] for x in data.splitlines(keepends=True) if x.endswith(b"\n")}
        assert len(rels) == N
        assert b"input line" not in err.read_bytes(), err.read_text()
    finally:
        for p in procs:
            p.kill()
            p.wait()
