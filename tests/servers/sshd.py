"""The SFTP tests' sshd (sshd_start.py) as a session fixture: a missing sshd fails in CI and skips elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import unavailable

from .sshd_start import PASSPHRASE, SSHD, Missing, SshServer, _keygen, start

__all__ = ["PASSPHRASE", "SSHD", "SshServer", "_keygen", "sshd_server"]


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    try:
        server = start(tmp_path_factory.mktemp("sshd"))
    except Missing as e:
        unavailable(f"{e} (make test-deps installs it)")
    try:
        yield server
    finally:
        server.process.stop()
