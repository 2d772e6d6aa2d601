"""When a reader can know that no earlier process read a writer's lines: then nothing was lost, and neither a
hold nor a replay is needed (docs/durability.md, "Holding").

A reader holds a writer's lines and has it re-send what it kept because a process that read the same input
before ours (a killed predecessor) may have read lines and died with them.  Such a process ended before ours
started.  Each writer therefore records, when it opens its state file and before it writes any line of the
run, when that run began and the last seq it had given before it (``record``).  Every line after that seq
was written after the run began; if the run began after our process did, none of those lines can have been
read by a process that ended before ours, and the lines up to that seq are ours already when our durable mark
covers them (``nothing_lost``).  In a pipeline started at once, every stage's writer opens its state after its
imports, tens of milliseconds after the processes were made: a fresh pipeline has no first-contact replay, and
a cron run whose reader took everything last time none either.

Times are CLOCK_BOOTTIME (never steps, unlike the wall clock) with the boot's id: another boot, or a system
without /proc, never counts as safe.  A process's start is known to 1/CLK_TCK (10 ms); MARGIN covers it.
"""

from __future__ import annotations

import os
import time

from . import ack_check

MARGIN_NS = 20_000_000  # a run must begin this long after our process did (two clock ticks of /proc's start time)
KEYS = ("run_boot", "run_at", "run_seq0")


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def process_start_ns(pid: int | str = "self") -> int | None:
    """When process ``pid`` was made, in CLOCK_BOOTTIME nanoseconds (rounded down to a clock tick)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22, after the command name
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


_claimed = False


def reader_start() -> int | None:
    """Since when a reader of this process may have read its input: the process's start for the first reader
    (a stage's command has one), the moment of asking for any later one (a library caller that runs a reader
    again in the same process: the earlier one may have read lines of a writer whose run began after the
    process did)."""
    global _claimed
    if _claimed:
        return now_ns()
    _claimed = True
    return process_start_ns()


def current(last_seq: int, out: tuple[int, int] | None = None) -> dict[str, str | int]:
    """What a writer records when it opens its state file: this boot, now, the last seq given before, and the
    pipe or FIFO its lines go to (``out``: st_dev, st_ino; ack_check.writes_into asks it); the last run's
    ``ending`` is cleared (its pipes are gone, and their numbers may come again)."""
    where = f"{out[0]}:{out[1]}" if out is not None else ""
    return {"run_boot": boot_id() or "", "run_at": now_ns(), "run_seq0": last_seq, "run_out": where, "run_next": ""}


def ending(out: tuple[int, int] | None, after: list[tuple[int, int]] | None = None) -> dict[str, str]:
    """What a writer whose lines go into pipe or FIFO ``out`` records as it ends, before it lets go of its state
    file: the pipes its lines went on into through the processes reading it (ack_check.downstream).  From then
    until its exit it still holds ``out`` without the state file, as a forger would, and the pass-through behind
    it (tee) then closes its input and holds only its outputs: a reader that looks only then knows it by this
    (ack_check.writes_into).  Nothing for another output (a file, none): no reader asks.  ``after``: those pipes,
    when the writer has just looked them up itself (ack_check.chain)."""
    if out is None:
        return {}
    pipes = ack_check.downstream(out) if after is None else after
    return {"run_next": " ".join(f"{dev}:{ino}" for dev, ino in pipes)}


def nothing_lost(run: dict[str, object] | None, started_ns: int | None, boot: str | None, mark: int | None) -> bool:
    """Whether a reader whose process began at ``started_ns`` (on boot ``boot``), having taken its writer's
    lines up to ``mark`` (None: none of this epoch), can have lost nothing of the writer's lines: the writer's
    run (``run``, as ``current`` recorded it) began after our process, and every line before the run is ours."""
    if run is None or started_ns is None or not boot:
        return False
    at, seq0 = run.get("run_at"), run.get("run_seq0")
    if run.get("run_boot") != boot or type(at) is not int or type(seq0) is not int:
        return False
    if at <= started_ns + MARGIN_NS:
        return False
    return seq0 <= (mark if mark is not None else 0)
