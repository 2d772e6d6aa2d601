"""fc-record's row of a synced event (stage.synced_row) reads plain string fields as they are, not through bytes
and back: the row is the one the bytes give, for names that are UTF-8 and for names that are not."""

from __future__ import annotations

import json

import pytest

from fileconveyor import events as E
from fileconveyor.records import db_key
from fileconveyor.stages.record.rows import synced_row, synced_values


def by_bytes(ev: dict) -> dict:
    """What each path field's bytes give (db_key of E.get_path), as before the shortcut."""
    path = E.get_path(ev, "path")
    remote = E.get_path(ev, "remote") if ("remote" in ev or "remote_b64" in ev) else None
    if remote is not None:
        basename = remote.rsplit(b"/", 1)[-1]
    elif "name" in ev or "name_b64" in ev:
        basename = E.get_path(ev, "name")
    else:
        basename = path.rsplit(b"/", 1)[-1]
    return {
        "input_file": db_key(path),
        "basename": db_key(basename),
        "remote": db_key(remote) if remote is not None else None,
        "root": db_key(E.get_path(ev, "root")),
        "rel": db_key(E.get_path(ev, "rel")),
    }


NAMES = [b"/r/d/f.css", "/r/dé/ü n.css".encode(), b"/r/\xff/ok.css", b"/r/d/\xfe\xff.css", "/r/日本/語.png".encode()]


@pytest.mark.parametrize("raw", NAMES)
@pytest.mark.parametrize("extra", ["none", "remote", "name"])
def test_a_synced_row_is_what_the_bytes_of_its_fields_give(raw: bytes, extra: str) -> None:
    ev: dict = {"v": 1, "kind": "created", "server": "s1", "url": "https://cdn/x", "size": 3, "mtime_ns": "12"}
    E.put_path(ev, "path", raw)
    E.put_path(ev, "root", b"/r")
    E.put_path(ev, "rel", raw[3:])
    if extra == "remote":
        E.put_path(ev, "remote", b"out/" + raw[3:])
    elif extra == "name":
        E.put_path(ev, "name", raw.rsplit(b"/", 1)[-1] + b".v2")
    ev = E.decode(E.encode(ev))  # as read from a line
    row = synced_row(ev)
    assert {k: getattr(row, k) for k in ("input_file", "basename", "remote", "root", "rel")} == by_bytes(ev)
    assert (row.size, row.mtime_ns, row.server) == (3, 12, "s1")
    assert json.loads(E.encode(ev))["path"] == ev["path"]


@pytest.mark.parametrize("raw", NAMES)
@pytest.mark.parametrize("extra", ["none", "remote", "name", "processed", "work file", "odd types"])
def test_the_values_fc_record_writes_are_the_rows(raw: bytes, extra: str, tmp_path) -> None:
    """synced_values (the plain path, every synced line) gives exactly the columns of synced_row's row, whichever
    path fields need their bytes and whichever optional fields come."""
    ev: dict = {"v": 1, "kind": "created", "server": "s1", "url": "https://cdn/x", "size": 3, "mtime_ns": "12"}
    E.put_path(ev, "path", raw)
    E.put_path(ev, "root", b"/r")
    E.put_path(ev, "rel", raw[3:])
    E.put_path(ev, "remote", b"out/" + raw[3:])
    ev.update(ino=7, hash="sha256:ab", source="site", id="e" * 32)
    if extra == "none":
        del ev["remote"]
        ev.pop("remote_b64", None)
    elif extra == "name":
        del ev["remote"]
        ev.pop("remote_b64", None)
        E.put_path(ev, "name", raw.rsplit(b"/", 1)[-1] + b".v2")
    elif extra == "processed":
        ev.update(processed=["filename.SpacesToUnderscores"], remote_size=5)
    elif extra == "work file":
        work = tmp_path / "work"
        work.write_bytes(b"12345678")
        E.put_path(ev, "file", bytes(work))
    elif extra == "odd types":
        ev.update(size=None, ino=None, mtime_ns=12, hash=None, processed=[], id=None)
    ev = E.decode(E.encode(ev))  # as read from a line
    assert synced_values(ev, 1.5) == synced_row(ev).values(1.5)
