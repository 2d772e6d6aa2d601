"""fc-transport's connections to a local folder take turns on small files (stages/transport/turns.py): four
threads copying 4 KiB files at once handed the interpreter lock to each other at every system call (90 futex
calls per file, most of the stage's CPU time, issue 18).  Large files still go side by side.  Real runner, real
transporter to a local folder; only the upload step is wrapped, to see how many run at once."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.delivery.runner import Options, Runner
from fileconveyor.report import Reporter
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from fileconveyor.stages.transport.turns import TURN_MAX_SIZE
from fileconveyor.stopping import Stopper

from .conftest import event, jsonl, tree


class Watched(TransportStage):
    """fc-transport that notes how many uploads are in progress at once (each one made to last 30 ms)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.now = self.most = 0
        self.count_lock = threading.Lock()

    def _upload(self, *args: object) -> object:  # type: ignore[override]
        with self.count_lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.03)
            return super()._upload(*args)  # type: ignore[arg-type]
        finally:
            with self.count_lock:
                self.now -= 1


def _sync(tmp_path: Path, size: int, n: int, spec: str) -> Watched:
    src, dest = tmp_path / "src", tmp_path / "dest"
    evs = []
    for i in range(n):
        rel = f"d{i % 3}/f{i}.bin"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(bytes([i]) * size)
        evs.append(event(src, rel))
    stage = Watched(targets_from([("to", spec.format(dest=dest))]))
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=tmp_path / "t.db", drain_timeout=10)
    status = Runner(stage, opts, io.BytesIO(jsonl(evs)), out, Reporter("fc-t", err, 1), Stopper()).run()
    assert status == 0, err.getvalue()
    assert [E.decode(line)["transported"] for line in out.getvalue().splitlines()] == ["uploaded"] * n
    assert tree(dest) == tree(src)  # every file, and no temporary one left
    return stage


def test_small_files_to_a_local_folder_are_copied_one_at_a_time(tmp_path: Path) -> None:
    stage = _sync(tmp_path, 4096, 12, "file://{dest}?connections=4")
    assert stage.most == 1


def test_large_files_to_a_local_folder_still_go_side_by_side(tmp_path: Path) -> None:
    stage = _sync(tmp_path, TURN_MAX_SIZE, 8, "file://{dest}?connections=4")
    assert stage.most > 1
