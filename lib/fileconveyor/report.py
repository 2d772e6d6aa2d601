"""Messages for people, on stderr: ``fc-x: level: text`` (Reporter), a progress line redrawn in place
(Progress), and the library's own ``logging`` messages routed through them.  Used by the library (the stages,
the runner, transporter worker processes) and by cli/, which creates the Reporter of each command."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

# logging's levels, here so that a program that never logs never imports logging (a few ms of every start-up)
ERROR, WARNING, INFO, DEBUG = 40, 30, 20, 10


class Reporter:
    """Messages for people, on stderr, as ``fc-x: level: text``."""

    def __init__(self, prog: str, stderr: IO[str], verbosity: int = 0):
        self.prog = prog
        self.stderr = stderr
        self.verbosity = verbosity
        self._once: set[str] = set()
        self._progress_shown = False

    def _emit(self, text: str) -> None:
        if self._progress_shown:
            self.stderr.write("\r\x1b[K")
            self._progress_shown = False
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def error(self, text: str) -> None:
        self._emit(f"{self.prog}: error: {text}")

    def warn(self, text: str) -> None:
        if self.verbosity >= 0:
            self._emit(f"{self.prog}: warning: {text}")

    def warn_once(self, key: str, text: str) -> None:
        if key not in self._once:
            self._once.add(key)
            self.warn(text)

    def info(self, text: str) -> None:
        """Shown with --verbose."""
        if self.verbosity >= 1:
            self._emit(f"{self.prog}: {text}")

    def debug(self, text: str) -> None:
        if self.verbosity >= 2:
            self._emit(f"{self.prog}: debug: {text}")

    def progress(self, text: str) -> None:
        """A line redrawn in place; only call when stderr is a terminal."""
        self.stderr.write(f"\r\x1b[K{self.prog}: {text}")
        self.stderr.flush()
        self._progress_shown = True

    def end_progress(self) -> None:
        if self._progress_shown:
            self.stderr.write("\n")
            self.stderr.flush()
            self._progress_shown = False


def route_logging(reporter: Reporter) -> None:
    """File Conveyor's own library messages (``get_logger(__name__)`` in its modules) go out as the
    program's messages: ``fc-transport: warning: ...``, quieted by -q, more with -v; not bare lines.  Until a
    module asks for its logger (or something imported logging), nothing can log: logging is not imported here."""
    global _routed
    _routed = reporter
    if "logging" in sys.modules:
        _route(reporter)


def get_logger(name: str):  # -> logging.Logger (not imported at module level: see route_logging)
    """The logger of a library module (``get_logger(__name__)``), routed to the reporter of route_logging."""
    import logging

    if _routed is not None and _applied is not _routed:
        _route(_routed)
    return logging.getLogger(name)


def log_info(name: str, fmt: str, *args: object) -> None:
    """``get_logger(name).info(fmt, *args)``, but without importing logging when nothing could show the message:
    logging not imported yet (so no handler of an application's) and our reporter quieter than -v."""
    if "logging" not in sys.modules and (_routed is None or _routed.verbosity < 1):
        return
    get_logger(name).info(fmt, *args)


_routed: Reporter | None = None  # the reporter route_logging was given
_applied: Reporter | None = None  # the one the "fileconveyor" logger's handler reports to


def _route(reporter: Reporter) -> None:
    import logging

    global _applied

    class ToReporter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.levelno >= ERROR:
                reporter.error(text)
            elif record.levelno >= WARNING:
                reporter.warn(text)
            elif record.levelno >= INFO:
                reporter.info(text)
            else:
                reporter.debug(text)

    logger = logging.getLogger("fileconveyor")
    for old in [h for h in logger.handlers if getattr(h, "fc_reporter", False)]:
        logger.removeHandler(old)
    handler = ToReporter()
    handler.fc_reporter = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(reporter.verbosity, DEBUG))
    logger.propagate = False
    _applied = reporter


LEVELS = {-1: ERROR, 0: WARNING, 1: INFO}  # verbosity (-q, default, -v) -> level


def verbosity_of(level: int) -> int:
    """The verbosity whose messages pass ``level`` (a worker process gets the parent's level)."""
    return next((v for v, lv in LEVELS.items() if lv == level), 2)


class Progress:
    """Throttled progress on stderr when it is a terminal (or when forced)."""

    def __init__(self, reporter: Reporter, enabled: bool, interval: float = 0.2):
        self.reporter = reporter
        self.enabled = enabled
        self.interval = interval
        self._next = 0.0

    def update(self, text_fn: Callable[[], str]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self.reporter.progress(text_fn())

    def done(self, text: str | None = None) -> None:
        if self.enabled:
            if text:
                self.reporter.progress(text)
            self.reporter.end_progress()
