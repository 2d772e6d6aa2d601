"""fc-conveyor's log and the symlinks on its way (fs.protected_symlinks, by hand).

fc-conveyor often runs as root and appends to its log: a symlink another user planted at the log's path, in a
directory they may write (``/tmp``, a shared log directory), made it append wherever the link points (measured
below: a line of ours at the end of the victim file).  A deliberately symlinked log in a directory only we (or
root) can write is followed, as is one in a sticky directory that belongs to us or to the directory's owner."""

from __future__ import annotations

import logging
import logging.handlers
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileconveyor.conveyor.logs import LogRefused, make_logger
from tests.conftest import ROOT
from tests.conveyor.test_config import minimal, write
from tests.security.shared_dirs import as_other, made


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_text("precious\n")
    return v


@pytest.fixture
def opened() -> Iterator[list[logging.Logger]]:
    logs: list[logging.Logger] = []
    yield logs
    for log in logs:
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)


def test_fc_conveyor_refuses_a_log_symlink_another_user_planted_in_a_sticky_directory(
    tmp_path: Path, victim: Path
) -> None:
    tmp = made(tmp_path / "tmp", 0o1777)  # as /tmp
    log_file = tmp / "fileconveyor.log"
    log_file.symlink_to(victim)
    as_other(log_file)
    conf = write(tmp_path, minimal())
    r = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-conveyor"), str(conf), "--log-file", str(log_file)],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "lib")},
    )
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith(b"fc-conveyor: error: LOG_FILE (--log-file): "), r.stderr
    assert b"will not follow symlink" in r.stderr and b"owner uid 65534" in r.stderr, r.stderr
    assert victim.read_text() == "precious\n"  # before: fc-conveyor's first log lines were appended to it


def test_a_log_symlink_of_ours_in_a_directory_others_may_write_is_not_followed(
    tmp_path: Path, victim: Path, opened: list[logging.Logger]
) -> None:
    # Not sticky: anyone may replace the link, whoever made it.
    shared = made(tmp_path / "shared", 0o777)
    (shared / "fc.log").symlink_to(victim)
    with pytest.raises(LogRefused, match=r"can be written by others \(mode 777"):
        opened.append(make_logger(shared / "fc.log", logging.INFO, logging.ERROR, console=False))
    assert victim.read_text() == "precious\n"


def test_a_planted_directory_symlink_on_the_logs_way_is_not_followed(tmp_path: Path, victim: Path) -> None:
    tmp = made(tmp_path / "tmp", 0o1777)
    (tmp / "fc").symlink_to(victim.parent)  # /tmp/fc/fileconveyor.log -> the victim's directory
    as_other(tmp / "fc")
    with pytest.raises(LogRefused, match="will not follow symlink"):
        make_logger(tmp / "fc" / "victim", logging.INFO, logging.ERROR, console=False)
    assert victim.read_text() == "precious\n"


def test_a_link_planted_before_a_rotation_is_not_followed(
    tmp_path: Path, victim: Path, opened: list[logging.Logger]
) -> None:
    tmp = made(tmp_path / "tmp", 0o1777)
    log_file = tmp / "fileconveyor.log"
    log = make_logger(log_file, logging.INFO, logging.ERROR, console=False)
    opened.append(log)
    handler = log.handlers[0]
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    handler.stream.close()
    handler.stream = None  # type: ignore[assignment]
    os.rename(log_file, f"{log_file}.1")  # what doRollover does, then the planted link in the gap
    log_file.symlink_to(victim)
    as_other(log_file)
    with pytest.raises(LogRefused):
        handler._open()
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("where", ["private", "sticky"])
def test_a_deliberate_log_symlink_is_followed(tmp_path: Path, where: str, opened: list[logging.Logger]) -> None:
    # /var/log/fileconveyor.log -> /srv/logs/fc.log: a directory only we write, or a sticky one with our link.
    target = made(tmp_path / "logs", 0o700) / "fc.log"
    here = made(tmp_path / "var", 0o755 if where == "private" else 0o1777)
    (here / "fileconveyor.log").symlink_to(target)
    log = make_logger(here / "fileconveyor.log", logging.INFO, logging.ERROR, console=False)
    opened.append(log)
    log.info("Synced: 'a.css'")
    assert target.read_text().endswith("Synced: 'a.css'\n")
    assert (target.stat().st_mode & 0o777) == 0o600


def test_a_log_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    tmp = made(tmp_path / "tmp", 0o1777)
    log_file = tmp / "fileconveyor.log"
    log_file.write_text("")
    log_file.chmod(0o666)  # made first by another user: theirs to read and rewrite
    as_other(log_file)
    with pytest.raises(LogRefused, match=r"belongs to another user \(uid 65534\)"):
        make_logger(log_file, logging.INFO, logging.ERROR, console=False)
    assert log_file.read_text() == ""
