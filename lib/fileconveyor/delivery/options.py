"""How a stage runs (Options, from the command line) and what it counted (Counters): shared by the runner
and the parts it is made of (intake.py, runner.py)."""

from __future__ import annotations

from typing import Any

from .streams import MAX_LINE_BYTES


class Options:
    def __init__(
        self,
        state_path: Any,
        input: str | None = None,  # None/"-": stdin
        output: str | None = None,  # None/"-": stdout; a FIFO path is reopened for each reader
        drain_timeout: float = 120.0,  # after the end of input, how long without progress before giving up (exit 4)
        max_queue: int = 100_000,  # stop reading while this many items are unfinished
        progress: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,  # a longer line is skipped unread (--max-line-bytes)
    ):
        self.state_path = state_path
        self.input = input
        self.output = output
        self.drain_timeout = drain_timeout
        self.max_queue = max_queue
        self.progress = progress
        self.max_line_bytes = max_line_bytes


class Counters:
    def __init__(self) -> None:
        self.read = 0
        self.duplicates = 0
        self.bad = 0
        self.written = 0
        self.failed = 0
        self.retries = 0
        self.quarantined = 0
