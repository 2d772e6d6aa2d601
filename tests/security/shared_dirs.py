"""Directories others may write (``/tmp``, a shared log or run directory) and what another user leaves there, for
the tests of files File Conveyor makes at a path the user named."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import unavailable

OTHER = 65534  # nobody
STICKY = 0o1777  # as /tmp


def made(path: Path, mode: int = STICKY) -> Path:
    """Directory ``path`` with exactly ``mode`` (past the umask)."""
    path.mkdir()
    path.chmod(mode)
    return path


def as_other(path: Path) -> None:
    """Make ``path`` (a symlink itself, not what it names) another user's; needs root."""
    if os.geteuid() != 0:
        unavailable("making a file another user's needs root (CI runs as root)")
    os.lchown(path, OTHER, OTHER)


PRECIOUS = "precious\n"


def planted(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A victim file holding PRECIOUS, and a symlink to it at ``name`` in a directory as /tmp, another user's when
    we are root (as one user can do to another in /tmp)."""
    victim = tmp_path / "victim"
    victim.write_text(PRECIOUS)
    link = made(tmp_path / "tmp") / name
    link.symlink_to(victim)
    if os.geteuid() == 0:
        os.lchown(link, OTHER, OTHER)
    return victim, link
