"""A file a thousand directories deep reaches the destination (file://, sftp://) and leaves it again.

The walk down the destination's directories (file://: one descriptor opened beneath the other; sftp: an lstat of
each) recursed once per directory: past Python's recursion limit (about 1,000) every such file failed with
"maximum recursion depth exceeded", an error no retry could fix, while the source opened fine (the kernel takes
paths of up to 4,096 bytes).  Anyone who may make directories in the tree could make a file that never got out,
and a forged line with such a rel hit the limit on every retry.  Its deletion then removed the directories fc-transport
had made one by one, and over SFTP looked at every directory above each again (600,000 lstats, 4.5 minutes): now
only the one removed.  Real fc-transport, a real sshd."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.servers.sshd import SshServer, sshd_server  # noqa: F401 - fixture
from tests.transport.conftest import env, event, jsonl, lines, sftp_spec, transport  # noqa: F401 - fixture

DEPTH = 1100  # directories: past Python's default recursion limit (1000), within PATH_MAX (2 bytes each)


def _rm(path: Path) -> None:
    subprocess.run(["rm", "-rf", str(path)], check=True)  # (shutil.rmtree recurses too)


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(the source root, the rel of a file DEPTH directories below it)."""
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEPTH):  # made one beneath the other: os.makedirs recurses too
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
    with open(os.open("deep.css", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
        f.write(b"deep { }\n")
    os.close(fd)
    yield src, "d/" * DEPTH + "deep.css"
    _rm(src)


@pytest.fixture(params=["file", "sftp"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if request.param == "file":
        files = tmp_path / "dest"
        yield "file://" + quote(str(files)), files
    else:
        server: SshServer = request.getfixturevalue("sshd_server")
        files = server.files / f"deep-{os.getpid()}-{tmp_path.name}"
        yield sftp_spec(server, files), files
    _rm(files)


def test_a_file_deep_down_is_uploaded_and_deleted(
    deep: tuple[Path, str],
    dest: tuple[str, Path],
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
) -> None:
    src, rel = deep
    spec, files = dest
    args = ["--to", spec, "--state", str(tmp_path / "t.db"), "--drain-timeout", "10"]
    ev = event(src, rel)
    up = transport(args, env, jsonl([{**ev, "ino": os.stat(src / rel).st_ino}]), timeout=300)
    assert [e.get("transported") for e in lines(up.stdout)] == ["uploaded"], up.stderr.decode()[-2000:]
    assert os.path.getsize(files / rel) == 9
    os.unlink(src / rel)
    gone = transport(args, env, jsonl([event(src, rel, "deleted")]), timeout=300)
    assert [e.get("transported") for e in lines(gone.stdout)] == ["deleted"], gone.stderr.decode()[-2000:]
    assert not (files / rel).exists() and not (files / "d").exists()  # the directories it made went with it
