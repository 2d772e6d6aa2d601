"""fc-verify by the transporter's own stat on real SFTP (OpenSSH) and FTP (pyftpdlib) servers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from fileconveyor.cli import verify as verify_cli
from fileconveyor.transporters import parse_destination
from tests.conftest import call
from tests.record.conftest import decode, make_site, record, transport, watch
from tests.servers.ftpd import ftp_server  # noqa: F401 - fixtures
from tests.servers.sshd import sshd_server  # noqa: F401
from tests.transporters.conftest import Backend, ftp_backend, sftp_backend  # noqa: F401


@pytest.mark.parametrize("kind", ["sftp", "ftp"])
def test_damage_found_on_a_real_server(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend: Backend = request.getfixturevalue(f"{kind}_backend")
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    spec = backend.spec + "?" + urlencode({**backend.settings, "name": "cdn"})
    assert parse_destination(spec).name == "cdn"
    site = make_site(tmp_path)
    evs = watch(site, tmp_path / "w.db")
    tp = backend.make()
    for e in evs:
        tp.upload(e["path"], e["rel"])
    db = tmp_path / "s.db"
    assert record(db, transport(evs, None, "cdn", "https://cdn.example/"), tmp_path / "r.db").status == 0
    assert call(verify_cli.main, ["--db", str(db), "--to", spec]).status == 0

    tp.delete("css/a.css")
    short = tmp_path / "short"
    short.write_bytes(b"x")
    tp.upload(str(short), "img/logo.png")
    res = call(verify_cli.main, ["--db", str(db), "--to", spec, "--jobs", "2"])
    assert res.status == 1, res.stderr
    report = decode(res.stdout)
    assert {r["path"].rsplit("/site/", 1)[-1]: r["problem"] for r in report} == {
        "css/a.css": "missing",
        "img/logo.png": "different",
    }
    assert all(r["check"] == "stat" for r in report)
    assert next(r for r in report if r["problem"] == "different")["remote_size"] == 1
