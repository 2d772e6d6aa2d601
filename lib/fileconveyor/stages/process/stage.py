"""fc-process: run each event's file through a processor chain, in parallel.

One lane keyed by path: events of one path are processed one at a time, in
order; different paths run concurrently on ``jobs`` worker threads (the heavy
work happens in external tools or C code, which release the GIL).  Events that
need no file (deleted events, files no processor applies to, chains of
``name_only`` processors such as ``filename.*``) are decided in the main thread
by ``Stage.quick``, in the batch's own commit, with no work directory.

Every event that needs a work file gets its own directory
``<work root>/e<random>/``, so concurrent chains on files of the same base name
never meet.  The final file is moved to ``e.../<name>`` and intermediate steps
are removed at once; the directory itself stays until the readers of our output
have acknowledged the line that names it (``released``), recorded in our own
table ``work_files`` (output seq -> directory), and, for the latest version of
each path, until a newer version or the path's deletion supersedes it: a
transfer that failed (a wrong password) and is retried later still finds its
file.  Directories no row knows of (a kill -9 mid-chain) are removed at start.

Fields added (docs/events.md, "fc-process"): ``name`` on every event, ``file``
when the content or name changed through a work file, ``processed`` (the names
of the processors that ran).  A deleted event gets the last name emitted for
its path (table ``names``, which holds only names that differ from the base
name), so the transporter deletes the right remote file; a path never named
here (another worker processed it) gets what the chain's name-only steps make
of its base name.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from ... import backoff, private
from ... import events as E
from ...delivery.stage import Done, Item, Outcome, Retry, Stage, StageContext
from ...processors import Context, Processor, ProcessorError, RetryLater, ToolMissing
from ...processors.base import base_name_problem, checked, safe_ext, split_name
from ...roots import Source as SourceRoot
from ...roots import confined
from ...sourcefile import (
    Roots,
    SourceFile,
    SourceGone,
    SourceRefused,
    check_source,
    copy_fd,
    from_event,
    open_source,
    work_prefix,
)
from ...sourcefile import Source as SourceSpec
from ...state import default_state_dir
from . import refs
from .names import NameChecks

MIGRATIONS = [
    """
    -- output line seq -> the work directory its "file" lives in, removed once readers are done
    CREATE TABLE work_files(seq INTEGER PRIMARY KEY, dir BLOB NOT NULL, at REAL NOT NULL);
    -- the last name emitted for a path, only when it differs from the path's base name
    CREATE TABLE names(path BLOB PRIMARY KEY, name BLOB NOT NULL);
    """,
    # the latest processed copy of each path stays until a newer version or the deletion of the path supersedes
    # it, not only until the reader acknowledged its line: a transfer that failed (a wrong password) and is
    # retried later (--retry-failed) still needs it (issue 17, finding 2)
    """
    ALTER TABLE work_files ADD COLUMN path BLOB;
    ALTER TABLE work_files ADD COLUMN current INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX work_files_current ON work_files(path) WHERE current=1;
    """,
    refs.MIGRATION,  # the reference graph of CSS files (process_refs.py)
]

# record()'s tables, and how start() asks whether one holds rows (css_refs: the reference graph, refs.py)
_MAY_HOLD = {
    "work_files": "SELECT EXISTS(SELECT 1 FROM work_files WHERE current=1)",
    "css_refs": "SELECT EXISTS(SELECT 1 FROM css_refs) OR EXISTS(SELECT 1 FROM css_events)",
    "names": "SELECT EXISTS(SELECT 1 FROM names)",
}

RETRY_CAP = 600.0  # seconds: the longest wait between two tries of a deferred event
ORPHAN_GRACE = 3600.0  # work files of lines no File Conveyor reader acknowledged go after this


def _copy_event(ev: dict) -> dict:
    out = dict(ev)
    out.pop("hop", None)  # the runner gives every output line our own hop
    return out


# What the main thread's outcomes add to an event, in this order (name_b64: a name that is not UTF-8)
_ADDED = ("processed", "name")
_ADDED_B64 = ("processed", "name", "name_b64")


# An event with one of these is not _plain_rename's
_PLAIN = frozenset(("path_b64", "name", "name_b64", "file", "file_b64", "processed", "error"))
# Done.payload of an event renamed to its own base name while the names table was empty: record() has nothing to
# write for it while our tables stay empty (_plain_rename)
_KEPT_NOTHING = object()


def _added(ev: Mapping, out: dict) -> tuple[str, ...]:
    """The fields ``out`` (``ev`` without its hop, ``processed`` and ``name`` set after) has besides those of
    ``ev`` (Done.added: its line is the event's with them), or () when ``ev`` had one of them already (its value,
    or its place, differs in ``out``): then it is encoded."""
    if "processed" in ev or "name" in ev or "name_b64" in ev:
        return ()
    return _ADDED_B64 if "name_b64" in out else _ADDED


def _has(ev: Mapping, field: str) -> bool:
    return field in ev or field + "_b64" in ev


def _names(ev: Mapping) -> tuple[bytes, bytes]:
    """An event's path, and the name its file has so far (``name``, given by an earlier step, or its base name)."""
    path = E.get_path(ev, "path")
    return path, (E.get_path(ev, "name") if _has(ev, "name") else path[path.rfind(b"/") + 1 :])


class _Attempt:
    """What one try at an item did that record() needs (``Done.payload``): the work directory its file is in,
    and messages for stderr (printed in the main thread, once)."""

    def __init__(self) -> None:
        self.work_dir: bytes | None = None
        self.said: list[tuple[bool, str]] = []  # (is an error, text)

    def note(self, *texts: str, error: bool = False) -> None:
        self.said.extend((error, text) for text in texts)


class Settings:
    def __init__(
        self,
        jobs: int = 1,
        work_dir: str | None = None,  # None: next to the state file
        options: dict[str, str] | None = None,  # document_root, base_path, server, synced_db
        retry_delay: float = 5.0,  # first wait for a deferred event, doubled each time
        reference_wait: float | None = None,  # link_updater: seconds a missing reference is waited for
        follow_symlinks: bool = False,  # as fc-watch's: a link out of the root is read to the event's file
        sources: list[SourceRoot] | None = None,  # --source: the only roots read from (none: the event's)
    ):
        self.jobs = jobs
        self.work_dir = work_dir
        self.options = {} if options is None else options
        self.retry_delay = retry_delay
        self.reference_wait = reference_wait
        self.follow_symlinks = follow_symlinks
        self.sources = [] if sources is None else sources


class ProcessStage(Stage):
    name = "fc-process"
    migrations = MIGRATIONS

    def __init__(self, chain: Sequence[Processor], settings: Settings):
        self.chain = list(chain)
        self.settings = settings
        self.root = b""  # this state file's work directory, set in start()
        self.work_bases: list[bytes] = []
        self.ctx: StageContext | None = None
        self._lock = threading.Lock()
        # path -> the name quick() decided for it, until record() has written it to the names table:
        # a deleted event later in the same batch must carry it (main thread only)
        self._pending_names: dict[bytes, bytes] = {}
        self._local = threading.local()  # per worker: a read-only connection for the names table
        self._conns: list[sqlite3.Connection] = []
        # Our tables that may hold rows (_MAY_HOLD): record() skips its per-event look-ups and deletes in the others.
        # Only this process writes its state file (its lock), and a table leaves this set never, so a rolled-back
        # insert only costs a needless look-up later.
        self._may_hold: set[str] = set(_MAY_HOLD)
        self._roots = Roots()  # the sources' roots, opened once per round for quick() (main thread only)
        self._checks = NameChecks(self._roots, self._confine)  # their directories, the same (names.py)
        # every step only renames: any event that is no deletion, failure or work file is decided in quick()
        self._renames_only = bool(self.chain) and all(p.name_only and not p.reports_references for p in self.chain)
        # a step applies to every name (no extensions, applies_to not its own): something always applies
        # ...and each gives its name from the name alone (Processor.by_name): no Context per event
        self._by_name = self._renames_only and all(p.by_name for p in self.chain)
        self._applies_to_all = any(not p.extensions and type(p).applies_to is Processor.applies_to for p in self.chain)
        self._plain_renames = self._by_name and self._applies_to_all  # quick()'s way for the usual event
        self.counts = {"processed": 0, "unchanged": 0, "failed": 0, "dropped": 0, "deferred": 0}
        self._quick_counts = dict.fromkeys(self.counts, 0)  # the main thread's rename-only outcomes: no lock

    # -- set-up ----------------------------------------------------------------------

    def lanes(self) -> dict[str, int]:
        # Events that need no file never reach a worker (quick()), so the workers are the chains at once.
        return {"": self.settings.jobs}

    def split(self, event: dict) -> list[tuple[str, bytes, dict]]:
        # An incoming name is checked as a processor's is: joined to a work directory,
        # "/tmp/x" or "../x" would put the file outside it.  Refused here, it is a bad line.
        if _has(event, "name"):
            problem = base_name_problem(E.get_path(event, "name"))
            if problem:
                raise E.EventError(f"field 'name' is not a base name: {problem}")
        return super().split(event)

    def start(self, ctx: StageContext) -> None:
        self.ctx = ctx
        state = ctx.state_path
        base = self.settings.work_dir or str(state.parent)
        # one directory per state file: two fc-process sharing --work-dir never clean each other's files
        self.root = os.fsencode(os.path.abspath(os.path.join(base, state.name + ".work")))
        private.private_dir(os.fsdecode(self.root), ours=True)  # processed files before they are public
        # where an earlier fc-process's "file" may lie (sourcefile.from_event): its work folders next to ours
        self.work_bases = [os.fsencode(os.path.abspath(base)), os.fsencode(default_state_dir())]
        db = ctx.db
        if not ctx.readers():
            # no File Conveyor reader acknowledges our lines (jq, a file): their work
            # files go after a grace period, as the runner does within one run
            self._release_rows(db, "at < ? AND current=0", time.time() - ORPHAN_GRACE)
        known = {bytes(d) for (d,) in db.execute("SELECT dir FROM work_files")}
        self._may_hold = {name for name, query in _MAY_HOLD.items() if db.execute(query).fetchone()[0]}
        for entry in os.listdir(self.root):
            path = os.path.join(self.root, entry)
            if path not in known:  # left by a chain that was running when we were killed
                _remove(path)

    def flush(self) -> str | None:
        self._checks.close()  # the end of a round's quick(): roots and directories are opened again in the next
        self._roots.close()
        return None

    def close(self) -> None:
        self._checks.close()
        self._roots.close()
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    # -- work (worker threads) ---------------------------------------------------------

    def work(self, item: Item) -> Outcome:
        ev = item.event
        path, current = _names(ev)
        quick = self._quick(item, self._last_name, path, current)
        if quick is not None:
            return quick
        out = {**_copy_event(ev), "processed": list(ev.get("processed", []))}
        attempt = _Attempt()
        return self._outcome(self._process(item, attempt, path, current, out), attempt)

    def _outcome(self, outcome: Outcome, attempt: _Attempt) -> Outcome:
        """``outcome`` carrying what record() needs of ``attempt``; a retry's messages are said now."""
        if isinstance(outcome, Done):
            outcome.payload = attempt
        elif self.ctx is not None:
            for is_error, text in attempt.said:
                (self.ctx.rep.error if is_error else self.ctx.rep.warn)(text)
        return outcome

    def quick(self, item: Item) -> Done | None:
        """The outcome of an item that needs no file of ours (a deleted event, a file no
        processor applies to, a chain of name_only steps), worked out at once in the main
        thread; None for the rest.

        For a runner that finishes such items inline instead of handing them to a
        worker (one commit per batch instead of per round of workers)."""
        if self._plain_renames:
            done = self._plain_rename(item.event)
            if done is not None:
                return done
        last_name = self._main_last_name
        path, current = _names(item.event)
        done = self._quick(item, last_name, path, current)
        if done is None:
            done = self._names_only(item, last_name, path, current)
        if done is not None and done.outputs and not done.failed:
            out = done.outputs[0]
            # what record() writes to the names table
            if "error" not in out and (out.get("kind") == "deleted" or out["processed"]):
                self._pending_names[path] = E.get_path(out, "name") if out.get("kind") != "deleted" else b""
        return done

    def _plain_rename(self, ev: dict) -> Done | None:
        """quick() for the usual event of a chain of ``by_name`` steps, one of which applies to every name: a file
        created or modified, its path UTF-8, no ``name``, ``file``, ``processed`` or ``error`` yet, passing the
        check of names.py.  Its new name is the chain's of its base name, so when that is the base name itself
        and no other name is pending for the path, nothing is kept for it (a later deletion gets the same name from
        _name_by_name, and record() has nothing to write while our tables are empty).  None: the general way
        (_quick, _names_only) decides, as before."""
        text = ev.get("path")
        if type(text) is not str or ev.get("kind") == "deleted" or not _PLAIN.isdisjoint(ev):
            return None
        path = text.encode()  # (events.decode refused a string holding a lone surrogate)
        current = path[path.rfind(b"/") + 1 :]
        renamed = self._renamed(current)
        if renamed is None or not self._checks.plain(ev, path):
            return None  # (the check's exact outcome, or the failing step's: the general way says it)
        name, ran = renamed
        out = dict(ev)
        out.pop("hop", None)  # the runner gives every output line our own hop
        out["processed"] = ran
        if name == current and "names" not in self._may_hold and path not in self._pending_names:
            # (a name pending for the path, from an event of this batch that came with a "name" of its own or was
            # deleted, is replaced below: a deletion later in the batch carries the last name given)
            out["name"] = text[text.rfind("/") + 1 :]
            self._quick_counts["unchanged"] += 1
            return Done([out], added=_ADDED, payload=_KEPT_NOTHING)
        E.put_path(out, "name", name)
        self._quick_counts["unchanged" if name == current else "processed"] += 1
        # what record() writes to the names table, and a later deletion in this batch carries: the last name given
        self._pending_names[path] = name
        return Done([out], added=_ADDED_B64 if "name_b64" in out else _ADDED)

    def _main_last_name(self, path: bytes) -> bytes | None:
        """The last name emitted for ``path``, as the main thread knows it: decided in this batch, or in the
        names table (Context.current_name)."""
        pending = self._pending_names.get(path)
        if pending is not None or "names" not in self._may_hold:
            return pending
        assert self.ctx is not None
        return _name_row(self.ctx.db, path)

    def _quick(
        self, item: Item, last_name: Callable[[bytes], bytes | None], path: bytes, current: bytes
    ) -> Done | None:
        ev = item.event
        if ev.get("kind") == "deleted":
            out = _copy_event(ev)
            out.setdefault("processed", [])
            if not _has(ev, "name"):
                current = last_name(path) or self._name_by_name(item, path, current, last_name)
            E.put_path(out, "name", current)
            return Done([out], added=_added(ev, out))
        # a processor applies by name, and a later step only after an earlier one renamed;
        # an earlier fc-process's work file is taken over in _process (a work dir is needed)
        if "error" in ev or (
            not self._applies_to_all
            and not any(proc.applies_to(current) for proc in self.chain)
            and not _has(ev, "file")
        ):
            out = _copy_event(ev)
            out.setdefault("processed", [])
            E.put_path(out, "name", current)
            if "error" not in ev:
                self._count("unchanged")
            # (failed upstream: nothing to process, the name a transporter expects added)
            return Done([out], added=_added(ev, out))
        return None

    def _name_by_name(
        self, item: Item, path: bytes, current: bytes, last_name: Callable[[bytes], bytes | None]
    ) -> bytes:
        """The name the chain's name-only renames give a deleted path we never named: another worker processed
        its file (fc-consume's partition moved, docs/scale-out.md), and without it the transporter deleted the
        base name while the renamed file stayed at the destination for good.  A step that renames by content
        ends it: that name is known only where the file was processed."""
        ctx = self._context(item, path, current, b"", last_name)
        for proc in self.chain:
            if not proc.renames or not proc.applies_to(ctx.basename):
                continue
            if not proc.name_only or proc.reports_references:
                break
            try:
                ctx.basename = checked(proc, ctx, proc.process(ctx)).basename
            except Exception:  # a processor that wants more than the name: as before, the base name
                break
        return ctx.basename

    def _names_only(
        self, item: Item, last_name: Callable[[bytes], bytes | None], path: bytes, current: bytes
    ) -> Done | None:
        """The outcome of a chain whose every step that applies is ``name_only``: the file is checked as a
        processor's input would be, to find a vanished or refused source (names.py), but nothing is opened or
        copied; None when a step needs the file (a worker runs the whole chain then, and says what it says).
        What there is to say travels as the outcome's payload (an _Attempt), only when there is something."""
        ev = item.event
        if _has(ev, "file") or ev.get("kind") == "deleted" or "error" in ev:
            return None  # an earlier fc-process's work file is taken over in _process (a work dir is needed)
        if not self._renames_only:
            renamed = False
            for proc in self.chain:  # after a rename any later step may apply: each must be name_only then
                if renamed or proc.applies_to(current):
                    if not proc.name_only or proc.reports_references:
                        return None
                    renamed = renamed or proc.renames
        out = _copy_event(ev)
        before = ev.get("processed", [])
        out["processed"] = before  # (in place when there, at the end when not: its value set below)
        if not self._checks.plain(ev, path):  # (the common case, without opening the file: names.py)
            attempt = _Attempt()
            try:
                check_source(self._source(ev), self._roots)
            except SourceGone as exc:
                return _said(self._vanished(attempt, path, str(exc)), attempt)
            except SourceRefused as exc:
                return _said(self._failed(attempt, out, current, None, exc), attempt)
            except OSError:
                return None  # a worker tries again, and tells a vanished file from a failed one
        renamed = self._renamed(current) if self._by_name else None
        if renamed is not None:
            name, ran = renamed
            E.put_path(out, "name", name)
            out["processed"] = [*before, *ran]
            self._quick_counts["unchanged" if name == current else "processed"] += 1  # (main thread only)
            return Done([out], added=_added(ev, out))
        ctx = Context(
            input=path,
            original=path,
            basename=current,
            work_dir=b"",
            event=ev,
            options=self._options(ev),
            current_name=last_name,
            waited=self._waited(item.attempts),
        )
        ran: list[str] = []
        proc: Processor | None = None
        try:
            for proc in self.chain:
                if not proc.applies_to(ctx.basename):
                    continue
                if not proc.name_only:  # a rename made a content step apply after all
                    return None
                result = checked(proc, ctx, proc.process(ctx))
                if result.path != ctx.input:
                    raise ProcessorError(f"{proc.name} is name_only but wrote a file")
                ran.append(proc.name)
                ctx.basename = result.basename
        except (RetryLater, ToolMissing):
            return None  # a worker runs the chain again and defers the event
        except Exception as exc:
            attempt = _Attempt()
            failed = self._failed(attempt, out, current, proc, exc)
            self._chain_notes(attempt, ctx)
            return _said(failed, attempt)
        E.put_path(out, "name", ctx.basename)
        out["processed"] = [*before, *ran]
        self._quick_counts["unchanged" if ctx.basename == current else "processed"] += 1  # (main thread only)
        done = Done([out], added=_added(ev, out))
        if ctx.notes:
            attempt = _Attempt()
            self._chain_notes(attempt, ctx)
            done.payload = attempt
        return done

    def _renamed(self, current: bytes) -> tuple[bytes, list[str]] | None:
        """What a chain of ``by_name`` steps makes of the name ``current``, and the steps that ran; None when a
        step fails or breaks a rule (checked()'s): the chain then runs as any other, and fails the event so."""
        name, ran = current, []
        try:
            for proc in self.chain:
                if proc.applies_to(name):
                    new = proc.rename(name)
                    if base_name_problem(new) or (new != name and not proc.renames):
                        return None
                    ran.append(proc.name)
                    name = new
        except Exception:
            return None
        return name, ran

    def _process(self, item: Item, attempt: _Attempt, path: bytes, current: bytes, out: dict) -> Outcome:
        """Run the chain in a work directory of its own, made when the first step that needs the file applies."""
        ev = item.event
        source = E.get_path(ev, "file") if _has(ev, "file") else path
        work_dir: bytes | None = None
        ctx = self._context(item, source, current, b"", self._last_name)
        ran: list[str] = []
        reports = False  # a processor that reports the references it used ran (link_updater)
        proc: Processor | None = None
        own = b""  # our own name for the source in the work directory; ``source`` stays the event's file
        try:
            for proc in self.chain:
                if not proc.applies_to(ctx.basename):
                    continue
                if work_dir is None:  # the first processor that applies: the file is needed now
                    # its root checked first (SourceRefused, below): a file under a refused root is said to be
                    # refused, never "vanished", and is not looked for there
                    spec = self._source(ev)
                    if not os.path.exists(source):
                        return self._vanished(attempt, path)
                    work_dir = tempfile.mkdtemp(prefix=work_prefix(ev), dir=self.root)
                    ctx.work_dir = work_dir
                if not ran and ctx.input == source:
                    # Processors and their tools open files by name: they get our own name for the very file
                    # the event describes, opened beneath its root and checked (sourcefile.py), never the
                    # source's name, which could be swapped for a link meanwhile.
                    with open_source(spec) as f:
                        ctx.input = own = _own_copy(work_dir, f)
                result = checked(proc, ctx, proc.process(ctx))
                ran.append(proc.name)
                reports = reports or proc.reports_references
                ctx.input, ctx.basename = result.path, result.basename
        except RetryLater as exc:
            _remove(work_dir)
            delay = self._delay(item.attempts)
            with self._lock:
                self.counts["deferred"] += 1
            return Retry(f"{exc} (deferred)", after=delay)
        except ToolMissing as exc:  # uninstalled while running: the whole lane waits for it
            _remove(work_dir)
            return Retry(str(exc), lane=True)
        except SourceGone as exc:
            _remove(work_dir)
            return self._vanished(attempt, path, str(exc))
        except SourceRefused as exc:
            _remove(work_dir)
            return self._failed(attempt, out, current, None, exc)
        except Exception as exc:
            _remove(work_dir)
            if isinstance(exc, OSError) and not os.path.lexists(source):
                return self._vanished(attempt, path)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return Retry(f"work directory: {exc.strerror}", lane=True)
            return self._failed(attempt, out, current, proc, exc)
        finally:
            self._chain_notes(attempt, ctx)
        E.put_path(out, "name", ctx.basename)
        out["processed"] = [*out["processed"], *ran]
        if reports:
            out["references"] = refs.references_field(ctx.references)
        untouched = ctx.input in (source, own)
        if untouched and not _has(ev, "file"):  # content untouched (maybe renamed): send the source
            _remove(work_dir)
            self._count("unchanged" if ctx.basename == current else "processed")
            return Done([out])
        if work_dir is None:
            work_dir = tempfile.mkdtemp(prefix=work_prefix(ev), dir=self.root)
        try:
            if untouched and not ran:
                # An earlier fc-process's work file: it goes once we acknowledge the event,
                # maybe before our reader is done with it, so it gets a name of our own.
                with open_source(self._source(ev)) as f:
                    ctx.input = _own_copy(work_dir, f)
            final = _settle(work_dir, ctx.input, ctx.basename)
        except OSError as exc:
            _remove(work_dir)
            return self._failed(attempt, out, current, None, exc)
        E.put_path(out, "file", final)
        attempt.work_dir = work_dir
        with self._lock:
            self.counts["processed"] += 1
        return Done([out])

    def _context(
        self, item: Item, source: bytes, current: bytes, work_dir: bytes, last_name: Callable[[bytes], bytes | None]
    ) -> Context:
        ev = item.event
        return Context(
            input=source,
            original=E.get_path(ev, "path"),
            basename=current,
            work_dir=work_dir,
            event=ev,
            options=self._options(ev),
            current_name=last_name,
            waited=self._waited(item.attempts),
        )

    def _chain_notes(self, attempt: _Attempt, ctx: Context) -> None:
        if ctx.notes:  # a tool's stderr on success, a processor's warnings: for stderr, in the main thread
            attempt.note(*(f"{E.display(ctx.original)}: {n}" for n in ctx.notes))

    def _delay(self, attempts: int) -> float:
        """The wait before the next try of an event deferred ``attempts`` times."""
        return backoff.delay(attempts, self.settings.retry_delay, RETRY_CAP)

    def _waited(self, attempts: int) -> float:
        """How long an event tried ``attempts`` times has been deferred (by the schedule; restarts not counted)."""
        if not attempts:
            return 0.0
        return sum(self._delay(n) for n in range(min(attempts, 200)))

    def _options(self, ev: Mapping) -> dict[str, str]:
        opts = dict(self.settings.options)
        if self.settings.reference_wait is not None:
            opts.setdefault("reference_wait", str(self.settings.reference_wait))
        for key in ("document_root", "base_path"):  # a source may say where it is served from
            if key not in opts and isinstance(ev.get(key), str):
                opts[key] = ev[key]
        return opts

    def _source(self, ev: dict) -> SourceSpec:
        return self._confine(ev, from_event(ev, self.work_bases))

    def _confine(self, ev: Mapping, source: SourceSpec) -> SourceSpec:
        """The event's file as it may be read: through links out of its root with --follow-symlinks, beneath
        the --source root it names."""
        if self.settings.follow_symlinks and not _has(ev, "file"):
            source = source.replace(links_out_ok=True)
        return confined(source, ev, self.settings.sources, "fc-process")

    def _vanished(self, attempt: _Attempt, path: bytes, why: str = "") -> Done:
        if why:  # another file there now, or changed since the event
            attempt.note(f"{E.display(path)}: dropped, {why} (its newer event follows)")
        else:
            attempt.note(f"{E.display(path)}: vanished before it was processed; dropped (its deletion follows)")
        self._count("dropped")
        return Done([])

    def _failed(self, attempt: _Attempt, out: dict, name: bytes, proc: Processor | None, exc: Exception) -> Done:
        """The event goes on with ``error`` (docs/events.md rule 5): a tool's error or bad
        input is permanent for this content; an unreadable source is the source's problem."""
        message = str(exc) if isinstance(exc, ProcessorError) else f"{type(exc).__name__}: {exc}"
        who = proc.name if proc is not None else "fc-process"
        if not message.startswith(who):
            message = f"{who}: {message}"
        E.put_path(out, "name", name)
        out["error"] = message
        out["error_kind"] = "source" if isinstance(exc, OSError) else "permanent"
        # permanent for this content: an error, not a warning (the file is not published)
        attempt.note(f"{E.display(E.get_path(out, 'path'))}: {message}", error=True)
        self._count("failed")
        return Done([out], failed=True)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _last_name(self, path: bytes) -> bytes | None:
        conn = getattr(self._local, "db", None)
        if conn is None:
            assert self.ctx is not None
            uri = "file:" + urllib.parse.quote(str(self.ctx.state_path)) + "?mode=ro"
            conn = self._local.db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            with self._lock:
                self._conns.append(conn)
        return _name_row(conn, path)

    # -- main thread -------------------------------------------------------------------

    def record(self, db: sqlite3.Connection, item: Item, outcome: Done) -> None:
        if outcome.payload is _KEPT_NOTHING and not self._may_hold:
            return  # (the usual event of a rename-only chain: _plain_rename)
        attempt = outcome.payload if isinstance(outcome.payload, _Attempt) else None
        work_dir = None
        assert self.ctx is not None
        if attempt is not None:  # (None: nothing to say, no work directory: most items of a rename-only chain)
            work_dir = attempt.work_dir
            said, attempt.said = attempt.said, []  # once, even when this transaction is rolled back and redone
            for is_error, text in said:
                (self.ctx.rep.error if is_error else self.ctx.rep.warn)(text)
        may = self._may_hold
        for out in outcome.outputs:
            path = E.get_path(out, "path")
            deleted = out.get("kind") == "deleted"
            if "work_files" in may:
                # a newer version of the path, or its deletion, supersedes the copy kept for the one before
                db.execute("UPDATE work_files SET current=0 WHERE path=? AND current=1", (path,))
            if work_dir is not None and _has(out, "file"):
                may.add("work_files")
                db.execute(
                    "INSERT INTO work_files(seq, dir, at, path, current) VALUES (?, ?, ?, ?, 1)",
                    (out["hop"]["seq"], work_dir, time.time(), path),
                )
            # (a stylesheet's references, or the deletion of one that had some: the rest has nothing to write)
            if ("references" in out or (deleted and "css_refs" in may)) and refs.record_references(db, out, item.event):
                may.add("css_refs")
                self.ctx.enqueue_in(db, refs.outdated(db, path))
            if "error" in out or (not out["processed"] and not deleted):
                continue  # nothing ran: no rename now, and none before (a processor applies by name)
            name = E.get_path(out, "name")
            if not deleted and "css_refs" in may:
                # the stylesheets that use another name of this file are processed again (docs/css.md)
                self.ctx.enqueue_in(db, refs.dependents(db, path, name))
            if self._pending_names.get(path) == (b"" if deleted else name):
                del self._pending_names[path]  # in the names table from now on
            if deleted or name == path[path.rfind(b"/") + 1 :]:  # (the base name: not renamed)
                if "names" in may:
                    db.execute("DELETE FROM names WHERE path=?", (path,))
            else:
                may.add("names")
                db.execute("INSERT OR REPLACE INTO names(path, name) VALUES (?, ?)", (path, name))

    def released(self, seq: int) -> None:
        if self.ctx is not None:
            with self.ctx.transaction() as db:
                self._release_rows(db, "seq <= ? AND current=0", seq)

    def _release_rows(self, db: sqlite3.Connection, where: str, value: float) -> None:
        rows = db.execute(f"SELECT seq, dir FROM work_files WHERE {where}", (value,)).fetchall()
        for _, d in rows:
            _remove(bytes(d))
        if rows:
            db.execute(f"DELETE FROM work_files WHERE {where}", (value,))

    def progress(self) -> str:
        with self._lock:
            c = {k: n + self._quick_counts[k] for k, n in self.counts.items()}
        return ", ".join(f"{n} {k}" for k, n in c.items() if n)


def _said(done: Done, attempt: _Attempt) -> Done:
    """``done`` carrying what ``attempt`` has to say (record() says it, once)."""
    done.payload = attempt
    return done


def _name_row(db: sqlite3.Connection, path: bytes) -> bytes | None:
    row = db.execute("SELECT name FROM names WHERE path=?", (path,)).fetchone()
    return bytes(row[0]) if row else None


def _settle(work_dir: bytes, produced: bytes, name: bytes) -> bytes:
    """Move the chain's result to ``<work_dir>/<name>`` and drop the intermediate steps.

    The file keeps its final name where that is a safe, short entry (readers that
    only look at ``file`` see a sensible name); otherwise ``out<ext>``.
    """
    # base_name_problem again: a line stored by an older version reaches here unchecked
    short = len(name) <= 200 and not name.startswith((b"step-", b".")) and base_name_problem(name) is None
    target = os.path.join(work_dir, name if short else b"out" + safe_ext(split_name(name)[1]))
    os.rename(produced, target)
    for entry in os.listdir(work_dir):
        path = os.path.join(work_dir, entry)
        if path != target:
            _remove(path)
    return target


def _own_copy(work_dir: bytes, f: SourceFile) -> bytes:
    """A hard link to the open file ``f`` in ``work_dir``, else (another file system, a file of another owner
    under fs.protected_hardlinks, no /proc) a copy of it."""
    target = os.path.join(work_dir, b"step-input")
    try:
        os.link(b"/proc/self/fd/%d" % f.fileno(), target, follow_symlinks=True)  # the inode itself, not a name
    except OSError:
        with open(target, "xb", buffering=0) as out:
            copy_fd(f.fileno(), out.fileno())
    return target


def _remove(path: bytes | None) -> None:
    if path is None:
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
