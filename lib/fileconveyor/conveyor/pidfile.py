"""fc-conveyor's PID file: the file the Drupal CDN module (and `kill -TERM $(cat ...)`) reads, and the check that
one config is not run twice."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from .. import private
from ..errors import ConfigError, Exit


class AlreadyRunning(ConfigError):
    """Another fc-conveyor (or another supervisor's stages) runs this config: exit 4."""

    exit = Exit.RETRY


class PidFile:
    """The file the Drupal CDN module (and `kill -TERM $(cat ...)`) reads.  Mode 0600,
    re-created if someone deletes it, removed at exit only if it is still ours."""

    def __init__(self, path: Path):
        self.path = path

    def acquire(self) -> None:
        other = running_pid(self.path)
        if other is not None and other != os.getpid():
            raise AlreadyRunning(f"File Conveyor is already running with this PID file (pid {other}): {self.path}")
        self.write()

    def write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private.replace_file(self.path, f"{os.getpid()}\n".encode(), tmp)
        except OSError as exc:
            raise ConfigError(f"PID_FILE (--pid-file): cannot write {self.path}: {exc.strerror}") from None

    def refresh(self) -> None:
        if not self.path.exists():
            self.write()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if _read(self.path) == str(os.getpid()):
                self.path.unlink()


def _read(path: Path) -> str | None:
    """What a PID file says, or None when it is no file of ours to believe.  In a directory others can write
    (/tmp, a shared /var/run) another user may have put anything there: a FIFO (reading it waited for ever: no
    fc-conveyor started, --status hung), a link to /dev/zero (read to the end of memory), or a file of theirs
    naming a process of theirs called "conveyor" (AlreadyRunning for ever), or one that `kill -TERM $(cat ...)`
    should not kill.  Only a regular file, not through a symlink, ours or root's, and its first few bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or private.foreign_problem(path, st, root_ok=True):
            return None
        return os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def running_pid(path: Path) -> int | None:
    """The pid in a PID file if that process is alive and is fc-conveyor."""
    try:
        pid = int((_read(path) or "").split()[0])
    except (ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc (macOS): trust the live pid
    return pid if b"conveyor" in cmdline else None
