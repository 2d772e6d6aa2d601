"""The classes that replaced dataclasses on a stage's path (fileconveyor/plain.py) keep what the dataclasses gave:
value equality and repr, read-only values that hash and pickle, ``replace``, an order where there was one."""

from __future__ import annotations

import pickle

import pytest

from fileconveyor.delivery.durable import Hop
from fileconveyor.delivery.stage import Done, Retry
from fileconveyor.sourcefile import Source
from fileconveyor.stages.transport.old import Pending
from fileconveyor.transporters.base import RemoteStat
from fileconveyor.transporters.destination import parse_destination


def test_values_compare_by_their_fields_and_mutable_ones_do_not_hash() -> None:
    assert Hop("/s/a.db", "e1", 3) == Hop("/s/a.db", "e1", 3) != Hop("/s/a.db", "e1", 4)
    assert Done([{"a": 1}], unchanged=True) == Done([{"a": 1}], unchanged=True) != Done([{"a": 1}])
    assert Retry("later", after=1.0) != Retry("later", after=2.0)
    assert repr(Hop("o", "e", 1)) == "Hop(origin='o', epoch='e', seq=1)"
    with pytest.raises(TypeError):
        hash(Hop("o", "e", 1))


def test_a_source_is_read_only_hashes_pickles_and_replace_copies_it() -> None:
    src = Source(b"/site", b"css/a.css", ino=7, size=10, mtime_ns=5)
    with pytest.raises(AttributeError):
        src.root = b"/elsewhere"  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(src))  # the isolated transporters' workers get it so
    assert again == src and hash(again) == hash(src)
    moved = src.replace(root=b"/other", links_out_ok=True)
    assert (moved.root, moved.rel, moved.ino, moved.links_out_ok) == (b"/other", b"css/a.css", 7, True)
    assert src.root == b"/site" and moved != src


def test_a_destination_never_shows_or_compares_its_secrets_and_replace_keeps_them() -> None:
    one = parse_destination("ftp://www@host/htdocs", env={"FC_PASSWORD": "s3cret"})
    other = parse_destination("ftp://www@host/htdocs", env={"FC_PASSWORD": "another"})
    assert "s3cret" not in repr(one) and one == other
    copy = one.replace(settings={"passive": "no"})
    assert copy.secret("password") == "s3cret" and copy.flag("passive", True) is False
    assert pickle.loads(pickle.dumps(one)).secret("password") == "s3cret"
    with pytest.raises(AttributeError):
        one.host = "elsewhere"  # type: ignore[misc]


def test_a_remote_stat_hashes_and_an_old_name_is_ordered_by_due_then_row() -> None:
    assert {RemoteStat(5, 1.0): 1}[RemoteStat(5, 1.0)] == 1
    late, early, same_time = Pending(2.0, 1, "s", b"a"), Pending(1.0, 9, "s", b"b"), Pending(1.0, 3, "s", b"c")
    assert sorted([late, early, same_time]) == [same_time, early, late]
    assert early > same_time and early <= Pending(1.0, 9, "t", b"z") == early
