"""The FTP and FTPS servers of the tests (ftpd_start.py) as session fixtures: a missing package fails in CI (where
make test-deps installed it) and skips elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable

from .ftpd_start import PASSWORD, USER, FtpServer, Missing, require, start

__all__ = ["PASSWORD", "USER", "FtpServer", "_require_module", "ftp_server", "ftps_server"]


def _start(d: Path, tls: bool) -> FtpServer:
    try:
        return start(d, tls)
    except Missing as e:
        unavailable(f"{e} (make test-deps installs it)")


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    server = _start(tmp_path_factory.mktemp("ftpd"), tls=False)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    server = _start(tmp_path_factory.mktemp("ftpsd"), tls=True)
    yield server
    server.process.stop()


def _require_module(name: str) -> None:
    """A missing Python package fails in CI (where make test-deps installed it) and skips elsewhere (the other
    servers' fixtures use it too)."""
    try:
        require(name)
    except Missing as e:
        unavailable(f"{e} (make test-deps installs it)")
