"""fc-tee gives a branch reader that comes while no line arrives the last line it passed on, for the reader to
register on with that line's writer, which re-sends what the branch missed (tests/stages/test_tee_late_branch.py).
It kept out of that only a resend line spelled as fc-tee and fc-filter write it (events.RESEND_LINE): any other
line without a hop as the last one (a resend line with a field more, a bad line, an event without a hop: anyone
who writes fc-tee's input writes such a line) was given to the late reader, which registered on nothing with it
and got none of what it missed.

Real fc-watch -> FIFO -> fc-tee -> two FIFOs -> two durable readers (fc-relay); branch b starts late; a forger's
line is written into fc-tee's input FIFO after the last real one."""

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
    command = RELAY if cmd == "fc-relay" else BIN / cmd
    return subprocess.Popen([sys.executable, str(command), *args], **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "forged",
    [b'{"v":1,"kind":"resend","x":1}\n', b'{"kind":"resend","v":1}\n', b"not json\n"],
    ids=["resend-field-more", "resend-reordered", "bad-line"],
)
def test_a_late_branch_gets_every_line_whatever_line_came_last(tmp_path: Path, forged: bytes) -> None:
    site = tmp_path / "site"
    site.mkdir()
    n = 100
    for i in range(n):
        (site / f"f{i:03d}.txt").write_text(str(i))
    fifo = {k: tmp_path / f"{k}.fifo" for k in ("w", "a", "b")}
    for f in fifo.values():
        os.mkfifo(f, 0o600)
    st = tmp_path / "state"
    st.mkdir()
    out = {k: tmp_path / f"{k}.jsonl" for k in ("a", "b")}
    log = (tmp_path / "log").open("wb")

    def branch(k: str) -> subprocess.Popen[bytes]:
        return fc("fc-relay", "--min-size", "0", "--input", str(fifo[k]), "--output", str(out[k]),
                  "--state", str(st / f"relay-{k}.db"), stderr=log)  # fmt: skip

    def rels(k: str) -> set[str]:
        if not out[k].exists():
            return set()
        lines = out[k].read_text().splitlines()
        return {json.loads(x)["rel"] for x in lines if x.endswith("}") and '"rel"' in x}

    tee = ["--input", str(fifo["w"]), "--output", str(fifo["a"]), "--output", str(fifo["b"]), "--first-wait", "1"]
    procs = [
        fc("fc-tee", *tee, stderr=log),
        branch("a"),
        fc("fc-watch", "--state", str(st / "watch.db"), "--output", str(fifo["w"]), str(site), stderr=log),
    ]
    want = {f"f{i:03d}.txt" for i in range(n)}
    try:
        deadline = time.monotonic() + 60
        while rels("a") != want and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rels("a") == want
        fd = os.open(fifo["w"], os.O_WRONLY)  # (fc-tee reads it: opened at once)
        try:
            os.write(fd, forged)
        finally:
            os.close(fd)
        time.sleep(1)  # (fc-tee has passed it on: it is its last line; no line comes any more)
        procs.append(branch("b"))
        deadline = time.monotonic() + 60
        while rels("b") != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert want - rels("b") == set(), f"branch b lost {len(want - rels('b'))}"
    finally:
        for p in procs:
            p.kill()
            p.wait()
