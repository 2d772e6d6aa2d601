"""inotify with a parallel scan: the scan's worker processes add watches on our inotify descriptor and
tell the parent which directory each watch is for in their next batch.  An event read before that
batch arrived used to be dropped (its watch unknown), so a file created just after fc-watch started
was never reported: the kill -9 chaos test lost such a file in 5 of 85 runs."""

from __future__ import annotations

import io
import os
import select
import time
from pathlib import Path

import pytest

from fileconveyor.delivery.writer import stdout_writer
from fileconveyor.events import decode, get_path
from fileconveyor.report import Reporter
from fileconveyor.stages.watch import scan
from fileconveyor.stages.watch.stage import Core, Options, Source
from fileconveyor.stages.watch.state import WatchState
from fileconveyor.watchers.inotify import InotifyBackend
from fileconveyor.watchers.tree import Filters


def test_event_read_before_its_watch_note_is_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "PARALLEL_FROM", 0)  # this small tree in worker processes all the same
    root = tmp_path / "site"
    for i in range(20):  # enough directories for the scan to be cut into jobs (watch_scan.plan)
        (root / f"d{i:02d}").mkdir(parents=True)
        (root / f"d{i:02d}" / "f.txt").write_text("f")
    (root / "d10" / "sub" / "deeper").mkdir(parents=True)
    (root / "d10" / "sub" / "f.txt").write_text("f")
    late = root / "d10" / "sub" / "late.txt"
    read_after_late, hook_pid = tmp_path / "read-after-late", tmp_path / "hook-pid"

    out = io.BytesIO()
    state = WatchState(tmp_path / "w.db", stdout_writer(out))
    src = Source("site", os.fsencode(root))
    src.prefix, _ = state.bind_source(src.name, src.root)
    core = Core([src], state, Filters(), Options(settle=0.05, jobs=2))
    backend = InotifyBackend(core, Reporter("fc-watch", io.StringIO()), 1.0)
    real_hook, real_between = core.dir_hook, core.between_batches
    assert real_hook is not None and real_between is not None

    def hook_for(source: Source):  # type: ignore[no-untyped-def]
        hook = real_hook(source)

        def on_dir(rel: bytes, path: bytes) -> object:
            note = hook(rel, path)
            if rel == b"d10/sub/deeper":
                # In a worker: d10/sub is listed and watched, and only this job's batch, not sent yet,
                # says so.  A file created now is not in the scan: only its inotify events tell.
                hook_pid.write_text(str(os.getpid()))
                late.write_text("late")
                deadline = time.monotonic() + 10
                while not read_after_late.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)  # until the parent has read the queue: the events come before the note
            return note

        return on_dir

    def between() -> None:
        queued = late.exists()
        real_between()
        if queued:
            read_after_late.touch()

    core.dir_hook, core.between_batches = hook_for, between
    try:
        backend.start()  # the catch-up scan, in 2 worker processes
        deadline = time.monotonic() + 10
        while b"late.txt" not in out.getvalue() and time.monotonic() < deadline:
            select.select([backend.fileno()], [], [], 0.1)
            backend.process()
            core.tick()
            state.commit()
    finally:
        backend.close()
        state.close()
    # the race really happened: in a worker, and the parent read the late file's events before the note
    assert int(hook_pid.read_text()) != os.getpid()
    assert read_after_late.exists()
    got = {get_path(ev, "rel"): ev["via"] for ev in map(decode, out.getvalue().splitlines())}
    assert got.get(b"d10/sub/late.txt") == "inotify"
    assert len(got) == 22  # and the scan reported every file that was there (21)
