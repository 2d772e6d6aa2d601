"""fc-watch from start to end: its state file, its output, the scan or the live watch, and how it ends.

cli/watch.py parses the flags into a ``Config`` and calls ``watch``.  The order matters for durability
(docs/durability.md): the state is opened and the output too (a FIFO: once a reader has it), then what the last
run's readers did not take is replayed, then the trees are compared and watched; at the end every row is
committed and, into a pipe no File Conveyor reader acknowledges, the writer waits until its reader has read
what it wrote (or has gone: then this run's lines count as not delivered and go again next run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from ...delivery import acks
from ...delivery.writer import Output, Writer
from ...digests import sha256
from ...errors import Exit, Stopped
from ...report import Progress, Reporter
from ...state import default_state_dir
from ...watchers.base import make_backend
from ...watchers.links import skipped_message
from ...watchers.tree import Filters
from .stage import Core, Options, Source, run_live
from .state import WatchState

SETTLE_TIMEOUT = 30.0  # at the end, how long to wait for a reader that is not a File Conveyor stage to read


class Config:
    def __init__(
        self,
        sources: list[Source],
        filters: Filters,
        options: Options,
        state_path: Path,
        output: str | None = None,  # None/"-": stdout; else a file (appended) or a named FIFO
        scan_once: bool = False,
        backend: str = "auto",
        interval: float = 2.0,
    ):
        self.sources = sources
        self.filters = filters
        self.options = options
        self.state_path = state_path
        self.output = output
        self.scan_once = scan_once
        self.backend = backend
        self.interval = interval


def default_state_path(sources: Sequence[Source]) -> Path:
    """One state file per set of sources (names and roots), under the default state directory."""
    h = sha256()
    for s in sorted(sources, key=lambda s: s.name):
        h.update(s.name.encode() + b"\0" + s.root + b"\0")
    return default_state_dir() / f"watch-{sources[0].name}-{h.hexdigest()[:12]}.db"


def watch(
    cfg: Config,
    stdout: IO[bytes],
    rep: Reporter,
    progress: Progress,
    should_stop: Callable[[], bool],
    wake_fd: int,
) -> int:
    """Run fc-watch; the exit status."""
    output = Output(cfg.output, stdout)
    # A FIFO's reader that goes is waited for, and given what our readers did not acknowledge (WatchState.resend);
    # one that is a File Conveyor reader registers as a new reader at once, and check_readers re-sends it the
    # rest of what it had not acknowledged.
    writer = Writer(
        output, "wait", resend=lambda: state.resend(), should_stop=should_stop, warn=rep.warn, info=rep.info
    )
    state = WatchState(cfg.state_path, writer)
    try:
        for src in cfg.sources:
            src.prefix, old = state.bind_source(src.name, src.root)
            if old is not None:
                rep.warn(f"source {src.name!r} was {os.fsdecode(old)}, now {os.fsdecode(src.root)}: starting it afresh")
        if not writer.open():
            return Exit.OK  # stopped while waiting for a reader on the FIFO
        core = Core(
            cfg.sources,
            state,
            cfg.filters,
            cfg.options,
            on_unreadable=lambda src, rel, exc: rep.warn_once(
                f"unreadable:{src.index}:{rel!r}",
                f"cannot read {os.fsdecode(os.path.join(src.root, rel))}: {exc.strerror}; skipping it",
            ),
            on_skipped=lambda src, rel, published: rep.warn(skipped_message(src.root, rel, published)),
        )
        replayed = state.replay()
        if replayed:
            # routine, not a crash: the last run's reader did not take them all (it stopped, or acknowledges later)
            rep.info(f"re-sent {replayed} event(s) the last run's reader did not take (or acknowledge)")
            for k in acks.gone_behind(state.db, state.epoch, state.batch):  # (the user ends it: --forget-reader)
                rep.warn(acks.gone_warning("fc-watch", cfg.state_path, k, state.batch))
        started = time.monotonic()
        rep.info(f"state: {cfg.state_path}")
        for src in cfg.sources:
            rep.info(f"source {src.name!r}: {os.fsdecode(src.root)}")
        c = core.counts
        if progress.enabled:
            core.on_progress = lambda: progress.update(
                lambda: f"scanned {c.scanned} files: {c.created} created, {c.modified} modified, {c.deleted} deleted"
            )
        core.should_stop = should_stop
        try:
            if cfg.scan_once:
                for src in cfg.sources:
                    if should_stop():
                        break
                    core.scan(src)
                core.drain(should_stop)
            else:
                backend = make_backend(cfg.backend, core, rep, cfg.interval)
                rep.info(f"backend: {backend.name}")
                try:
                    run_live(
                        core,
                        backend,
                        should_stop,
                        [wake_fd],
                        on_ready=lambda: rep.info(
                            f"ready: catch-up scan done ({core.counts.scanned} files), watching with {backend.name}"
                        ),
                    )
                finally:
                    backend.close()
        except Stopped:
            pass  # a scan cut short by SIGTERM/SIGINT: end as after any stop (what was sent is in the state)
        progress.done()
        rep.info(
            f"{c.scanned} files scanned, {c.created} created, {c.modified} modified, {c.deleted} deleted "
            + (f"({c.skipped} symlink(s) leading outside, not published) " if c.skipped else "")
            + f"in {time.monotonic() - started:.1f}s"
        )
        state.commit()
        if not state.settle_output(SETTLE_TIMEOUT, should_stop):
            rep.info(
                "the reader of our output closed it before the end (head, a stage that failed?): "
                "this run's events are sent again next run"
            )
            return Exit.BROKEN_PIPE
    finally:
        state.close()
        writer.close()
    return Exit.OK
