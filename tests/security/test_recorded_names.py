"""The record fc-transport asks for a deletion's name (--record-db) is read, not trusted: fc-record stores what a
line a hop before it said, an imported row holds what the old daemon's file held, and a SQLite column takes any
type.  A row whose name is not text, or whose base name (an old daemon's row: rel's directory + base name) is not
one, names nothing: a warning, nothing deleted, the stage goes on.  And a careless --record-db (a directory, a file
that is no record) stops fc-transport at its start with a message, where it failed every deletion ('unexpected
failure') or retried it for ever (a directory: 'disk I/O error, free some space'); a record not there (yet, or a
misspelt path) is named in the warning of a deletion left undone.  Real fc-transport, a real local destination, a
real SQLite record file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.transport.conftest import env, event, jsonl, lines, transport  # noqa: F401 - fixture

ADMIN = b"the administrator's own\n"


def _site(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (dest / "css" / "sub").mkdir(parents=True)
    for name in ("index.html", "css/sub/index.html", "css/keep.css"):
        (dest / name).write_bytes(ADMIN)
    args = ["--to", "file://" + quote(str(dest)) + "?name=cdn", "--source", f"site={src}", "--drain-timeout", "10"]
    return src, dest, [*args, "--state", str(tmp_path / "t.db")]


def _record(path: Path, src: Path, remote: object, rel: object, basename: object) -> None:
    """A record with one row for src/css/gone.css on cdn (no declared types: what a hostile file may hold)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE synced_files(input_file text, transported_file_basename, url, server, remote, rel)")
        db.execute(
            "INSERT INTO synced_files VALUES (?, ?, ?, ?, ?, ?)",
            (str(src / "css" / "gone.css"), basename, "http://cdn.example/x", "cdn", remote, rel),
        )
    db.close()


def _files(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("remote", "rel", "basename"),
    [
        # an old daemon's row: a base name holding '/' (safe_rel lets css/sub/index.html through; '..' and '.' it
        # refuses itself, as it does an absolute or NUL-holding remote)
        (None, "css/gone.css", "sub/index.html"),
        (5, None, None),  # not text
        (None, 7, "keep.css"),
    ],
)
def test_a_recorded_name_that_is_not_one_deletes_nothing(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    remote: object,
    rel: object,
    basename: object,
) -> None:
    src, dest, args = _site(tmp_path)
    db = tmp_path / "record.db"
    _record(db, src, remote, rel, basename)
    res = transport([*args, "--record-db", str(db)], env, jsonl([event(src, "css/gone.css", "deleted", source="site")]))
    err = res.stderr.decode()
    assert res.returncode == 0, err
    assert lines(res.stdout) == []
    assert _files(dest) == ["css/keep.css", "css/sub/index.html", "index.html"], err
    assert "the name --record-db holds for it on cdn is refused" in err
    assert "not deleted from cdn" in err


def test_a_recorded_old_daemon_name_is_deleted(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    """The row the refusals above must not break: rel's directory and a plain base name."""
    src, dest, args = _site(tmp_path)
    db = tmp_path / "record.db"
    _record(db, src, None, "css/gone.css", "keep.css")
    res = transport([*args, "--record-db", str(db)], env, jsonl([event(src, "css/gone.css", "deleted", source="site")]))
    assert res.returncode == 0, res.stderr.decode()
    assert [(e["remote"], e["transported"]) for e in lines(res.stdout)] == [("css/keep.css", "deleted")]
    assert _files(dest) == ["css/sub/index.html", "index.html"]


@pytest.mark.parametrize("what", ["directory", "not a database"])
def test_a_record_db_that_is_no_record_stops_at_start(tmp_path: Path, env: dict[str, str], what: str) -> None:  # noqa: F811
    src, dest, args = _site(tmp_path)
    db = tmp_path / "record.db"
    if what == "directory":
        db.mkdir()
    else:
        db.write_bytes(b"fc-record's? no: a note\n" * 100)
    res = transport([*args, "--record-db", str(db)], env, jsonl([event(src, "css/gone.css", "deleted", source="site")]))
    err = res.stderr.decode()
    assert res.returncode == 3, err  # a configuration to fix (errors.Exit.CONFIG)
    assert str(db) in err and "unexpected" not in err
    assert _files(dest) == ["css/keep.css", "css/sub/index.html", "index.html"]


def test_a_record_db_not_there_is_named(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src, _, args = _site(tmp_path)
    typo = tmp_path / "recrod.db"
    gone = jsonl([event(src, "css/gone.css", "deleted", source="site")])
    res = transport([*args, "--record-db", str(typo)], env, gone)
    err = res.stderr.decode()
    assert res.returncode == 0, err
    assert f"--record-db {typo} is not there" in err
    assert not typo.exists()  # read only: never made
