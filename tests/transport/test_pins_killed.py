"""A stylesheet's pins reach the state file before the stylesheet is visible at the destination.

They were written only with the round's commit: fc-transport killed between the upload of a stylesheet and that
commit left it published with pins nobody knew, and the next run deleted an old name it references at once (a
published page broke; tests/durability/test_css_soak.py saw it about once in ten CI runs).  The kill is made
exact here: a real fc-transport (runner, state file, local destination) whose record() ends the process with
os._exit as the stylesheet's outcome is about to be committed."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

from .conftest import jsonl, transport, tree
from .test_pins import _css, _image, _site

KILLED = """
import io, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from fileconveyor.delivery.runner import Options, Runner
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from fileconveyor.stopping import Stopper

class KilledBeforeCommit(TransportStage):
    def record(self, db, item, outcome):
        if item.event.get("references"):
            os._exit(9)  # as kill -9: the stylesheet is uploaded, the round not committed
        super().record(db, item, outcome)

stage = KilledBeforeCommit(targets_from([("to", "file://" + sys.argv[2])]))
opts = Options(state_path=Path(sys.argv[3]), drain_timeout=10)
Runner(stage, opts, sys.stdin.buffer, io.BytesIO(), Reporter("fc-transport", sys.stderr, 1), Stopper()).run()
"""


def test_a_stylesheet_published_by_a_killed_run_keeps_the_old_names_it_references(tmp_path: Path, env: dict) -> None:
    src, work = _site(tmp_path)
    cdn, state = tmp_path / "cdn", tmp_path / "t.db"
    args = ["--to", f"file://{cdn}", "--state", str(state)]
    assert transport(args, env, jsonl([_image(src, work, 1)])).returncode == 0
    killed = subprocess.run(
        [sys.executable, "-c", KILLED, str(ROOT / "lib"), str(cdn), str(state)],
        input=jsonl([_css(src, work, "css/a.css", 1, 1, "a1")]),
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert killed.returncode == 9, killed.stderr.decode()
    assert set(tree(cdn)) == {"img/x_1.png", "css/a_1.css"}  # published, its bookkeeping lost with the process
    # A line read and worked on in the round that reads it reaches the inbox only with that round's commit:
    # killed before it, nothing of the stylesheet is in the state file (its writer sends the line again).
    with contextlib.closing(sqlite3.connect(state)) as db, db:
        db.execute("DELETE FROM inbox")
    # the image changes before the stylesheet's line comes again: a_1.css, published, references x_1.png, which
    # must stay (it was deleted at once, and a_1.css, a stale version now, was not sent again: broken for good)
    again = [_image(src, work, 2), _css(src, work, "css/a.css", 1, 1, "a1")]
    res = transport(args, env, jsonl(again))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"img/x_1.png", "img/x_2.png", "css/a_1.css"}
    # then a.css with the new name: x_1.png goes once nothing published references it
    res = transport(args, env, jsonl([_css(src, work, "css/a.css", 2, 2, "a2")]))
    assert res.returncode == 0, res.stderr.decode()
    assert set(tree(cdn)) == {"img/x_2.png", "css/a_2.css"}
