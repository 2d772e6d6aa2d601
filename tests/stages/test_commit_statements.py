"""The commit of a round (delivery/commit.py) runs a fixed number of statements whatever its number of lines:
rows go in by one executemany per table, not a statement per line."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileconveyor.delivery import durable
from fileconveyor.delivery.runner import Done, Item, Retry, Stage
from tests.stages.test_runner import ev, lines, run


class _Counted:
    """A connection that notes each statement a commit runs through it, and how (execute or executemany)."""

    def __init__(self, db: sqlite3.Connection, calls: list[tuple[str, str]]):
        self._db, self._calls = db, calls

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._db, name)
        if name not in ("execute", "executemany"):
            return attr

        def call(sql: str, *args: object) -> object:
            self._calls.append((name, " ".join(sql.split())[:30]))
            return attr(sql, *args)

        return call


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    noted: list[tuple[str, str]] = []
    transaction = durable.StageState.transaction

    @contextlib.contextmanager
    def counted(self: durable.StageState) -> Iterator[sqlite3.Connection]:
        with transaction(self) as db:
            yield _Counted(db, noted)  # type: ignore[misc]

    monkeypatch.setattr(durable.StageState, "transaction", counted)
    return noted


class LaterTwice(Stage):
    """Inline: each item is retried twice (the second time with its inbox row there to update), then passed on."""

    name = "fc-test"

    def work(self, item: Item) -> Done | Retry:
        if item.attempts < 2:
            return Retry("not yet", after=0.001)
        return Done([item.event], unchanged=True)


def test_a_rounds_retried_items_are_updated_by_one_statement(tmp_path: Path, calls: list[tuple[str, str]]) -> None:
    n = 300
    status, out, err = run(LaterTwice(), lines([ev(f"f{i}") for i in range(n)]), tmp_path / "s.db")
    assert status == 0, err
    assert sorted(e["rel"] for e in out) == sorted(f"f{i}" for i in range(n))
    updates = [how for how, sql in calls if sql.startswith("UPDATE inbox")]
    # before: an execute per retried item whose row was there (300); now one executemany per round
    assert "execute" not in updates and 1 <= len(updates) <= 20, updates
    # and every other row of a round by one statement a table: a few dozen statements for 300 lines, 3 times
    assert len(calls) < 150, calls


def test_fc_transports_remote_names_rows_go_in_by_one_statement_a_round(
    tmp_path: Path, calls: list[tuple[str, str]]
) -> None:
    """fc-transport's record() gathers each uploaded file's remote_names row; the commit writes them with one
    executemany (Stage.recorded), not an execute per file, and every file still has its row; a deletion in the
    same run removes its path's row (the rows gathered before it are in first)."""
    from fileconveyor.stages.transport.dest import targets_from
    from fileconveyor.stages.transport.stage import TransportStage
    from tests.transport.conftest import event, jsonl

    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    n = 200
    for i in range(n):
        (src / f"f{i}.txt").write_bytes(b"x" * i)
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, out, err = run(stage, jsonl([event(src, f"f{i}.txt") for i in range(n)]), tmp_path / "t.db")
    assert status == 0, err
    assert len(out) == n
    upserts = [how for how, sql in calls if sql.startswith("INSERT INTO remote_names")]
    # before: an execute per file (200)
    assert "execute" not in upserts and 1 <= len(upserts) <= 20, upserts
    # a second run: f0 deleted, the others changed
    (src / "f0.txt").unlink()
    for i in range(1, n):
        (src / f"f{i}.txt").write_bytes(b"y" * i)
    events = [event(src, "f0.txt", kind="deleted")] + [event(src, f"f{i}.txt", kind="modified") for i in range(1, n)]
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, out, err = run(stage, jsonl(events), tmp_path / "t.db")
    assert status == 0, err
    assert len(out) == n
    assert (dest / "f1.txt").read_bytes() == b"y"
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as db:
        rows = sorted(bytes(p).decode() for (p,) in db.execute("SELECT path FROM remote_names"))
    assert rows == sorted(str(src / f"f{i}.txt") for i in range(1, n))
