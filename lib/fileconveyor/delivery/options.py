"""How a stage runs (Options, from the command line) and what it counted (Counters): shared by the runner
and the parts it is made of (intake.py, runner.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .streams import MAX_LINE_BYTES


@dataclass
class Options:
    state_path: Any
    input: str | None = None  # None/"-": stdin
    output: str | None = None  # None/"-": stdout; a FIFO path is reopened for each reader
    drain_timeout: float = 120.0  # after the end of input, how long without progress before giving up (exit 4)
    max_queue: int = 100_000  # stop reading while this many items are unfinished
    progress: bool = False
    max_line_bytes: int = MAX_LINE_BYTES  # a longer line is skipped unread (--max-line-bytes)


@dataclass
class Counters:
    read: int = 0
    duplicates: int = 0
    bad: int = 0
    written: int = 0
    failed: int = 0
    retries: int = 0
    quarantined: int = 0
