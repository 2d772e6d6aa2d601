"""The checks of make scale-chaos (tests/broker/scale_chaos.py) find what they are meant to find: a checker
that passes everything would make the chaos run's "0 order violations" meaningless."""

from __future__ import annotations

from pathlib import Path

from tests.broker.scale_chaos import Report, VersionedMutator, check_order, processed, version
from tests.durability.chaos_dupes import Upload


def up(at: float, name: str, v: int | None, digest: str | None = None) -> Upload:
    head = b"v=%09d\n" % v if v is not None else b"no stamp"
    return Upload(at, name, digest if digest is not None else f"h{v}", head=head if digest != "-" else b"")


def gone(at: float, name: str) -> Upload:
    return Upload(at, name, None)


def test_versions_going_up_and_repeats_are_no_violation() -> None:
    r = Report()
    check_order([up(1, "a", 1), up(2, "a", 3), up(3, "a", 3), up(4, "b", 2), gone(5, "a")], r)
    assert (r.older, r.resurrected) == ([], [])


def test_an_older_version_after_a_newer_one_is_a_violation_whatever_the_order_of_the_list() -> None:
    r = Report()
    check_order([up(3, "a", 4), up(1, "a", 2), up(2, "a", 5), up(4, "b", 1)], r)
    assert r.older == ["a: v4 after v5"]


def test_an_upload_after_the_name_was_deleted_is_a_violation() -> None:
    r = Report()
    check_order([up(1, "a", 1), gone(2, "a"), up(3, "a", 1), up(4, "b", 1)], r)
    assert (r.resurrected, r.older) == (["a"], [])


def test_an_unstamped_upload_neither_hides_nor_invents_a_violation() -> None:
    r = Report()
    check_order([up(1, "a", 5), up(2, "a", None), up(3, "a", 4)], r)
    assert r.older == ["a: v4 after v5"]


def test_the_mutator_stamps_every_write_with_a_larger_version_that_processing_keeps(tmp_path: Path) -> None:
    import random

    mut = VersionedMutator(tmp_path, random.Random(3))
    mut.populate(5)
    seen = []
    for _ in range(60):
        mut.step()
        seen += [version(processed(p.read_bytes())[:16]) for p in tmp_path.rglob("*") if p.is_file()]
    assert None not in seen and max(seen) == mut.version > 5
