"""The first hop, fc-watch to an fc stage: what a reader did not acknowledge is
re-sent by the next fc-watch run (cron with --scan-once), and a reader restarted
behind a live fc-watch gets what its predecessor lost."""

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

WATCH = [sys.executable, str(ROOT / "bin" / "fc-watch")]
FILTER = [sys.executable, str(RELAY)]


def pipeline(site: Path, state: Path, reader: bool = True, middle: str = "") -> list[dict]:
    cmd = f"{' '.join(WATCH)} --scan-once --state {state}/w.db {site}"
    if reader:
        cmd += f"{middle} | {' '.join(FILTER)} --state {state}/f.db"
    else:
        cmd += " > /dev/null"  # the reader died: every line written is lost
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize(
    "middle",
    ["", " | { grep --line-buffered -v no-such-thing || true; }", " | awk '{ print; fflush() }'"],
    ids=["direct", "grep-in-the-middle", "awk-in-the-middle"],
)
def test_cron_runs_resend_what_the_reader_never_acknowledged(tmp_path: Path, middle: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for i in range(5):
        (site / f"a{i}.css").write_text("a")
    assert len(pipeline(site, tmp_path, middle=middle)) == 5
    for i in range(3):
        (site / f"b{i}.css").write_text("b")
    pipeline(site, tmp_path, reader=False)  # reported, but lost on the way
    (site / "a0.css").unlink()
    got = pipeline(site, tmp_path, middle=middle)
    assert sorted((e["kind"], e["rel"]) for e in got) == [
        ("created", "b0.css"),
        ("created", "b1.css"),
        ("created", "b2.css"),
        ("deleted", "a0.css"),
    ]
    assert pipeline(site, tmp_path, middle=middle) == []  # all acknowledged now: nothing again


def test_reader_restarted_behind_live_fc_watch_gets_everything(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.ndjson"
    watch = subprocess.Popen(
        [*WATCH, "--state", str(tmp_path / "w.db"), "--output", str(fifo), str(site)], stderr=subprocess.DEVNULL
    )

    def reader() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*FILTER, "--input", str(fifo), "--output", str(out), "--state", str(tmp_path / "f.db")],
            stderr=subprocess.DEVNULL,
        )

    r = reader()
    try:
        names = []
        for round_ in range(6):
            for i in range(40):
                name = f"r{round_}-{i}.css"
                (site / name).write_text(name)
                names.append(name)
            time.sleep(0.3)
            r.send_signal(signal.SIGKILL)  # mid-stream: lines in its memory die with it
            r.wait()
            r = reader()
        deadline = time.monotonic() + 30
        got: set[str] = set()
        while time.monotonic() < deadline and not set(names) <= got:
            time.sleep(0.3)
            data = out.read_bytes() if out.exists() else b""  # a loaded machine: no reader may have started yet
            got = {json.loads(x)["rel"] for x in data.splitlines(keepends=True) if x.endswith(b"\n")}
        assert not set(names) - got, f"lost: {sorted(set(names) - got)[:5]}"
    finally:
        for p in (r, watch):
            p.kill()
            p.wait()
