"""A stage's rounds leave Python's cyclic collector idle (delivery/collector.py, issue 18).

A round keeps each line's event, hop, item and outcome until its commit, so with the default threshold (700
objects) the collector ran every 50-90 lines and walked the round again and again: 330-360 collections per
10,000 files in fc-transport, 100-400 ms of its CPU on the pipeline's critical path.  Real stages on a real
pipeline; the collections are counted by a sitecustomize that each stage process loads (gc.callbacks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FILES = 3000

COUNTER = """
import atexit, gc, os, sys
seen = []
def note(phase, info):
    if phase == "stop":
        seen.append(info["generation"])
gc.callbacks.append(note)
def report():
    with open(os.environ["FC_GC_REPORT"] + "." + str(os.getpid()), "w") as f:
        f.write(os.path.basename(sys.argv[0]) + " " + str(len(seen)))
atexit.register(report)
"""


def test_a_stage_makes_next_to_no_collection_over_thousands_of_lines(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(10):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(FILES // 10):
            (src / f"d{d}" / f"f{i}.bin").write_bytes(b"x" * 100)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(COUNTER)
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state"), "FC_GC_REPORT": str(tmp_path / "gc")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "lib"), env.get("PYTHONPATH", "")])
    bin_ = ROOT / "bin"
    shell = (
        f"{sys.executable} {bin_ / 'fc-watch'} --scan-once {src}"
        f" | {sys.executable} {bin_ / 'fc-transport'} --to file://{tmp_path / 'dest'}"
        f" | {sys.executable} {bin_ / 'fc-record'} --db {tmp_path / 'synced.db'}"
    )
    done = subprocess.run(["sh", "-c", shell], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert sum(1 for _ in (tmp_path / "dest").rglob("*.bin")) == FILES
    reports = dict(p.read_text().split(" ", 1) for p in tmp_path.glob("gc.*"))
    assert {"fc-transport", "fc-record"} <= reports.keys(), reports
    for stage in ("fc-transport", "fc-record"):
        collections = int(reports[stage])
        # about 20 during start-up (imports), then next to none; the old threshold made about 100 more in
        # fc-transport for 3,000 files
        assert collections <= 35, f"{stage}: {collections} collections"
