"""A round's outbox lines are one row (durable.StageState.add_outbox: a run of consecutive seqs keyed by its last
seq, ``n`` lines joined), read back line by line with their seqs: replays from any seq, pruning by whole rows,
the highest seq, and state files of the version before, whose rows are a line each (issue 18: a row a line cost
2-3 us of every line in every durable stage)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fileconveyor import state as S
from fileconveyor.delivery import ack_check, acks, durable
from fileconveyor.delivery.durable import StageState, outbox_lines


def line(seq: int) -> bytes:
    return b'{"v":1,"kind":"created","path":"/r/%d"}\n' % seq


def add(st: StageState, seqs: list[int]) -> None:
    with st.transaction() as db:
        st.add_outbox(db, [(seq, line(seq)) for seq in seqs])
    st.next_seq = max(st.next_seq, seqs[-1] + 1)  # (as StageState.hop gives them)


def rows(st: StageState) -> list[tuple[int, int]]:
    return st.db.execute("SELECT seq, n FROM outbox ORDER BY seq").fetchall()


def test_a_round_is_one_row_read_back_line_by_line_from_any_seq(tmp_path: Path) -> None:
    with StageState(tmp_path / "s.db") as st:
        add(st, list(range(1, 11)))
        add(st, list(range(11, 14)))
        assert rows(st) == [(10, 10), (13, 3)]
        assert list(st.outbox_after(0)) == [(s, line(s)) for s in range(1, 14)]
        # a replay after a seq inside a row: the row's later lines only, then the next rows
        assert list(st.outbox_after(4)) == [(s, line(s)) for s in range(5, 14)]
        assert list(st.outbox_after(10)) == [(s, line(s)) for s in range(11, 14)]
        assert list(st.outbox_after(13)) == []
        # read a few seqs at a time: every line once, in order, rows longer than the window too
        assert list(st.outbox_after(2, limit=2)) == [(s, line(s)) for s in range(3, 14)]
        assert outbox_lines(st.db) == 13 and outbox_lines(st.db, 4) == 9 and outbox_lines(st.db, 12) == 1
        assert ack_check.high_seq(st.db) == 13
    with StageState(tmp_path / "s.db") as st:
        assert st.next_seq == 14  # the last row's seq is the last line's


def test_a_gap_in_a_rounds_seqs_makes_a_row_per_run(tmp_path: Path) -> None:
    """A round redone item by item leaves the seqs of an item set aside unused: each run is a row, so that a
    row's lines are always the n seqs up to its seq."""
    with StageState(tmp_path / "s.db") as st:
        add(st, [1, 2, 3, 6, 7, 9])
        assert rows(st) == [(3, 3), (7, 2), (9, 1)]
        assert [s for s, _ in st.outbox_after(0)] == [1, 2, 3, 6, 7, 9]
        assert [s for s, _ in st.outbox_after(5, limit=1)] == [6, 7, 9]


def test_what_is_not_one_line_is_stored_as_it_is(tmp_path: Path) -> None:
    """Lines end in their newline and hold no other (events.encode, or a line as read); were one not to, the
    round's lines go a row each, as before, rather than come back cut elsewhere."""
    with StageState(tmp_path / "s.db") as st:
        with st.transaction() as db:
            st.add_outbox(db, [(1, line(1)), (2, b"{}\n{}\n"), (3, b"{}")])
        assert rows(st) == [(1, 1), (2, 1), (3, 1)]
        assert list(st.outbox_after(0)) == [(1, line(1)), (2, b"{}\n{}\n"), (3, b"{}")]


def test_pruning_takes_whole_rows_only(tmp_path: Path) -> None:
    """A reader that acknowledged part of a row: the row stays whole (its later lines are still owed), and a
    replay to that reader starts after its mark."""
    t = 1_000_000.0
    with StageState(tmp_path / "s.db") as st:
        add(st, list(range(1, 6)))
        add(st, list(range(6, 11)))
        with st.transaction() as db:
            st.mark_written(db, 10)
        acks.record(st.db, "/a.db", st.epoch, 7, "s", 7)
        st.prune(t)
        acks.record(st.db, "/a.db", st.epoch, 7, "s", 7)  # (acknowledgements are renewed while it lives)
        st.prune(t + 2 * durable.RETAIN_ACKED)  # what was acknowledged long ago may go
        assert rows(st) == [(10, 5)]
        assert [s for s, _ in st.outbox_after(st.replay_from())] == [8, 9, 10]


def test_a_state_file_of_the_version_before_opens_and_goes_on(tmp_path: Path) -> None:
    """Its rows are a line each (no ``n``): read as such, counted as such by a reader that opens it read-only
    (fc-record --status, fc-filter's look at an old state), and the new rows come after them."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    S.migrate(db, durable.MIGRATIONS[:-1], "old")
    db.executemany("INSERT INTO outbox(seq, line) VALUES (?, ?)", [(s, line(s)) for s in (1, 2, 3)])
    assert outbox_lines(db) == 3 and outbox_lines(db, 1) == 2
    db.close()
    with StageState(path) as st:
        assert st.next_seq == 4
        add(st, [4, 5, 6])
        assert rows(st) == [(1, 1), (2, 1), (3, 1), (6, 3)]
        assert list(st.outbox_after(2)) == [(s, line(s)) for s in range(3, 7)]
        assert outbox_lines(st.db) == 6
