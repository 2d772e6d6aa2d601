"""fc-record's row of a synced event (stage.synced_row) reads plain string fields as they are, not through bytes
and back: the row is the one the bytes give, for names that are UTF-8 and for names that are not."""

from __future__ import annotations

import json

import pytest

from fileconveyor import events as E
from fileconveyor.records import db_key
from fileconveyor.stages.record.stage import synced_row


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
