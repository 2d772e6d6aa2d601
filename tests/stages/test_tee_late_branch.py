"""A branch reader that starts after fc-tee stopped waiting for it (--first-wait), when no line comes any more,
still gets every line: fc-tee sends it the last line it passed on, the reader registers on it with that line's
writer, and the writer re-sends what it missed (kept for it although the other branch acknowledged it all:
durable.RETAIN_ACKED).  Before, the branch got nothing until the next change, and, behind a stage, nothing ever
of what the stage had made before (300 of 300 lost)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT

BIN = ROOT / "bin"


def fc(cmd: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    command = RELAY if cmd == "fc-relay" else BIN / cmd  # fc-relay: a durable stage (tests/relay.py)
    return subprocess.Popen([sys.executable, str(command), *args], **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize("writer", ["watch", "stage", "filter"])
def test_a_branch_reader_later_than_first_wait_gets_every_line(tmp_path: Path, writer: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    n = 300
    for i in range(n):
        (site / f"f{i:04d}.txt").write_text(str(i))
    fifo = {k: tmp_path / f"{k}.fifo" for k in ("w", "x", "a", "b")}
    for f in fifo.values():
        os.mkfifo(f, 0o600)
    st = tmp_path / "state"
    st.mkdir()
    out = {k: tmp_path / f"{k}.jsonl" for k in ("a", "b")}
    log = (tmp_path / "log").open("wb")

    def branch(k: str) -> subprocess.Popen[bytes]:
        return fc("fc-relay", "--min-size", "0", "--input", str(fifo[k]), "--output", str(out[k]),
                  "--state", str(st / f"filter-{k}.db"), stderr=log)  # fmt: skip

    def rels(k: str) -> set[str]:
        if not out[k].exists():
            return set()
        return {json.loads(line)["rel"] for line in out[k].read_text().splitlines() if line.endswith("}")}

    procs = []
    tee_in = fifo["w"]
    if writer == "stage":  # fc-watch -> fc-relay (a stage: its outbox) -> fc-tee
        procs.append(fc("fc-relay", "--min-size", "0", "--input", str(fifo["w"]), "--output", str(fifo["x"]),
                        "--state", str(st / "mid.db"), stderr=log))  # fmt: skip
        tee_in = fifo["x"]

    def fc_filter() -> subprocess.Popen[bytes]:  # a pass-through: its first line into x is a resend line
        return fc("fc-filter", "--min-size", "0", "--input", str(fifo["w"]), "--output", str(fifo["x"]), stderr=log)

    if writer == "filter":  # fc-watch -> fc-filter (a pass-through) -> fc-tee
        procs.append(fc_filter())
        tee_in = fifo["x"]
    procs.append(fc("fc-tee", "--input", str(tee_in), "--output", str(fifo["a"]), "--output", str(fifo["b"]),
                    "--first-wait", "1", stderr=log))  # fmt: skip
    procs.append(branch("a"))
    procs.append(fc("fc-watch", "--state", str(st / "watch.db"), "--output", str(fifo["w"]), str(site), stderr=log))
    want = {f"f{i:04d}.txt" for i in range(n)}
    try:
        deadline = time.monotonic() + 30
        while rels("a") != want and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rels("a") == want
        time.sleep(4)  # the writers have A's acknowledgements and have pruned what A had
        if writer == "filter":
            # restarted: its resend line (no hop) is the last line fc-tee passed on; a late reader registers on
            # nothing with it (events.RESEND)
            procs[0].kill()
            procs[0].wait()
            procs[0] = fc_filter()
            time.sleep(3)
        procs.append(branch("b"))  # no line comes any more: the site does not change
        deadline = time.monotonic() + 30
        while rels("b") != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert want - rels("b") == set(), f"branch b lost {len(want - rels('b'))}"
    finally:
        for p in procs:
            p.kill()
            p.wait()
