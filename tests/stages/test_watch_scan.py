"""Scans split across processes find exactly what one process finds."""

from __future__ import annotations

import itertools
import json
import os
from multiprocessing.context import ForkProcess
from pathlib import Path

import pytest

from fileconveyor.cli.watch import main
from fileconveyor.events import FileStat
from fileconveyor.stages.watch import scan
from fileconveyor.stages.watch.scan import ScanJob, plan, run_job
from fileconveyor.stages.watch.state import WatchState
from fileconveyor.watchers.tree import Filters, walk
from tests.conftest import call

OLD = 1_600_000_000  # an mtime well in the past: files count as settled


def make_tree(root: Path, dirs: int = 40, files: int = 5) -> None:
    for d in range(dirs):
        sub = root / f"d{d % 7}" / f"s{d:02d}" / ("deep" if d % 3 else "")
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            p = sub / f"f{f}-{d}.txt"
            p.write_bytes(b"x" * (d + f))
            os.utime(p, (OLD, OLD))
    (root / "top.txt").write_text("top")
    odd = os.path.join(os.fsencode(root), b"\xff-name")
    with open(odd, "wb") as f:
        f.write(b"odd")
    for p in (os.fsencode(root / "top.txt"), odd):
        os.utime(p, (OLD, OLD))


def scan_ids(root: Path, state: Path, jobs: int) -> list[dict]:
    r = call(main, ["--scan-once", "--settle", "0", "--jobs", str(jobs), "--state", str(state), str(root)])
    assert r.status == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_parallel_scan_equals_sequential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "PARALLEL_FROM", 0)  # this small tree in worker processes all the same
    forked = forks(monkeypatch)
    root = tmp_path / "site"
    root.mkdir()
    make_tree(root)
    one = scan_ids(root, tmp_path / "one.db", 1)
    many = scan_ids(root, tmp_path / "many.db", 3)
    assert len(one) == 40 * 5 + 2
    assert sorted(e["id"] for e in one) == sorted(e["id"] for e in many)
    # Change things and compare the second runs too.
    (root / "d3" / "s03" / "f0-3.txt").unlink()
    os.unlink(os.fsencode(root) + b"/\xff-name")  # the last key of all: deleted after the walk ends
    (root / "d1" / "s01" / "deep" / "f1-1.txt").write_bytes(b"changed!")
    (root / "d3" / "new.txt").write_bytes(b"new")
    for p in (root / "d1" / "s01" / "deep" / "f1-1.txt", root / "d3" / "new.txt"):
        os.utime(p, (OLD + 5, OLD + 5))
    one = scan_ids(root, tmp_path / "one.db", 1)
    many = scan_ids(root, tmp_path / "many.db", 3)
    kinds = sorted((e["kind"], e["rel"]) for e in one)
    assert kinds == [
        ("created", "d3/new.txt"),
        ("deleted", "d3/s03/f0-3.txt"),
        ("deleted", "\ufffd-name"),
        ("modified", "d1/s01/deep/f1-1.txt"),
    ]
    assert sorted(e["id"] for e in one) == sorted(e["id"] for e in many)
    assert len(forked) == 2 * 3  # two scans, each in 3 workers


def forks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The scan worker processes started (forked), as the scans run."""
    real, started = ForkProcess.start, []

    def start(self: ForkProcess) -> None:
        started.append(self.name)
        real(self)

    monkeypatch.setattr(ForkProcess, "start", start)
    return started


def test_small_tree_is_scanned_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker process costs an interpreter's memory (fc-watch --scan-once of 10,000 files: 75 MB with two
    workers): a tree that looks small from the jobs already run is scanned without forking."""
    forked = forks(monkeypatch)
    root = tmp_path / "site"
    root.mkdir()
    make_tree(root)
    assert len(plan(_job(root, tmp_path / "x.db"), 3 * 4)) > 2  # would be split
    assert len(scan_ids(root, tmp_path / "one.db", 3)) == 40 * 5 + 2
    assert forked == []
    monkeypatch.setattr(scan, "PARALLEL_FROM", 40)  # the first job's files times the jobs reach it
    assert len(scan_ids(root, tmp_path / "two.db", 3)) == 40 * 5 + 2
    assert len(forked) == 3


def _job(root: Path, db: Path, settle_ns: int = 0) -> ScanJob:
    return ScanJob("s", 0, b"\0\0\0\1", os.fsencode(root), db, b"", b"", None, Filters(), False, settle_ns, "scan")


def test_plan_cuts_cover_the_key_space_without_overlap(tmp_path: Path) -> None:
    make_tree(tmp_path)
    job = _job(tmp_path, tmp_path / "x.db")
    jobs = plan(job, 6)
    assert len(jobs) > 1
    assert jobs[0].lo == b"" and jobs[-1].hi is None
    for a, b in itertools.pairwise(jobs):
        assert a.hi == b.lo and a.lo < a.hi  # type: ignore[operator]
    everything = list(walk(os.fsencode(tmp_path), b"", Filters()))
    pieces = [k for j in jobs for k in walk(j.root, b"", Filters(), lo=j.lo, hi=j.hi)]
    assert sorted(pieces) == sorted(everything)
    assert [k for k, *_ in everything] == sorted(k for k, *_ in everything)  # walk order is key order


def test_small_tree_is_not_split(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    job = _job(tmp_path, tmp_path / "x.db")
    assert plan(job, 8) == [job]


@pytest.mark.parametrize("settle_ns", [0, 10**18])
def test_recent_files_wait_to_settle(tmp_path: Path, settle_ns: int) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    WatchState(tmp_path / "w.db").close()
    job = _job(tree, tmp_path / "w.db", settle_ns)
    batches = list(run_job(job, lambda: 2 * 10**18))
    lines = [x for b in batches for x in b.lines]
    pending = [x for b in batches for x in b.pending]
    if settle_ns:
        assert not lines and [k for k, _ in pending] == [b"f"]
        assert pending[0][1] == tuple(FileStat(1, *pending[0][1][1:]))  # (size, mtime_ns, ino)
    else:
        assert [k for b in batches for k in b.keys] == [b"f"] and not pending


def test_a_scan_commits_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows and lines of a scan wait in memory until their commit: each costs about 1 KB there (a scan of
    10,000 files held them all, fc-watch at 32 MB instead of 25), so a scan commits every commit_every rows."""
    root = tmp_path / "site"
    for d in range(30):
        (root / f"d{d:02d}").mkdir(parents=True)
        for f in range(100):
            (root / f"d{d:02d}" / f"f{f:03d}").write_bytes(b"x")
    os.utime(root, (OLD, OLD))
    for p in root.rglob("f*"):
        os.utime(p, (OLD, OLD))
    sizes: list[int] = []
    real = WatchState.commit

    def commit(self: WatchState) -> None:
        sizes.append(self.dirty)
        real(self)

    monkeypatch.setattr(WatchState, "commit", commit)
    assert len(scan_ids(root, tmp_path / "w.db", 1)) == 3000
    assert max(sizes) <= 2 * 1024, sizes  # was all 3,000 in one commit at the end
    assert sum(sizes) == 3000
