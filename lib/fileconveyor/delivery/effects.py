"""What a transaction on a stage's state file changes outside the file: done once it has committed, undone if
it is rolled back.

A stage's ``record`` (and an ``also`` given to ``emit``) writes rows in the transaction that finishes its items,
and often has more to do in memory: hand a new ``invalidations`` row to the thread that sends it, forget the
``old_deletions`` rows a thread finished once their DELETE is in.  Done at once, those changes outlive a
rollback: when a round's commit fails and is redone item by item (delivery/commit.py), the thread held the id
of an INSERT that no longer existed and got the same path again from the redo (a second CDN purge), and the
rows whose DELETE was rolled back were forgotten, so they came back on the next start and their work was
done again.  So a stage says what to do when the transaction commits (``after_commit``) and how to give back
what it took from memory (``on_rollback``); the state file's transaction (``StageState.transaction``) and the
savepoint of an item redone alone (``savepoint``) run the one or the other, exactly once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

Effect = Callable[[], None]
Begun = contextlib.AbstractContextManager[sqlite3.Connection]


def _print(exc: BaseException) -> None:
    import traceback  # only on a failure: not a cost of every start

    traceback.print_exception(exc, file=sys.stderr)


class Effects:
    """The effects registered during the open transaction of one connection (one at a time, like SQLite's)."""

    def __init__(self) -> None:
        self._commit: list[Effect] = []
        self._undo: list[Effect] = []
        self._owner: int | None = None  # the thread whose transaction is open
        # an effect that raises after the commit must not pass for a failed commit (which would be redone):
        # the runner sets this to its reporter
        self.on_error: Callable[[BaseException], None] = _print

    def after_commit(self, effect: Effect) -> None:
        """Run ``effect`` once the open transaction has committed; never, if it is rolled back."""
        self._check()
        self._commit.append(effect)

    def on_rollback(self, effect: Effect) -> None:
        """Run ``effect`` if the open transaction (or the savepoint around it) is rolled back: what was taken
        from memory for it is given back, to be taken again by the transaction that redoes the work."""
        self._check()
        self._undo.append(effect)

    def _check(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("after_commit/on_rollback outside a transaction of this thread (call it from record)")

    @contextlib.contextmanager
    def transaction(self, begin: Callable[[], Begun]) -> Iterator[sqlite3.Connection]:
        """``begin()``'s transaction, with the effects registered inside it run after its COMMIT or ROLLBACK."""
        if self._owner is not None:  # one already open: SQLite refuses the BEGIN, and that one's effects stay
            with begin() as db:
                yield db
            return
        self._owner = threading.get_ident()
        try:
            with begin() as db:
                yield db
        except BaseException:
            self._settle(committed=False, mark=(0, 0), outer=True)
            raise
        self._settle(committed=True, mark=(0, 0), outer=True)

    @contextlib.contextmanager
    def savepoint(self, db: sqlite3.Connection) -> Iterator[None]:
        """Inside a transaction: a savepoint whose writes, and whose effects, go if the block raises."""
        mark = (len(self._commit), len(self._undo))
        db.execute("SAVEPOINT item")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.DatabaseError):
                db.execute("ROLLBACK TO item")
                db.execute("RELEASE item")
            self._settle(committed=False, mark=mark, outer=False)
            raise
        db.execute("RELEASE item")

    def _settle(self, committed: bool, mark: tuple[int, int], outer: bool) -> None:
        done, undo = self._commit[mark[0] :], self._undo[mark[1] :]
        del self._commit[mark[0] :], self._undo[mark[1] :]
        if outer:
            self._owner = None  # before the effects: one may open a transaction of its own
        self._run(done if committed else reversed(undo))

    def _run(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            try:
                effect()
            except Exception as exc:  # the others still run: each keeps its own bookkeeping right
                self.on_error(exc)
