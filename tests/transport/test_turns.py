"""fc-transport's connections to a local folder take turns on small files (stages/transport/turns.py): four
threads copying 4 KiB files at once handed the interpreter lock to each other at every system call (90 futex
calls per file, most of the stage's CPU time, issue 18).  Large files still go side by side.  Real runner, real
transporter to a local folder; only the upload step is wrapped, to see how many run at once."""

from __future__ import annotations

import io
import os
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
from fileconveyor.transporters import TransientError

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


class FailsInMainThreadOnce(TransportStage):
    """fc-transport whose first copy in the runner's main thread (Stage.quick) meets a destination in trouble."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.failed = False
        self.by_thread: list[tuple[str, bool]] = []  # (file, copied by the main thread)

    def _upload(self, item, *args):  # type: ignore[no-untyped-def,override]
        main = threading.current_thread() is threading.main_thread()
        if main and not self.failed:
            self.failed = True
            raise TransientError("to: no space left on device")
        self.by_thread.append((item.event["rel"], main))
        return super()._upload(item, *args)


def test_a_copy_that_fails_in_the_main_thread_is_left_to_the_workers_until_one_gets_through(tmp_path: Path) -> None:
    """Small files to a local folder are copied by the main thread (turns.py); a copy that does not finish there
    (a full disk) goes to a worker, which retries it the usual way, and so do the next ones of that destination
    until a worker gets one through: then the main thread copies again.  Nothing lost, each file once."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    names = [f"f{i}.txt" for i in range(6)]
    for name in names:
        (src / name).write_bytes(name.encode())
    stage = FailsInMainThreadOnce(targets_from([("to", f"file://{dest}")]))
    opts = Options(state_path=tmp_path / "t.db", drain_timeout=30)
    parts = [jsonl([event(src, name) for name in part]) for part in (names[:1], names[1:2], names[2:])]
    out, err = io.BytesIO(), io.StringIO()
    r, w = os.pipe()

    def feed() -> None:
        os.write(w, parts[0])  # fails in the main thread, and the destination pauses
        time.sleep(0.5)
        os.write(w, parts[1])  # meanwhile: left to the workers too
        deadline = time.monotonic() + 30
        while not ((dest / "f0.txt").exists() and (dest / "f1.txt").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.write(w, parts[2])  # a worker got one through: the main thread's again
        os.close(w)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with open(r, "rb") as stdin:
        status = Runner(stage, opts, stdin, out, Reporter("fc-t", err, 1), Stopper()).run()
    feeder.join()
    assert status == 0, err.getvalue()
    assert sorted(E.decode(line)["rel"] for line in out.getvalue().splitlines()) == names
    assert tree(dest) == tree(src)
    assert sorted(rel for rel, _ in stage.by_thread) == names, "each copied once after the failure"
    by_worker = {rel for rel, main in stage.by_thread if not main}
    assert {"f0.txt", "f1.txt"} <= by_worker, "the failed one, and the next one meanwhile, went to the workers"
    assert by_worker != set(names), "the main thread took over again once one got through"
