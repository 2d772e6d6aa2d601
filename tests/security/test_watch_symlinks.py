"""Issue 16, finding 1, fc-watch's side: a symlink never publishes what lies outside its tree.

Each case runs as a --scan-once (one process, and split across --jobs 3) and live with
real inotify and with polling.  A link to a file outside the source root is reported
once as skipped (a created event with error/skipped, or a deleted one where a published
file was), never as a file to send; a directory swapped for a symlink is a directory
gone; --follow-symlinks enters symlinked directories but a file link found there must
still resolve beneath the root or the followed directory's target.  The last test runs
the real pipeline, fc-watch --scan-once | fc-transport --to file://, and looks for the
outside file's bytes in the destination.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fileconveyor.cli.record import main as record_main
from fileconveyor.cli.watch import main as watch_main
from fileconveyor.delivery.writer import stdout_writer
from fileconveyor.stages.watch.state import WatchState
from tests.conftest import ROOT, call
from tests.record.test_import import old_queue_db, py2_pickle
from tests.watch.conftest import BACKENDS, Launcher, fc, leak_mark  # noqa: F401 - fixtures
from tests.watch.harness import Change, Event, FcWatch, changes, expect, make_files, rel_of

OLD = 3600.0  # files this old count as settled: a scan reports them at once
SECRET = b"root:$6$not-for-the-web:19000:0:99999:7:::\n"
WARNING = "outside the source root"
MODES = ["scan", "scan-jobs", "inotify", "polling"]


class Watch:
    """fc-watch on one tree, the same way for each mode: ``first()`` is the catch-up
    (or the first --scan-once), ``then(action)`` what follows a change (the next
    --scan-once, or the live events)."""

    def __init__(self, fc: Launcher, mode: str, root: Path, *args: str):  # noqa: F811
        self.fc, self.mode, self.root, self.args = fc, mode, root, args
        self.state = fc.state(f"{mode}.db")
        self.live: FcWatch | None = None
        self.stderr = ""
        self.events: list[Event] = []
        if mode == "scan-jobs":
            # enough top directories for the scan to be cut into jobs (stages/watch_scan.plan)
            self.filler = [f"fill{i:02d}/f" for i in range(30)]
            make_files(root, self.filler, age_s=OLD)
        else:
            self.filler = []

    def _scan(self) -> list[Event]:
        jobs = ("--jobs", "3") if self.mode == "scan-jobs" else ()
        done = self.fc.scan_once("--settle", "0", *jobs, *self.args, self.root, state=self.state)
        assert done.status == 0, done.stderr
        self.stderr += done.stderr
        self.events += done.events
        return done.events

    def first(self, wanted: Counter[Change]) -> list[Event]:
        wanted = wanted + expect("created", self.filler)
        if self.mode.startswith("scan"):
            got = self._scan()
        else:
            b = BACKENDS[self.mode]
            self.live = self.fc.live(b, *self.args, self.root, state=self.state)
            self.live.collect(0, wanted, b.timeout, b.quiet)
            got = self.live.since(0)
        assert changes(got) == wanted, f"expected {dict(wanted)}, got {got}\n{self.all_stderr()}"
        return [ev for ev in got if rel_of(ev).split(b"/")[0] not in {f.split("/")[0].encode() for f in self.filler}]

    def then(self, action: Callable[[], object], wanted: Counter[Change]) -> list[Event]:
        if self.live is None:
            action()
            got = self._scan()
        else:
            b = BACKENDS[self.mode]
            m = self.live.mark()
            action()
            self.live.collect(m, wanted, b.timeout, b.quiet)
            got = self.live.since(m)
        assert changes(got) == wanted, f"expected {dict(wanted)}, got {got}\n{self.all_stderr()}"
        return got

    def all_stderr(self) -> str:
        return self.stderr + (self.live.stderr if self.live is not None else "")

    def warnings(self) -> list[str]:
        return [line for line in self.all_stderr().splitlines() if WARNING in line]

    def close(self) -> None:
        """Stop; then a --scan-once on the state finds nothing new and warns about nothing again."""
        if self.live is not None:
            self.fc.stop_in_sync(self.live)
            self.stderr += self.live.stderr
            self.live = None
        again = self.fc.scan_once(*self.args, self.root, state=self.state)
        assert again.status == 0 and again.events == [], again.events
        assert WARNING not in again.stderr, "a rescan warned again about a link already reported"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """``site/`` to watch, and next to it ``secret`` (mode 0600, like /etc/shadow)."""
    root = tmp_path / "site"
    root.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    yield root


def skipped_created(ev: Event) -> bool:
    """A link reported as not published: created, with error and the reason."""
    return (
        ev["kind"] == "created"
        and ev.get("skipped") == "symlink-outside-root"
        and ev.get("error_kind") == "source"
        and "outside the source root" in ev.get("error", "")
    )


def by_rel(events: list[Event]) -> dict[bytes, Event]:
    return {rel_of(ev): ev for ev in events}


def published(ev: Event) -> bool:
    return ev["kind"] != "deleted" and "error" not in ev


def test_link_to_an_outside_file_is_never_published(fc: Launcher, mode: str, site: Path) -> None:  # noqa: F811
    make_files(site, ["a.css", "sub/b.css"], age_s=OLD)
    os.symlink("../secret", site / "innocent.css")  # relative, leaving the root
    os.symlink(str(site.parent / "secret"), site / "sub" / "abs.css")  # absolute
    os.symlink("../a.css", site / "sub" / "inside.css")  # inside: published as a.css's content
    os.symlink("sub/../../secret", site / "sneaky.css")  # through a directory of the tree, then out
    os.symlink("/nonexistent/x", site / "dangling.css")  # not a file: nothing, quietly
    os.symlink("loop2", site / "loop1")  # a loop of links: not a file, quietly
    os.symlink("loop1", site / "loop2")
    w = Watch(fc, mode, site)
    bad = ["innocent.css", "sub/abs.css", "sneaky.css"]
    got = by_rel(w.first(expect("created", ["a.css", "sub/b.css", "sub/inside.css", *bad])))
    for rel in bad:
        ev = got[rel.encode()]
        assert skipped_created(ev), ev
        assert ev["size"] != len(SECRET), "the outside file's metadata leaked into the event"
    inside = got[b"sub/inside.css"]
    assert published(inside) and inside["size"] == 4 and inside["ino"] == os.stat(site / "a.css").st_ino

    # A link made while fc-watch runs (a live event, or the next scan) is judged the same.
    new = w.then(lambda: os.symlink("../../secret", site / "sub" / "late.css"), expect("created", ["sub/late.css"]))
    assert skipped_created(new[0]), new
    warnings = w.warnings()
    for rel in [*bad, "sub/late.css"]:
        assert sum(f"site/{rel} is a symlink to " in line for line in warnings) == 1, warnings
    assert len(warnings) == 4, warnings  # once per link, not on every rescan; none for dangling or loops
    assert all(str(site.parent / "secret") in line for line in warnings)
    w.close()


def test_published_file_swapped_for_an_outside_link_is_deleted(fc: Launcher, mode: str, site: Path) -> None:  # noqa: F811
    make_files(site, ["page.css", "keep.css"], age_s=OLD)
    w = Watch(fc, mode, site)
    w.first(expect("created", ["page.css", "keep.css"]))

    def swap() -> None:  # atomically, as an attacker (or a careless deploy) would
        os.symlink(str(site.parent / "secret"), site.parent / "tmp-link")
        os.replace(site.parent / "tmp-link", site / "page.css")

    # The path no longer names content of the tree: its published copies must go.
    gone = w.then(swap, expect("deleted", ["page.css"]))
    assert gone[0]["skipped"] == "symlink-outside-root" and "error" not in gone[0], gone
    assert len(w.warnings()) == 1 and "published copies are deleted" in w.warnings()[0], w.warnings()

    # Replaced by a real file again: created (it was not published meanwhile).
    def restore() -> None:
        (site.parent / "new").write_bytes(b"real again")
        os.replace(site.parent / "new", site / "page.css")

    back = w.then(restore, expect("created", ["page.css"]))
    assert published(back[0]) and back[0]["size"] == len(b"real again")

    # A skipped link replaced by a real file is created too; a skipped link removed is deleted.
    w.then(lambda: os.symlink("../secret", site / "x.css"), expect("created", ["x.css"]))
    # (replaced in one step: removed, then written, a poll between the two saw it deleted first, rightly)
    w.then(
        lambda: ((site.parent / "mine").write_bytes(b"mine"), os.replace(site.parent / "mine", site / "x.css")),
        expect("created", ["x.css"]),
    )
    w.close()


def test_directory_swapped_for_a_symlink_is_gone(fc: Launcher, mode: str, site: Path) -> None:  # noqa: F811
    outside = site.parent / "elsewhere"
    make_files(outside, ["f.txt", "secret.txt"], data=SECRET)
    make_files(site, ["sub/f.txt", "sub/deeper/g.txt", "top.txt"], age_s=OLD)
    w = Watch(fc, mode, site)
    w.first(expect("created", ["sub/f.txt", "sub/deeper/g.txt", "top.txt"]))

    def swap() -> None:
        shutil.rmtree(site / "sub")
        os.symlink("../elsewhere", site / "sub")

    # Without --follow-symlinks nothing below a symlinked directory is in the tree: the
    # files that were there are deleted, and what the link leads to is not reported.
    got = w.then(swap, expect("deleted", ["sub/f.txt", "sub/deeper/g.txt"]))
    assert all(ev["kind"] == "deleted" for ev in got)
    # Files appearing behind the link later are not reported either.
    w.then(lambda: make_files(outside, ["later.txt"], data=SECRET), Counter())
    w.close()


def test_follow_symlinks_stays_within_the_followed_directory(fc: Launcher, mode: str, site: Path) -> None:  # noqa: F811
    shared = site.parent / "shared"  # a deploy's shared assets, outside the release: opted into
    make_files(shared, ["ok.css", "img/logo.png"], age_s=OLD)
    os.symlink("../secret", shared / "evil.css")  # out of the followed directory and of the root
    os.symlink("ok.css", shared / "alias.css")  # within the followed directory
    os.symlink("../site/a.css", shared / "back.css")  # back into the root
    make_files(site, ["a.css"], age_s=OLD)
    os.symlink("../shared", site / "assets")
    os.symlink(".", site / "self")  # a loop: never entered
    w = Watch(fc, mode, site, "--follow-symlinks")
    ok = ["a.css", "assets/ok.css", "assets/img/logo.png", "assets/alias.css", "assets/back.css"]
    got = by_rel(w.first(expect("created", [*ok, "assets/evil.css"])))
    assert skipped_created(got[b"assets/evil.css"]), got[b"assets/evil.css"]
    assert all(published(got[r.encode()]) for r in ok)

    # live (or next scan): a new link inside the followed directory, leading out, then one within
    evil2 = w.then(
        lambda: os.symlink(str(site.parent / "secret"), shared / "evil2.css"), expect("created", ["assets/evil2.css"])
    )
    assert skipped_created(evil2[0]), evil2
    good = w.then(lambda: os.symlink("img/logo.png", shared / "logo.png"), expect("created", ["assets/logo.png"]))
    assert published(good[0])
    assert len(w.warnings()) == 2, w.warnings()
    w.close()


def test_follow_symlinks_directory_link_repointed_or_removed(fc: Launcher, mode: str, site: Path) -> None:  # noqa: F811
    """A followed directory link re-pointed elsewhere: what was below it is deleted and what is below
    the new target created (inotify reports only "a file changed" for a link)."""
    make_files(site.parent / "v1", ["a.css", "sub/x.css"], age_s=OLD)
    make_files(site.parent / "v2", ["b.css"], age_s=OLD)
    os.symlink("../v1", site / "assets")
    w = Watch(fc, mode, site, "--follow-symlinks")
    w.first(expect("created", ["assets/a.css", "assets/sub/x.css"]))

    def repoint() -> None:
        os.symlink("../v2", site.parent / "tmp-link")  # made outside, moved in: one atomic change
        os.replace(site.parent / "tmp-link", site / "assets")

    w.then(repoint, expect("deleted", ["assets/a.css", "assets/sub/x.css"]) + expect("created", ["assets/b.css"]))
    w.then(lambda: os.unlink(site / "assets"), expect("deleted", ["assets/b.css"]))
    w.then(lambda: make_files(site.parent / "v1", ["later.css"]), Counter())  # no longer followed: not watched
    w.close()


# -- end to end ------------------------------------------------------------------------------------


def _fc(cmd: str) -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, str(ROOT / "bin" / cmd)])


def _pipeline(root: Path, dest: Path, state: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    watch = f"{_fc('fc-watch')} --scan-once --settle 0 --state {shlex.quote(str(state))} {shlex.quote(str(root))}"
    trans = f"{_fc('fc-transport')} --to {shlex.quote('file://' + str(dest))} --url http://cdn.example/"
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{watch} | {trans}"], capture_output=True, env=env, timeout=120
    )


def _leaks(dest: Path) -> list[Path]:
    """Files of the destination holding the secret's bytes (links followed, as a web server would)."""
    out = []
    for p in dest.rglob("*"):
        try:
            if p.is_file() and SECRET in p.read_bytes():
                out.append(p)
        except OSError:
            pass
    return out


def test_scan_once_into_fc_transport_never_publishes_the_outside_file(site: Path, tmp_path: Path) -> None:
    dest, state = tmp_path / "cdn", tmp_path / "watch.db"
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state"), "PYTHONDONTWRITEBYTECODE": "1"}
    make_files(site, ["a.css", "page.css", "css/b.css"], age_s=OLD)
    os.symlink(str(site.parent / "secret"), site / "innocent.css")
    os.symlink("../../secret", site / "css" / "shadow.css")
    os.symlink("../a.css", site / "css" / "same.css")  # inside: published with a.css's bytes
    first = _pipeline(site, dest, state, env)
    assert first.returncode == 0, first.stderr.decode()
    out = [json.loads(line) for line in first.stdout.splitlines()]
    assert sorted(ev["rel"] for ev in out if ev.get("transported") == "uploaded") == [
        "a.css",
        "css/b.css",
        "css/same.css",
        "page.css",
    ]
    skipped = sorted(ev["rel"] for ev in out if ev.get("skipped"))
    assert skipped == ["css/shadow.css", "innocent.css"]
    assert all("transported" not in ev and ev["error_kind"] == "source" for ev in out if ev.get("skipped"))
    assert not (dest / "innocent.css").exists() and not (dest / "css" / "shadow.css").exists()
    assert (dest / "css" / "same.css").read_bytes() == b"data"
    assert _leaks(dest) == []

    # A published file swapped for a link to the secret: the published copy goes, nothing leaks.
    os.symlink(str(site.parent / "secret"), tmp_path / "tmp-link")
    os.replace(tmp_path / "tmp-link", site / "page.css")
    second = _pipeline(site, dest, state, env)
    assert second.returncode == 0, second.stderr.decode()
    out = [json.loads(line) for line in second.stdout.splitlines()]
    assert [(ev["kind"], ev["rel"], ev.get("transported")) for ev in out] == [("deleted", "page.css", "deleted")]
    assert not (dest / "page.css").exists()
    assert _leaks(dest) == []
    assert b"outside the source root" in second.stderr


def test_a_restart_sends_skipped_events_again_as_they_were(site: Path, tmp_path: Path) -> None:
    """After a crash, fc-watch re-sends from its state file the lines whose delivery is uncertain:
    a skipped link's line must come back the same (created with error, or deleted), not as a file."""
    state = tmp_path / "w.db"
    argv = ["--scan-once", "--settle", "0", "--state", str(state), str(site)]
    make_files(site, ["page.css"], age_s=OLD)
    assert call(watch_main, argv).status == 0
    os.symlink("../secret", site / "innocent.css")
    os.symlink(str(site.parent / "secret"), tmp_path / "tmp-link")
    os.replace(tmp_path / "tmp-link", site / "page.css")
    second = call(watch_main, argv)
    assert second.status == 0, second.stderr
    sent = [json.loads(line) for line in second.stdout.splitlines()]
    assert {(ev["kind"], ev["rel"], ev.get("skipped")) for ev in sent} == {
        ("deleted", "page.css", "symlink-outside-root"),
        ("created", "innocent.css", "symlink-outside-root"),
    }
    replayed = io.BytesIO()
    ws = WatchState(state, stdout_writer(replayed))
    try:
        ws.replay(after=0)
    finally:
        ws.close()
    again = [json.loads(line) for line in replayed.getvalue().splitlines()]

    def same(ev: Event) -> Event:
        return {k: v for k, v in ev.items() if k not in ("via", "hop")}

    assert sorted(map(same, again), key=lambda ev: ev["rel"]) == sorted(map(same, sent), key=lambda ev: ev["rel"])


def test_import_queue_judges_symlinks_as_fc_watch_does(site: Path, tmp_path: Path) -> None:
    """fc-record --import-queue writes events as fc-watch would: a queued path that is now a symlink
    leading outside becomes a deletion saying why (the old daemon may have published it), never a file."""
    make_files(site, ["a.css"])
    os.symlink(str(site.parent / "secret"), site / "innocent.css")
    os.symlink("a.css", site / "inside.css")
    old = tmp_path / "persistent_data.db"
    root = bytes(site)
    queue = [py2_pickle(root + b"/innocent.css", 1), py2_pickle(root + b"/inside.css", 1)]
    old_queue_db(old, {"pipeline_queue": queue})
    res = call(record_main, ["--import-queue", str(old), "--source", f"site={site}"])
    assert res.status == 0, res.stderr
    got = {ev["rel"]: ev for ev in map(json.loads, res.stdout.splitlines())}
    assert got["innocent.css"]["kind"] == "deleted" and got["innocent.css"]["skipped"] == "symlink-outside-root"
    assert "size" not in got["innocent.css"]
    assert (
        got["inside.css"]["kind"] == "created" and got["inside.css"]["size"] == 4 and "skipped" not in got["inside.css"]
    )
