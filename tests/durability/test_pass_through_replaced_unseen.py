"""fc-watch -> fc-tee -> fc-filter -> a durable reader, joined by named FIFOs (fc-conveyor's rule with processing),
and fc-filter killed -9 and started again while its reader never sees the end of its input: the reader had lines
left to read when the new fc-filter opened its FIFO (it was behind: fc-process gzipping a first scan), or, here,
another writer holds the FIFO open.  Meanwhile fc-tee skipped the FIFO nobody read, and fc-watch, whose reader
(fc-tee) never changed, re-sends nothing by itself.  The reader, which did not see its writer go, must still ask
fc-watch for what it lacks: the new fc-filter's first line says it started (events.RESEND).  Without it the
lines written while no fc-filter ran were lost for good: `make chaos TOPOLOGY=conveyor` lost 524 of fc-watch's
first scan to the css rule, in one stretch right after an fc-filter kill (seed 1, 3,000 files, 2 runs of 3).

The same with the reader's FIFO given by the shell (`fc-filter ... > f.fifo`, `fc-process < f.fifo`: a
supervisord chain's commands): fc-filter's stdout and the reader's stdin are that FIFO, not a pipe
(streams.named_fifo), so the resend line goes and is heeded there too (all 60 lost before)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RELAY, ROOT
from tests.durability.test_tee_killed_resend import query, wait_for

BIN = ROOT / "bin"
N = 60


def fc(cmd: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    command = RELAY if cmd == "fc-relay" else BIN / cmd  # fc-relay: a durable stage (tests/relay.py)
    return subprocess.Popen([sys.executable, str(command), *args], **kw)  # type: ignore[call-overload]


def _redirected(fifo: Path) -> tuple[int, int]:
    """The two ends of ``fifo`` as a shell's `<` and `>` give them: blocking descriptors (read end first)."""
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(r, True)
    return r, os.open(fifo, os.O_WRONLY)


@pytest.mark.parametrize("given", ["named", "redirected"])
def test_lines_fc_tee_skipped_while_fc_filter_was_replaced_unseen_come_again(tmp_path: Path, given: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "first.css").write_text("x")
    fifos = {name: tmp_path / f"{name}.fifo" for name in ("watch", "tee", "filter")}
    for path in fifos.values():
        os.mkfifo(path)
    out = tmp_path / "relay.jsonl"
    wdb = tmp_path / "watch.db"
    tee_err, relay_err = tmp_path / "tee.err", tmp_path / "relay.err"

    def rels() -> set[str]:
        if not out.exists():
            return set()
        return {json.loads(x)["rel"] for x in out.read_bytes().splitlines(keepends=True) if x.endswith(b"\n")}

    def fc_filter() -> subprocess.Popen[bytes]:
        args = ["--extensions", "css", "--input", str(fifos["tee"])]
        if given == "named":
            return fc("fc-filter", *args, "--output", str(fifos["filter"]), stderr=subprocess.DEVNULL)
        w = os.open(fifos["filter"], os.O_WRONLY)  # `> filter.fifo` (its reader is there)
        try:
            return fc("fc-filter", *args, stdout=w, stderr=subprocess.DEVNULL)
        finally:
            os.close(w)

    if given == "named":
        reader = fc(
            "fc-relay",
            "-v",
            "--min-size",
            "0",
            "--input",
            str(fifos["filter"]),
            "--output",
            str(out),
            "--state",
            str(tmp_path / "relay.db"),
            stderr=relay_err.open("wb"),
        )
    else:  # a File Conveyor stage (fc-filter passes through only to one): `fc-process < filter.fifo`
        r, w = _redirected(fifos["filter"])
        reader = fc(
            "fc-process",
            "-v",
            "--chain",
            "filename.SpacesToUnderscores",
            "--state",
            str(tmp_path / "process.db"),
            "--output",
            str(out),
            stdin=r,
            stderr=relay_err.open("wb"),
        )
        os.close(r)
    procs = {"relay": reader}
    procs |= {
        "filter": fc_filter(),
        "tee": fc("fc-tee", "--input", str(fifos["watch"]), "--output", str(fifos["tee"]), stderr=tee_err.open("wb")),
        "watch": fc("fc-watch", "--state", str(wdb), "--output", str(fifos["watch"]), str(site)),
    }
    held = w if given == "redirected" else -1  # (the test's write end: a second writer, held from the start)
    try:
        assert wait_for(lambda: "first.css" in rels())
        assert wait_for(lambda: query(wdb, "SELECT max(seq) FROM acks") >= 1)  # the relay acknowledged fc-watch
        # a second writer on the relay's FIFO: it sees no end of input when fc-filter goes, as when it is behind
        if held < 0:
            held = os.open(fifos["filter"], os.O_WRONLY | os.O_NONBLOCK)
        procs["filter"].kill()
        procs["filter"].wait()
        for i in range(N):
            (site / f"while-down-{i:03d}.css").write_text("x")
        assert wait_for(lambda: b"skipping it" in tee_err.read_bytes()), tee_err.read_text()
        time.sleep(1.5)  # fc-watch has written them all (inotify, a commit, a write) and fc-tee skipped them
        procs["filter"] = fc_filter()
        (site / "last.css").write_text("x")
        want = {"first.css", "last.css", *(f"while-down-{i:03d}.css" for i in range(N))}
        wait_for(lambda: rels() >= want)
        assert not want - rels(), f"lost {len(want - rels())}: {sorted(want - rels())[:5]}"
        assert "a pass-through before us started" in relay_err.read_text()
    finally:
        if held >= 0:
            os.close(held)
        for p in procs.values():
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
