"""fc-record --delete-source-after deletes only beneath the source roots it is given (issue 16, finding 4).

Events are forgeable: a ``rel`` with ``../``, a ``root`` outside the source, a directory of the source that is a
symlink (what ``fc-watch --follow-symlinks`` reports files under), or a file swapped after it was synced must
never make fc-record delete anything but the very file it synced, beneath ``--source NAME=DIR``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.records import Records
from fileconveyor.roots import Source
from fileconveyor.stages.record.delete import SourceDeleter
from tests.record.conftest import make_site, record, transport, watch

NOW = ("--delete-source-after", "0", "--require-server", "cdn", "--drain-timeout", "10")


def _setup(tmp_path: Path) -> tuple[Path, Path, dict]:
    """The site, a folder outside it holding a victim file, and fc-watch's real event for css/a.css."""
    site = make_site(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("not yours to delete\n")
    a = next(e for e in watch(site, tmp_path / "w.db") if e["rel"] == "css/a.css")
    return site, outside, a


def _forged(model: dict, root: Path, rel: str, target: Path) -> dict:
    """``model`` (a real fc-watch event) made to point at ``target`` with this root and rel; its version is the
    target's, as an attacker who can stat it would write."""
    ev = {k: v for k, v in model.items() if k != "hop"}
    st = os.stat(target)
    E.put_path(ev, "root", os.fsencode(root))
    E.put_path(ev, "rel", rel.encode())
    E.put_path(ev, "path", E.join(os.fsencode(root), rel.encode()))
    ev.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino)
    return ev


def _run(tmp_path: Path, site: Path, evs: list[dict]) -> str:
    res = record(tmp_path / "s.db", transport(evs, None), tmp_path / "r.db", "--source", f"site={site}", *NOW)
    assert res.status == 0, res.stderr
    return res.stderr


def test_the_synced_file_itself_is_still_deleted(tmp_path: Path) -> None:
    site, outside, a = _setup(tmp_path)
    _run(tmp_path, site, [a])
    assert not (site / "css" / "a.css").exists()
    assert (site / "css" / "b.css").exists() and (outside / "victim.txt").exists()


def test_a_rel_with_dot_dot_deletes_nothing(tmp_path: Path) -> None:
    site, outside, a = _setup(tmp_path)
    err = _run(tmp_path, site, [_forged(a, site, "../outside/victim.txt", outside / "victim.txt")])
    assert (outside / "victim.txt").exists()
    assert "never deleted at the source" in err, err


def test_a_forged_root_deletes_nothing(tmp_path: Path) -> None:
    site, outside, a = _setup(tmp_path)
    err = _run(tmp_path, site, [_forged(a, outside, "victim.txt", outside / "victim.txt")])
    assert (outside / "victim.txt").exists()
    assert "never deleted at the source" in err and "--source" in err, err


def test_files_under_a_symlinked_directory_of_the_source_are_not_deleted(tmp_path: Path) -> None:
    site, outside, a = _setup(tmp_path)
    (site / "linked").symlink_to(outside, target_is_directory=True)
    # what fc-watch --follow-symlinks reports for the files of that directory (made here if it no longer does)
    res = watch_follow(site, tmp_path / "wf.db")
    ev = next((e for e in res if e["rel"] == "linked/victim.txt"), None)
    ev = ev or _forged(a, site, "linked/victim.txt", outside / "victim.txt")
    err = _run(tmp_path, site, [ev])
    assert (outside / "victim.txt").exists(), "the symlinked directory's target was emptied"
    assert "symlink" in err, err


def watch_follow(site: Path, state: Path) -> list[dict]:
    from fileconveyor.cli import watch as watch_cli
    from tests.conftest import call
    from tests.record.conftest import decode

    res = call(watch_cli.main, ["--scan-once", "--follow-symlinks", "--state", str(state), f"site={site}"])
    return decode(res.stdout)


def test_a_file_swapped_for_a_symlink_after_sync_stays(tmp_path: Path) -> None:
    site, outside, a = _setup(tmp_path)
    db, state = tmp_path / "s.db", tmp_path / "r.db"
    later = ("--source", f"site={site}", "--require-server", "cdn", "--drain-timeout", "10")
    assert record(db, transport([a], None), state, "--delete-source-after", "3600", *later).status == 0
    # swapped before it falls due: the synced file moved away, a symlink to it in its place (same version
    # through the link)
    shutil.move(site / "css" / "a.css", outside / "a.css")
    (site / "css" / "a.css").symlink_to(outside / "a.css")
    Records(db).db.execute("UPDATE source_deletions SET due_at = 0")
    assert record(db, [], state, "--delete-source-after", "3600", *later).status == 0
    assert (site / "css" / "a.css").is_symlink() and (outside / "a.css").exists()


def test_a_file_swapped_between_the_check_and_the_unlink_stays(tmp_path: Path) -> None:
    site, _, a = _setup(tmp_path)
    db, state = tmp_path / "s.db", tmp_path / "r.db"
    args = ("--source", f"site={site}", "--delete-source-after", "3600", "--require-server", "cdn")
    assert record(db, transport([a], None), state, *args, "--drain-timeout", "0").status == 0
    rec = Records(db)
    (owner,) = rec.db.execute("SELECT owner FROM source_deletions").fetchone()
    d = rec.deletion(a["path"])
    assert d is not None
    # after the deleter's checks, before its unlink: another file (another inode) under the same name
    css = site / "css" / "a.css"
    css.rename(site / "css" / "old.css")
    css.write_text("body { color: red }\n")
    notes: list[str] = []
    deleter = SourceDeleter(str(db), owner, lambda: ["cdn"], notes.append, notes.append)
    deleter.sources = [Source("site", os.fsencode(site))]
    try:
        deleter._unlink(d, os.fsencode(css))
    finally:
        deleter.close()
        rec.close()
    assert css.exists(), "a file that is not the synced version was deleted"
    assert any("not deleted" in n for n in notes), notes


def test_the_walk_beneath_a_root_refuses_every_way_out(tmp_path: Path) -> None:
    from fileconveyor.beneath import OutsideRoot, parent_dir

    site, outside, _ = _setup(tmp_path)
    (site / "linked").symlink_to(outside, target_is_directory=True)
    (site / "css" / "up").symlink_to("..", target_is_directory=True)
    root = os.fsencode(site)
    for rel in (b"../outside/victim.txt", b"/etc/passwd", b"css/../../outside/victim.txt", b"css//a.css", b"",
                b"./css/a.css", b"linked/victim.txt", b"css/up/css/a.css", b"index.html/x"):  # fmt: skip
        with pytest.raises(OutsideRoot), parent_dir(root, rel):
            pass
    with parent_dir(root, b"css/a.css") as (fd, name):
        assert name == b"a.css" and os.stat(name, dir_fd=fd).st_ino == os.stat(site / "css" / "a.css").st_ino


def test_delete_source_after_needs_the_source_trees(tmp_path: Path) -> None:
    site, _, a = _setup(tmp_path)
    db, state = tmp_path / "s.db", tmp_path / "r.db"
    res = record(db, transport([a], None), state, *NOW)
    assert res.status == 2 and "--source NAME=DIR" in res.stderr, res.stderr
    res = record(db, transport([a], None), state, "--source", f"site={tmp_path / 'nowhere'}", *NOW)
    assert res.status == 3 and "not a directory" in res.stderr, res.stderr
    assert (site / "css" / "a.css").exists()
