"""fc-watch --scan-once (and the catch-up scan that starts every live run): a changed
tree reports exactly its changes; names, filters, overlapping roots, symlink loops,
unreadable directories and vanishing files."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from fileconveyor.events import get_path
from tests.conftest import require_tool
from tests.watch.conftest import Backend, Launcher
from tests.watch.harness import (
    HOSTILE_DIR,
    HOSTILE_NAMES,
    IGNORED,
    KEPT,
    Change,
    Event,
    changes,
    expect,
    make_files,
    make_many,
    rel_of,
    write,
)

OLD = 3600.0
S = 1_000_000_000  # ns


# -- a changed tree ----------------------------------------------------------------------------

TREE = [
    "keep/a",
    "keep/b",
    "keep/c",
    "sizes/same_size",
    "sizes/same_mtime",
    "sizes/one_ns",
    "sizes/replaced",
    "sizes/chmod_only",
    "gone/1",
    "gone/2",
    "sub/dir/gone3",
]


def change_tree(root: Path) -> Counter[Change]:
    """Change ``root`` in every way a scan must notice (and one it must not); return the
    changes a scan must report."""
    p = root / "sizes/same_size"  # same size, other content, other mtime
    write(p, b"ORIGINAL", mtime_ns=p.stat().st_mtime_ns + S)
    p = root / "sizes/same_mtime"  # other size, same mtime
    write(p, b"original, longer", mtime_ns=p.stat().st_mtime_ns)
    p = root / "sizes/one_ns"  # same size, mtime one nanosecond later
    write(p, b"0riginal", mtime_ns=p.stat().st_mtime_ns + 1)
    p = root / "sizes/replaced"  # same size and mtime, but another file: renamed over it
    st = p.stat()
    write(root / "sizes/.new", b"original", mtime_ns=st.st_mtime_ns)
    os.rename(root / "sizes/.new", p)
    assert (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) != (st.st_ino, st.st_size, st.st_mtime_ns)
    os.chmod(root / "sizes/chmod_only", 0o600)  # only the ctime changes: not a change of the file
    os.unlink(root / "gone/1")
    os.unlink(root / "gone/2")
    shutil.rmtree(root / "sub")
    make_files(root, ["added/old", "keep/added"], b"new", age_s=OLD)
    write(root / "added/deep/fresh", b"just written")  # still settling when the scan sees it
    return (
        expect("modified", ["sizes/same_size", "sizes/same_mtime", "sizes/one_ns", "sizes/replaced"])
        + expect("deleted", ["gone/1", "gone/2", "sub/dir/gone3"])
        + expect("created", ["added/old", "keep/added", "added/deep/fresh"])
    )


def check_against_disk(events: list[Event], root: Path) -> None:
    for ev in events:
        if ev["kind"] != "deleted":
            st = os.stat(root / os.fsdecode(rel_of(ev)))
            assert (ev["size"], ev["mtime_ns"], ev["ino"]) == (st.st_size, str(st.st_mtime_ns), st.st_ino), ev


def test_scan_once_reports_exactly_the_changes(fc: Launcher, tmp_path: Path) -> None:
    root = tmp_path / "site"
    make_files(root, TREE, b"original", age_s=OLD)
    first = fc.scan_once(root)
    assert first.status == 0, first.stderr
    assert changes(first.events) == expect("created", TREE)
    assert all(ev["via"] == "scan" for ev in first.events)
    check_against_disk(first.events, root)
    assert fc.scan_once(root).events == [], "nothing changed: nothing to report"

    wanted = change_tree(root)
    second = fc.scan_once(root)
    assert second.status == 0, second.stderr
    assert changes(second.events) == wanted
    check_against_disk(second.events, root)

    third = fc.scan_once(root)
    assert (third.status, third.events) == (0, [])


def test_catch_up_on_start_reports_exactly_the_changes(fc: Launcher, backend: Backend, tmp_path: Path) -> None:
    root = tmp_path / "site"
    make_files(root, TREE, b"original", age_s=OLD)
    first = fc.scan_once(root)
    assert changes(first.events) == expect("created", TREE)
    wanted = change_tree(root)
    w = fc.live(backend, root)
    got = w.collect(0, wanted, backend.timeout, backend.quiet)
    assert got == wanted, w.stderr
    check_against_disk(w.events, root)
    fc.stop_in_sync(w)


# -- names ---------------------------------------------------------------------------------------


def jq(args: list[str], data: bytes) -> bytes:
    path = require_tool("jq", "docs/events.md shows how to read events with it")
    p = subprocess.run([path, *args], input=data, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def test_hostile_names_round_trip_exactly(fc: Launcher, tmp_path: Path) -> None:
    broot = os.fsencode(tmp_path) + b"/root with \xff and\nnewline"
    rels = [*HOSTILE_NAMES, *(HOSTILE_DIR + b"/" + n for n in HOSTILE_NAMES)]
    for rel in rels:
        write(broot + b"/" + rel, rel)
    done = fc.scan_once(broot)
    assert done.status == 0, done.stderr
    assert changes(done.events) == expect("created", rels)
    for ev in done.events:
        rel = get_path(ev, "rel")
        assert get_path(ev, "root") == broot
        assert get_path(ev, "path") == broot + b"/" + rel
        assert ev["size"] == len(rel)
        assert "root_b64" in ev  # the root is not UTF-8
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in done.lines)

    # jq reads every line, and the recipe of docs/events.md gives back the exact bytes.
    out = jq(["-c", "."], b"".join(done.lines)).splitlines()
    assert [json.loads(line) for line in out] == done.events
    recovered = jq(["-r", ".path_b64 // (.path | @base64)"], b"".join(done.lines)).split()
    assert sorted(base64.b64decode(r) for r in recovered) == sorted(broot + b"/" + rel for rel in rels)


# -- filters and roots ---------------------------------------------------------------------------


def test_ignored_dirs_and_excluded_files(fc: Launcher, tmp_path: Path) -> None:
    root = tmp_path / "site"
    make_files(root, [*IGNORED, *KEPT], age_s=OLD)
    args = ("--ignore-dirs", "CVS:.svn", "--exclude", "*.tmp", root)
    first = fc.scan_once(*args)
    assert first.status == 0, first.stderr
    assert changes(first.events) == expect("created", KEPT)
    for rel in IGNORED:
        write(root / rel, b"changed")
    make_files(root, ["new/CVS/x", "new/deep/.svn/y", "new/z.tmp", "new/kept"])
    shutil.rmtree(root / "a/.svn")
    second = fc.scan_once(*args)
    assert changes(second.events) == expect("created", ["new/kept"])


def test_overlapping_roots(fc: Launcher, tmp_path: Path) -> None:
    site, site2 = tmp_path / "x/site", tmp_path / "x/site2"
    make_files(site, ["a", "sub/b"], age_s=OLD)
    make_files(site2, ["a", "site/c", "sub/b"], age_s=OLD)
    make_files(tmp_path / "x", ["site.txt", "site3/d"], age_s=OLD)
    args = ("--source", f"site={site}", "--source", f"site2={site2}")

    def seen(events: list[Event]) -> Counter[tuple[str, str, bytes]]:
        for ev in events:
            root = site if ev["source"] == "site" else site2
            assert get_path(ev, "root") == os.fsencode(root)
            assert get_path(ev, "path") == os.fsencode(root) + b"/" + rel_of(ev)
        return Counter((ev["source"], ev["kind"], rel_of(ev)) for ev in events)

    first = fc.scan_once(*args)
    created = [("site", b"a"), ("site", b"sub/b"), ("site2", b"a"), ("site2", b"site/c"), ("site2", b"sub/b")]
    assert seen(first.events) == Counter((src, "created", rel) for src, rel in created)
    os.unlink(site2 / "sub/b")
    write(site2 / "a", b"changed")
    write(site / "new")
    second = fc.scan_once(*args)
    assert seen(second.events) == Counter(
        [("site2", "deleted", b"sub/b"), ("site2", "modified", b"a"), ("site", "created", b"new")]
    )


# -- symlinks, permissions, vanishing files ---------------------------------------------------------


def loops(root: Path) -> None:
    make_files(root, ["a/b/f", "top", "m1/x", "m2/y", "m3/z"], age_s=OLD)
    os.symlink("../..", root / "a/b/up")  # to the root: an ancestor
    os.symlink("..", root / "a/b/up1")  # to a: an ancestor
    os.symlink(".", root / "a/self")  # to its own directory
    os.symlink("../m2", root / "m1/l")  # m1/l -> m2 and m2/l -> m1: a loop of two
    os.symlink("../m1", root / "m2/l")
    os.symlink("m3", root / "alias")  # not a loop: a second name for m3
    os.symlink("top", root / "link-to-file")  # a symlink to a file counts as that file


def test_symlink_loops_terminate(fc: Launcher, tmp_path: Path) -> None:
    root = tmp_path / "site"
    loops(root)
    plain = fc.scan_once(root, state=tmp_path / "plain.db", timeout=30)
    assert plain.status == 0, plain.stderr
    assert changes(plain.events) == expect("created", ["a/b/f", "top", "m1/x", "m2/y", "m3/z", "link-to-file"])

    followed = fc.scan_once("--follow-symlinks", root, timeout=30)
    assert followed.status == 0, followed.stderr
    # It ends, and not after going round and round (the kernel would allow 40 links deep).
    assert max(len(rel_of(ev).split(b"/")) for ev in followed.events) <= 6, "went round a loop"
    # Exactly: each symlink is followed unless it leads back into a directory it is in.
    assert changes(followed.events) == expect(
        "created", ["a/b/f", "top", "m1/x", "m2/y", "m3/z", "link-to-file", "alias/z", "m1/l/y", "m2/l/x"]
    )


def test_unreadable_directory_is_not_reported_deleted(
    fc: Launcher, tmp_path: Path, no_dac_override: Callable[[], None] | None
) -> None:
    root = tmp_path / "site"
    make_files(root, ["open/f", "locked/f1", "locked/sub/f2", "locked/sub/deeper/f3"], age_s=OLD)
    first = fc.scan_once(root, preexec=no_dac_override)
    assert changes(first.events) == expect("created", ["open/f", "locked/f1", "locked/sub/f2", "locked/sub/deeper/f3"])
    make_files(root, ["open/g"], age_s=OLD)
    os.chmod(root / "locked", 0)
    try:
        second = fc.scan_once(root, preexec=no_dac_override)
        fresh = fc.scan_once(root, state=tmp_path / "fresh.db", preexec=no_dac_override)
    finally:
        os.chmod(root / "locked", 0o755)
    assert second.status == 0, second.stderr
    assert "cannot read" in second.stderr and "locked" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    # What cannot be read is not known to be gone.
    assert changes(second.events) == expect("created", ["open/g"])
    assert fresh.status == 0, fresh.stderr
    assert changes(fresh.events) == expect("created", ["open/f", "open/g"])
    assert fc.scan_once(root, preexec=no_dac_override).events == []


def test_vanishing_files_during_a_scan(fc: Launcher, tmp_path: Path) -> None:
    root = tmp_path / "site"
    names = [f"d/{n}" for n in make_many(root / "d", 2000, age_s=OLD)]
    stop = threading.Event()

    def churn() -> None:  # files that exist for a moment only, in the middle of the walk
        i = 0
        while not stop.is_set():
            p = root / f"d/f01000-churn{i % 50}"
            p.write_bytes(b"x" * 100)
            p.unlink()
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        done = fc.scan_once(root)
    finally:
        stop.set()
        t.join()
    assert done.status == 0, done.stderr
    assert changes(done.events) == expect("created", names)
