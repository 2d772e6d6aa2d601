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
