"""fc-verify against a real HTTP server serving the destination folder: missing, truncated, changed, stale and
extra files, redirects, server errors, HTTPS with an untrusted and a trusted certificate, and --repair."""

from __future__ import annotations

import base64
import http.server
import os
import sqlite3
import ssl
import threading
from pathlib import Path

import pytest

from fileconveyor.cli import verify as verify_cli
from tests.conftest import call
from tests.record.conftest import decode, make_site, record, transport, watch
from tests.servers.certs import self_signed


def synced(tmp_path: Path, cdn: Path, base: str) -> tuple[Path, Path, list[dict]]:
    site = make_site(tmp_path)
    evs = watch(site, tmp_path / "w.db")
    db = tmp_path / "synced_files.db"
    res = record(db, transport(evs, cdn, "cdn", base), tmp_path / "r.db")
    assert res.status == 0, res.stderr
    return site, db, evs


def verify(db: Path, *extra: str) -> tuple[int, list[dict], str]:
    res = call(verify_cli.main, ["--db", str(db), *extra])
    return res.status, decode(res.stdout), res.stderr


def problems(report: list[dict]) -> dict[str, str]:
    return {r["path"].rsplit("/site/", 1)[-1]: r["problem"] for r in report if "path" in r}


def damage(site: Path, cdn: Path) -> None:
    (cdn / "css" / "a.css").unlink()  # missing
    data = (cdn / "css" / "b.css").read_bytes()
    (cdn / "css" / "b.css").write_bytes(data[: len(data) // 2])  # truncated
    (cdn / "extra.txt").write_text("nobody uploaded me\n")  # extra
    (cdn / ".fc-0123456789abcdef.tmp").write_text("a leftover\n")  # extra
    (site / "index.html").unlink()  # stale: the source is gone, the remote copy is not


def test_a_healthy_destination_is_all_well(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    _, db, _ = synced(tmp_path, cdn, base)
    status, report, err = verify(db)
    assert (status, report) == (0, [])
    assert "4 file record(s) checked: 4 ok" in err


def test_damage_found_over_http(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    site, db, _ = synced(tmp_path, cdn, base)
    damage(site, cdn)
    status, report, err = verify(db, "--jobs", "3")
    assert status == 1
    assert problems(report) == {"css/a.css": "missing", "css/b.css": "different", "index.html": "stale"}
    b = next(r for r in report if r["problem"] == "different")
    assert b["check"] == "url" and b["remote_size"] == b["expected_size"] // 2
    miss = next(r for r in report if r["problem"] == "missing")
    assert miss["detail"].startswith("HTTP 404") and miss["url"] == base + "css/a.css"
    assert "1 ok, 1 missing, 1 different, 1 stale" in err


def test_damage_found_by_the_transporters_stat_and_extra_files(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    site, db, _ = synced(tmp_path, cdn, base)
    damage(site, cdn)
    status, report, _ = verify(db, "--to", f"file://{cdn}?name=cdn", "--find-extra")
    assert status == 1
    assert problems(report) == {"css/a.css": "missing", "css/b.css": "different", "index.html": "stale"}
    assert all(r["check"] == "stat" for r in report if "path" in r)
    extra = sorted(r["remote"] for r in report if r["problem"] == "extra")
    assert extra == [".fc-0123456789abcdef.tmp", "extra.txt"]
    # without --find-extra, files nobody recorded are none of fc-verify's business
    assert not [r for r in verify(db, "--to", f"file://{cdn}?name=cdn")[1] if r["problem"] == "extra"]


def test_same_size_corruption_and_source_changes(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    site, db, _ = synced(tmp_path, cdn, base)
    logo = cdn / "img" / "logo.png"
    data = bytearray(logo.read_bytes())
    data[10] ^= 0xFF
    logo.write_bytes(bytes(data))
    assert verify(db)[0] == 0  # HEAD sees the right size
    status, report, _ = verify(db, "--get")
    assert status == 1 and problems(report) == {"img/logo.png": "different"}
    assert "SHA-256" in report[0]["detail"]
    (site / "css" / "a.css").write_text("changed after the sync\n")
    assert problems(verify(db)[1]) == {"css/a.css": "different"}


def test_redirects_are_followed_and_errors_are_not_missing(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    _site, db, _ = synced(tmp_path, cdn, base)
    con = sqlite3.connect(db)
    con.execute("UPDATE synced_files SET url = replace(url, ?, ?) WHERE url LIKE '%a.css'", (base, base + "moved/"))
    con.execute("UPDATE synced_files SET url = replace(url, ?, ?) WHERE url LIKE '%b.css'", (base, base + "broken/"))
    con.execute("UPDATE synced_files SET url = 'http://127.0.0.1:9/x' WHERE url LIKE '%index.html'")
    con.commit()
    status, report, err = verify(db, "--timeout", "5")
    assert status == 1
    assert problems(report) == {"css/b.css": "error", "index.html": "error"}
    assert next(r for r in report if r["path"].endswith("b.css"))["detail"].startswith("HTTP 500")
    assert "2 ok" in err and "2 could not be checked" in err


def test_files_deleted_at_the_source_by_fc_record_are_not_stale(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    site = make_site(tmp_path)
    evs = watch(site, tmp_path / "w.db")
    db = tmp_path / "s.db"
    args = (
        "--source",
        f"site={site}",
        "--delete-source-after",
        "0",
        "--require-server",
        "cdn",
        "--drain-timeout",
        "10",
    )
    assert record(db, transport(evs, cdn, "cdn", base), tmp_path / "r.db", *args).status == 0
    assert not (site / "css" / "a.css").exists()
    assert verify(db)[:2] == (0, [])
    (cdn / "css" / "a.css").unlink()  # now the only copy is gone: that is a problem
    status, report, _ = verify(db)
    assert status == 1 and problems(report) == {"css/a.css": "missing"}


def test_repair_heals(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    site, db, _ = synced(tmp_path, cdn, base)
    damage(site, cdn)
    res = call(verify_cli.main, ["--db", str(db), "--repair"])
    assert res.status == 1
    fixes = decode(res.stdout)
    assert sorted((e["kind"], e["rel"]) for e in fixes) == [
        ("created", "css/a.css"),
        ("deleted", "index.html"),
        ("modified", "css/b.css"),
    ]
    assert all(e["v"] == 1 and e["source"] == "site" and e["root"] == str(site) and e["via"] == "verify" for e in fixes)
    assert next(e for e in fixes if e["kind"] == "deleted")["name"] == "index.html"
    # what `fc-verify --repair | fc-transport ... | fc-record` does
    assert record(db, transport(fixes, cdn, "cdn", base), tmp_path / "r.db").status == 0
    assert verify(db)[:2] == (0, [])
    assert not (cdn / "index.html").exists()


def test_progress_and_usage(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    _, db, _ = synced(tmp_path, cdn, base)
    res = call(verify_cli.main, ["--db", str(db), "--progress"])
    assert "4/4 checked" in res.stderr
    assert call(verify_cli.main, ["--db", str(tmp_path / "none.db")]).status == 3
    assert call(verify_cli.main, []).status == 2
    res = call(verify_cli.main, ["--db", str(db), "--check", "stat"])
    assert res.status == 1 and "no --to for server 'cdn'" in res.stdout.decode()


@pytest.fixture
def https_root(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An HTTPS server with a certificate from a CA made here: (folder, base URL, CA file)."""
    pem, keyfile = self_signed(tmp_path)
    cdn = tmp_path / "cdn"
    cdn.mkdir()
    from tests.record.conftest import _Quiet

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(cdn)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem, keyfile)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield cdn, f"https://127.0.0.1:{server.server_address[1]}/", pem
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_https_is_verified(tmp_path: Path, https_root: tuple[Path, str, Path]) -> None:
    cdn, base, ca = https_root
    _, db, _ = synced(tmp_path, cdn, base)
    status, report, _ = verify(db, "--timeout", "5")
    assert status == 1 and {r["problem"] for r in report} == {"error"}
    assert "certificate" in report[0]["detail"]
    assert verify(db, "--ca-file", str(ca))[:2] == (0, [])
    (cdn / "css" / "a.css").unlink()
    assert problems(verify(db, "--ca-file", str(ca))[1]) == {"css/a.css": "missing"}


def test_a_name_that_is_not_utf8_is_reported_exactly(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    cdn, base = http_root
    site = tmp_path / "site"
    site.mkdir()
    raw = b"caf\xe9.css"
    with open(bytes(site) + b"/" + raw, "wb") as f:
        f.write(b"body{}")
    evs = watch(site, tmp_path / "w.db")
    evs = [
        {**e, "server": "cdn", "remote": e["rel"], "remote_b64": e["rel_b64"], "transported": "uploaded"} for e in evs
    ]
    evs = [{**e, "url": base + "caf%E9.css"} for e in evs]
    db = tmp_path / "s.db"
    assert record(db, evs, tmp_path / "r.db").status == 0
    with open(bytes(cdn) + b"/" + raw, "wb") as f:
        f.write(b"body{}")
    assert verify(db, "--to", f"file://{cdn}?name=cdn")[:2] == (0, [])
    os.unlink(bytes(cdn) + b"/" + raw)
    status, report, _ = verify(db, "--to", f"file://{cdn}?name=cdn")
    assert status == 1 and report[0]["problem"] == "missing"
    assert base64.b64decode(report[0]["path_b64"]) == bytes(site) + b"/" + raw
    assert base64.b64decode(report[0]["remote_b64"]) == raw
