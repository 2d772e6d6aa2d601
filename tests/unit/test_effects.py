"""delivery/effects.py: what a transaction on a stage's state file does in memory happens once, after its
COMMIT (after_commit), or is given back on its ROLLBACK (on_rollback), also for the savepoint of one item."""

from __future__ import annotations

from pathlib import Path

import pytest

from fileconveyor.delivery.durable import StageState


def test_effects_follow_the_transaction(tmp_path: Path) -> None:
    st = StageState(tmp_path / "s.db")
    seen: list[str] = []
    with st.transaction() as db:
        db.execute("INSERT INTO meta(k, v) VALUES ('x', 1)")
        st.effects.after_commit(lambda: seen.append("committed"))
        st.effects.on_rollback(lambda: seen.append("given back"))
        assert seen == []  # nothing before the COMMIT
    assert seen == ["committed"]
    seen.clear()
    with pytest.raises(OverflowError), st.transaction():
        st.effects.after_commit(lambda: seen.append("committed"))
        st.effects.on_rollback(lambda: seen.append("given back 1"))
        st.effects.on_rollback(lambda: seen.append("given back 2"))
        raise OverflowError
    assert seen == ["given back 2", "given back 1"]  # undone in reverse, never committed
    st.close()


def test_a_savepoint_rolled_back_drops_only_its_own_effects(tmp_path: Path) -> None:
    st = StageState(tmp_path / "s.db")
    seen: list[str] = []
    with st.transaction() as db:
        st.effects.after_commit(lambda: seen.append("before"))
        with pytest.raises(OverflowError), st.effects.savepoint(db):
            db.execute("INSERT INTO meta(k, v) VALUES ('y', 1)")
            st.effects.after_commit(lambda: seen.append("item"))
            st.effects.on_rollback(lambda: seen.append("item given back"))
            raise OverflowError
        assert seen == ["item given back"]
        with st.effects.savepoint(db):
            st.effects.after_commit(lambda: seen.append("next item"))
    assert seen == ["item given back", "before", "next item"]
    assert st.db.execute("SELECT count(*) FROM meta WHERE k='y'").fetchone() == (0,)
    st.close()


def test_an_effect_that_raises_is_reported_and_the_commit_stands(tmp_path: Path) -> None:
    st = StageState(tmp_path / "s.db")
    errors: list[BaseException] = []
    st.effects.on_error = errors.append
    seen: list[str] = []
    with st.transaction() as db:
        db.execute("INSERT INTO meta(k, v) VALUES ('z', 1)")
        st.effects.after_commit(lambda: 1 / 0)  # type: ignore[func-returns-value]
        st.effects.after_commit(lambda: seen.append("the next one"))
    assert [type(e) for e in errors] == [ZeroDivisionError] and seen == ["the next one"]
    assert st.db.execute("SELECT count(*) FROM meta WHERE k='z'").fetchone() == (1,)
    with pytest.raises(RuntimeError):  # outside a transaction there is nothing to wait for: a stage's mistake
        st.effects.after_commit(lambda: None)
    st.close()
