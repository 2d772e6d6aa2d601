"""fc-conveyor's log: the original daemon's format, owner-only files that rotate, and each stage's stderr line
read as a log level."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path
from typing import Any

from .. import private
from ..errors import ConfigError

LOG_FORMAT = "%(asctime)s - %(name)-25s - %(levelname)-8s - %(message)s"
LOG_BACKUPS = 5


class LogRefused(ConfigError):
    """The log's path leads through a symlink others could have planted, or to another user's file."""


class _PrivateLog(logging.handlers.RotatingFileHandler):
    """The log names every file synced and every failure: owner-only, each new file after a rotation too.

    fc-conveyor often runs as root and its log may be in a directory others can write (``/tmp``, a shared log
    directory): a symlink there is followed only as the kernel's fs.protected_symlinks would (private.link_problem),
    and a file another user owns is refused (they could read and rewrite it), at every open, rotations too."""

    def _open(self) -> Any:
        try:
            fd = private.open_append(self.baseFilename)
        except private.NotOurs as exc:
            raise LogRefused(str(exc)) from None
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


def make_logger(log_file: Path, file_level: int, console_level: int, console: bool = True) -> logging.Logger:
    log = logging.getLogger("FileConveyor")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(min(file_level, console_level))
    fmt = logging.Formatter(LOG_FORMAT)
    private.private_dir(log_file.parent)
    for n in range(LOG_BACKUPS + 1):  # written by an older version with the umask's mode
        private.tighten(f"{log_file}.{n}" if n else log_file)
    fh = _PrivateLog(log_file, maxBytes=5 * 1024 * 1024, backupCount=LOG_BACKUPS)
    fh.setLevel(file_level)
    fh.setFormatter(fmt)
    log.addHandler(fh)
    if console:
        ch = logging.StreamHandler()
        ch.setLevel(console_level)
        ch.setFormatter(fmt)
        log.addHandler(ch)
    return log


def where_syncs_show(log: logging.Logger) -> str:
    """When the console does not show each file synced (INFO) and the log file does, where to look: a newcomer's
    first run printed "Fully up and running" and then nothing, however many files it sent."""
    files = [h for h in log.handlers if isinstance(h, logging.FileHandler) and h.level <= logging.INFO]
    consoles = [h for h in log.handlers if type(h) is logging.StreamHandler]
    if not files or not consoles or all(h.level <= logging.INFO for h in consoles):
        return ""
    return f" Each file synced is logged in {files[0].baseFilename} (-v: here too)."


def level_of(line: str) -> int:
    """A stage's stderr line ("fc-x: error: ...") as a log level."""
    head = line.split(": ", 2)
    kind = head[1] if len(head) > 1 else ""
    return {"error": logging.ERROR, "warning": logging.WARNING, "debug": logging.DEBUG}.get(kind, logging.INFO)
