"""fc-transport's side of the copier (transporters/copier.py): which uploads it gets, and their outcomes.

An item's work is steps that yield the upload they need (``Copy``) and are resumed with its result, or with the
exception it raised (``drive``), so that the same code finishes an item whichever process copied its file.  In
the main thread (``Stage.quick``, turns.py), once a round has offered ``START_AT`` uploads, the lane's ``Lane``
hands them to its copier (started at the first upload offered: its start-up overlaps the main thread's first
copies instead of holding up the first round's commit); an upload that is a plain copy (``Copy.alone``: no
stylesheet pins, no old name to delete, not recovered, not looked at first) is checked and opened here
(SymlinkOrCopy.prepare) and its descriptors go to the copier in batches.  While the copier is ``BACKLOG`` files
behind, the main thread copies the next ones itself.
``Lane.finish`` (from ``Stage.flush``, before the round's commit) waits for every answer and finishes the items:
the order stays copy, commit, acknowledgement (docs/durability.md, "Work before the commit").  A file the copier
could not copy (an errno, a source changed meanwhile) is uploaded again here, the usual way, so it ends as it does
today and fails alone with today's message.  A copier that died or answered garbage: a warning, its files are
copied here, and the rest of the run does without.  After a kill -9 of fc-transport the copier dies with it
(PR_SET_PDEATHSIG): the round's copies are then not committed, and the next run looks before copying again.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from ...delivery.stage import Done, Item, Outcome
from ...sourcefile import Source
from ...transporters import Transporter
from ...transporters.base import UPLOADED

if TYPE_CHECKING:
    from ...transporters.local import Prepared

START_AT = 64  # uploads a round offers before its copier is used: none for live events, one by one
BATCH = 64  # files per message to the copier
BACKLOG = 128  # files the copier may have unanswered (two batches); past it, the main thread copies the next one itself


class Copy:
    """An upload an item's steps need: run here (``run``) or by a copier."""

    __slots__ = ("alone", "has_dirs", "look_first", "remote", "source", "tp")

    def __init__(self, tp: Transporter, source: Source, remote: bytes, look_first: bool, has_dirs: bool, alone: bool):
        self.tp, self.source, self.remote, self.look_first = tp, source, remote, look_first
        self.has_dirs = has_dirs
        self.alone = alone  # nothing else of the item touches the destination: a copier may do it

    def run(self) -> tuple[str, list[bytes]]:
        sent = self.tp.upload(self.source, self.remote, look_first=self.look_first)
        return sent, (self.tp.take_made_dirs() if self.has_dirs else [])


Steps = Generator[Copy, tuple[str, list[bytes]], Outcome]


def drive(steps: Steps, copy: Copy | None = None) -> Outcome:
    """Run ``steps`` to their outcome, doing each copy they ask for here; ``copy``: the one they asked for
    already (``next(steps)``)."""
    try:
        if copy is None:
            copy = next(steps)
        while True:
            try:
                result = copy.run()
            except BaseException as exc:  # into the steps, where the upload was asked for: they handle it
                copy = steps.throw(exc)
            else:
                copy = steps.send(result)
    except StopIteration as stop:
        return stop.value


def resume(steps: Steps, result: tuple[str, list[bytes]] | None = None, exc: BaseException | None = None) -> Outcome:
    """``steps`` resumed with an upload's ``result`` (or its ``exc``), then driven to their outcome."""
    try:
        copy = steps.throw(exc) if exc is not None else steps.send(result)  # type: ignore[arg-type]
    except StopIteration as stop:
        return stop.value
    return drive(steps, copy)


def again(steps: Steps, copy: Copy, made: list[bytes]) -> Outcome:
    """``copy``, which a copier (or copy_here) did not do, uploaded the usual way, and ``steps`` resumed with its
    outcome; ``made``: the directories its preparation created."""
    try:
        sent, more = copy.run()
    except BaseException as exc:
        copy.tp.made_dirs[:0] = made  # still to be taken, as after any failed upload
        return resume(steps, exc=exc)
    return resume(steps, (sent, made + more))


class Pending(Done):
    """An item whose file a copier copies: its steps wait for the answer.  It is the item's outcome the runner
    holds (a Done), which ``finish`` makes the steps' outcome; a failure until then (should finish never reach
    it, it says why)."""

    __slots__ = ("copy", "item", "made", "steps")

    def __init__(self, steps: Steps, copy: Copy, item: Item, made: list[bytes]):
        # (Done's fields set here: one object per item, not a Done and the Pending that fills it)
        self.outputs, self.failed, self.unchanged, self.added, self.payload = [], True, False, (), None
        self.steps, self.copy, self.item, self.made = steps, copy, item, made


def _fill(done: Done, outcome: Done) -> None:
    """``done``, handed to the runner already, made ``outcome``."""
    done.outputs, done.failed, done.unchanged = outcome.outputs, outcome.failed, outcome.unchanged
    done.added, done.payload = outcome.added, outcome.payload


class Lane:
    """The copier of one destination: its process, the items waiting for it (in order).  Made at the first
    upload the main thread could hand over, not at the round's START_AT-th: the process then starts while the main
    thread copies the first ones, and is ready (or nearly) when the round needs it.  Started at the START_AT-th,
    the round's commit waited for its start-up, on the critical path of a pipeline (python's start-up, 25 ms on
    a quiet machine, 0.2 s on a loaded one).  Not at fc-transport's start: a run with nothing to copy (cron, an
    unchanged tree) imports neither subprocess nor socket (tests/cli/test_startup.py)."""

    def __init__(self, warn: Callable[[str], None]):
        from ...transporters.copier import CopierProcess  # subprocess: only when a copier starts
        from ...transporters.copier_child import copy_one

        self.copy_one = copy_one
        self.warn = warn
        self.proc: CopierProcess | None = None
        try:
            self.proc = CopierProcess()
        except OSError as exc:
            warn(f"cannot start a copier process ({exc}); copying in the main thread")
        self.pending: list[Pending] = []
        self.statuses: list[int] = []  # of pending[:len(statuses)]
        self.paths: set[bytes] = set()
        self.copied = 0  # files the copier copied (the rest of those handed over: copied again here)
        self.used = False  # a round has offered START_AT uploads: from then on, the copier takes them

    def usable(self, offered: int) -> bool:
        """Whether the round's ``offered``-th upload may go to the copier (once a round has offered START_AT, while
        it is alive and not too far behind)."""
        proc = self.proc
        if proc is None or proc.dead:
            return False
        if not self.used:
            if offered < START_AT:
                return False
            self.used = True
        if proc.unanswered + len(proc.srcs) >= BACKLOG:
            self._collect(block=False)
        return not proc.dead and proc.unanswered + len(proc.srcs) < BACKLOG

    def add(self, steps: Steps, copy: Copy, prep: Prepared, item: Item, made: list[bytes]) -> Done:
        """``item``'s upload to the copier: its outcome, a Done that ``finish`` fills in."""
        proc = self.proc
        assert proc is not None
        p = Pending(steps, copy, item, made)
        self.pending.append(p)
        self.paths.add(item.key)
        if proc.add(prep, BATCH):
            proc.send()
        return p

    def finish(self, internal: Callable[[Item, BaseException], Done]) -> list[str]:
        """Wait for every answer and finish the items: their outcomes go into their Done.  The reasons of those
        that must be tried again (a transient failure), for the round's retry.  ``internal``: the Done of an item
        whose steps failed unexpectedly."""
        if not self.pending:
            return []
        proc = self.proc
        if proc is not None:
            proc.send()
            self._collect(block=True)
        pending, statuses = self.pending, self.statuses
        self.pending, self.statuses = [], []
        self.paths.clear()
        retry = []
        finished = 0
        try:
            for i, p in enumerate(pending):
                try:
                    if i < len(statuses) and statuses[i] == 0:
                        self.copied += 1
                        outcome = resume(p.steps, (UPLOADED, p.made))
                    else:  # not copied (a fault, the source changed, no answer): done here, the usual way
                        outcome = again(p.steps, p.copy, p.made)
                except Exception as error:
                    outcome = internal(p.item, error)
                if isinstance(outcome, Done):
                    _fill(p, outcome)
                else:
                    retry.append(outcome.reason)
                finished += 1
        finally:
            # Cut short (a KeyboardInterrupt, a bug): the items left say so, a failure each, never a line taken
            # silently.  Built only then, not ahead for every item.
            for p in pending[finished:]:
                _fill(p, internal(p.item, RuntimeError("its copy was never finished")))
        return retry

    def copy_here(self, steps: Steps, copy: Copy, prep: Prepared, made: list[bytes]) -> Outcome:
        """An upload ``prepare``d, copied by this thread the copier's way (copier_child.copy_one), for the files
        the main thread copies itself (the copier behind, not used yet, or gone): the checks were prepare's, and
        the copy skips what upload() does again around it (the file object and its fstat, the F_SETFL, the
        transporter's layers).  A file it could not copy is uploaded again the usual way, as a copier's is, so it
        ends as it does without a copier, with the same message."""
        src = prep.src
        try:
            status = self.copy_one(src.fd, prep.dir_fd, src.before.st_size, src.before.st_mtime_ns, prep.tmp, prep.name)
        except BaseException:
            copy.tp.made_dirs[:0] = made  # (copy_one answers an errno: a bug, an interrupt) still to be taken
            raise
        finally:
            src.close()
        if status == 0:
            return resume(steps, (UPLOADED, made))
        return again(steps, copy, made)

    def _collect(self, block: bool) -> None:
        proc = self.proc
        assert proc is not None
        while proc.batches:
            statuses = proc.answer(block)
            if statuses is None:
                break
            self.statuses += statuses
        if proc.dead:
            self.warn("the copier process ended or answered garbage; copying in the main thread from here on")
            self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop()
