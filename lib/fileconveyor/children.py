"""Helpers for the child processes File Conveyor starts (scan workers, transporter workers, stages)."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """In a child: get ``sig`` when the parent dies, even by kill -9, so no orphan holds files or connections.

    Linux only (prctl); elsewhere a child notices its parent is gone when its pipe to it closes.  A parent that
    died before prctl took effect never sends the signal: exit at once then."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def end(proc: subprocess.Popen[bytes], wait: float) -> None:
    """Give ``proc`` ``wait`` seconds to exit on its own (its input closed), then kill it; reaped either way."""
    import subprocess  # not at the top: fc-watch's scan workers use this module, and no subprocess

    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
