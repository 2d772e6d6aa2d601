"""A writer killed mid-line leaves the torn start of a line in its FIFO; when the next writer opens the FIFO
before the reader has drained it, the reader never sees an end of input, and the next writer's first line is
glued to the torn part.  The reader takes the whole line at the end and reports the torn start (events.unglue).

Seen in `make chaos`'s fc-conveyor topology (2026-12-07, main at ad49713): fc-tee killed while writing, restarted
at once; fc-filter reported `not valid JSON: ... '{"v":1,"id":"961d5fcb1850b2{"v":1,"id":"552e...'`, and the css
rule kept a file whose deletion was lost (1 of 100 rounds; the rule 'all' converged).  File Conveyor's own
writers no longer tear a line of up to PIPE_BUF bytes (writer.py: whole lines in atomic writes;
tests/unit/test_writer_atomic.py); a torn line from another writer (a third-party stage, or a line longer than
PIPE_BUF) cost the line glued to it until the readers took it: both reading paths, the durable runner's
(fc-relay: delivery/intake.py) and a pass-through's (fc-filter: stages/filter/run.py), as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT


def rels(out: Path) -> set[str]:
    if not out.exists():
        return set()
    return {json.loads(line).get("rel") for line in out.read_bytes().splitlines() if line.endswith(b"}")}


def reader_err(reader: subprocess.Popen[bytes]) -> str:
    reader.kill()
    return reader.communicate()[1].decode(errors="replace")[-2000:]


TORN = b'{"v":1,"kind":"created","source":"s","root":"/r","path":"/r/a.c'


@pytest.mark.parametrize("reader", ["fc-relay", "fc-filter"])
def test_a_line_after_a_torn_one_from_a_killed_writer_is_not_lost(tmp_path: Path, reader: str) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo, 0o600)
    out = tmp_path / "out.jsonl"
    io = ["--input", str(fifo), "--output", str(out)]
    if reader == "fc-relay":  # the durable runner (delivery/intake.py)
        argv = [str(RELAY), "--min-size", "0", *io, "--state", str(tmp_path / "relay.db")]
    else:  # a pass-through (stages/filter/run.py): what it passes on is the whole line, without the torn start
        argv = [str(ROOT / "bin" / "fc-filter"), "--extensions", "css:c", *io]
    proc = subprocess.Popen([sys.executable, *argv], stderr=subprocess.PIPE)
    try:
        dying = os.open(fifo, os.O_WRONLY)  # waits for the reader's open
        nxt = os.open(fifo, os.O_WRONLY)  # the next writer, already there when the first dies
        event = {"v": 1, "kind": "created", "source": "s", "root": "/r", "path": "/r/b.css", "rel": "b.css"}
        os.write(dying, TORN)  # killed mid-line
        os.close(dying)
        os.write(nxt, json.dumps(event).encode() + b"\n")
        os.close(nxt)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "b.css" not in rels(out):
            time.sleep(0.1)
        assert "b.css" in rels(out), reader_err(proc)
        if reader == "fc-filter":
            assert out.read_bytes() == json.dumps(event).encode() + b"\n"
        err = reader_err(proc)
        # the torn start is the bad line, by its number, shown as it came
        assert "input line 1: the torn start of a line" in err and "/r/a.c'" in err and "b.css" not in err, err
    finally:
        proc.kill()
        proc.wait()
