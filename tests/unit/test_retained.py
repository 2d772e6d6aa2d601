"""Lines every reader acknowledged are kept a while for a reader yet to register (durable.RETAIN_ACKED): behind
fc-tee, a branch whose reader starts after fc-tee's --first-wait asks for them on its first line."""

from __future__ import annotations

from pathlib import Path

from fileconveyor.delivery import acks, durable
from fileconveyor.delivery.durable import RETAIN_ACKED, StageState


def kept(st: StageState) -> list[int]:
    return [seq for seq, _ in st.outbox_after(0)]


def make(st: StageState, n: int) -> None:
    """``n`` lines, each in a row of its own (as ``n`` rounds of one line store them): what goes is by line."""
    with st.transaction() as db:
        for _ in range(n):
            st.add_outbox(db, [(st.hop()["seq"], b"{}\n")])
        st.mark_written(db, st.next_seq - 1)


def test_acknowledged_lines_stay_for_retain_acked_then_go(tmp_path: Path) -> None:
    t = 1_000_000.0
    with StageState(tmp_path / "s.db") as st:
        make(st, 10)
        acks.record(st.db, "/a.db", st.epoch, 10, "s", 10)  # the one reader we know has all ten
        assert st.prune(t) == (10, 0)
        assert kept(st) == list(range(1, 11))  # kept: a reader behind fc-tee may not have registered yet
        acks.record(st.db, "/a.db", st.epoch, 10, "s", 10)  # (acknowledgements are renewed while it lives)
        t += RETAIN_ACKED / 2
        make(st, 5)
        acks.record(st.db, "/a.db", st.epoch, 15, "s", 15)
        st.prune(t)
        assert kept(st) == list(range(1, 16))
        t += RETAIN_ACKED / 2
        acks.record(st.db, "/a.db", st.epoch, 15, "s", 15)
        st.prune(t)
        assert kept(st) == list(range(11, 16))  # the first ten were made RETAIN_ACKED ago
        t += RETAIN_ACKED / 2
        acks.record(st.db, "/a.db", st.epoch, 15, "s", 15)
        st.prune(t)
        assert kept(st) == []


def test_unacknowledged_lines_are_never_forgotten_for_their_age(tmp_path: Path) -> None:
    t = 1_000_000.0
    with StageState(tmp_path / "s.db") as st:
        make(st, 10)
        acks.record(st.db, "/a.db", st.epoch, 4, "s", 4)
        st.prune(t)
        t += 2 * RETAIN_ACKED
        acks.record(st.db, "/a.db", st.epoch, 4, "s", 4)
        st.prune(t)
        assert kept(st) == list(range(5, 11))


def test_at_most_the_first_contact_window_is_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(durable, "FIRST_CONTACT_WINDOW", 3)  # a new reader asks for 3 lines back: keep no more
    with StageState(tmp_path / "s.db") as st:
        make(st, 10)
        acks.record(st.db, "/a.db", st.epoch, 10, "s", 10)
        st.prune(1_000_000.0)
        assert kept(st) == [8, 9, 10]


def test_what_earlier_runs_made_goes_after_retain_acked_though_no_run_lasts_that_long(tmp_path: Path) -> None:
    """A cron pipeline: each run lasts seconds.  When the lines were made is kept in the state file, so the next
    run forgets what a run over RETAIN_ACKED ago made (it was kept up to FIRST_CONTACT_WINDOW lines for ever)."""
    t = 1_000_000.0
    with StageState(tmp_path / "s.db") as st:
        make(st, 10)
        acks.record(st.db, "/a.db", st.epoch, 10, "s", 10)
        st.prune(t)
        assert kept(st) == list(range(1, 11))
    t += RETAIN_ACKED + 60
    with StageState(tmp_path / "s.db") as st:  # the next run, over an hour later
        make(st, 5)
        acks.record(st.db, "/a.db", st.epoch, 15, "s", 15)
        st.prune(t)
        assert kept(st) == list(range(11, 16))  # the first run's ten went; this run's five stay their hour


def test_a_clock_set_back_keeps_everything_an_hour_from_then(tmp_path: Path) -> None:
    t = 1_000_000.0
    with StageState(tmp_path / "s.db") as st:
        make(st, 10)
        acks.record(st.db, "/a.db", st.epoch, 10, "s", 10)
        st.prune(t)
        t -= 3 * RETAIN_ACKED  # set back: the mark of an hour "ago" is in the future now
        st.prune(t)
        assert kept(st) == list(range(1, 11))
        acks.record(st.db, "/a.db", st.epoch, 10, "s", 10)
        st.prune(t + RETAIN_ACKED)
        assert kept(st) == []
