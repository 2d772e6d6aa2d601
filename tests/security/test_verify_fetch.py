"""fc-verify fetches a recorded row's ``url``, and fc-record records whatever URL its input line said: one forged line
(a stage of someone else's before fc-record) made every later fc-verify run fetch a place of the forger's choosing,
directly or by a redirect (http://169.254.169.254/, an internal port, ftp://: urllib follows redirects to ftp).

Now fc-verify follows a redirect only on the same host (same scheme and port, or http to https), and when it knows
the server's base URL (``--to ... --url``) it fetches no recorded URL outside it: the row is an ``error``.  Real
fc-record and fc-verify (commands) on a real database; real HTTP servers on 127.0.0.1: the one the forged row names
redirects to a second one (another port), which counts the connections it is offered and must get none."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = ROOT / "bin"


class _Counting(http.server.ThreadingHTTPServer):
    """An HTTP server that counts every connection offered to it (whatever protocol the client then speaks)."""

    connections = 0

    def get_request(self):  # type: ignore[no-untyped-def]
        got = super().get_request()
        self.connections += 1
        return got


def _handler(port: int | None) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        """Redirects /away/X to http://127.0.0.1:``port``/X, /ftp/X to ftp://127.0.0.1:``port``/X and /here/X to /X
        on itself; answers anything else with 5 bytes."""

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            if port is not None and self.path.startswith(("/away/", "/ftp/")):
                scheme, rest = ("http", self.path[6:]) if self.path.startswith("/away/") else ("ftp", self.path[5:])
                self._redirect(f"{scheme}://127.0.0.1:{port}/{rest}")
            elif self.path.startswith("/here/"):
                self._redirect(self.path[len("/here") :])
            else:
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            if self.path.startswith("/x"):
                self.wfile.write(b"hello")

        def _redirect(self, where: str) -> None:
            self.send_response(302)
            self.send_header("Location", where)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def servers() -> Iterator[tuple[_Counting, _Counting]]:
    """(the forged row's server, the one it redirects to)"""
    inner = _Counting(("127.0.0.1", 0), _handler(None))
    outer = _Counting(("127.0.0.1", 0), _handler(None))
    outer.RequestHandlerClass = _handler(inner.server_address[1])
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in (outer, inner)]
    for t in threads:
        t.start()
    try:
        yield outer, inner
    finally:
        for s in (outer, inner):
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(5)


def _run(cmd: str, args: list[str], tmp_path: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, str(BIN / cmd), *args], input=stdin, capture_output=True, env=env, timeout=120
    )


def _record(tmp_path: Path, urls: dict[str, str]) -> Path:
    """fc-record's database after one line per file (its source made), each with the URL given: what a stage of
    someone else's in front of fc-record can write."""
    src = tmp_path / "src"
    src.mkdir()
    lines = b""
    for rel, url in urls.items():
        (src / rel).write_bytes(b"hello")
        st = (src / rel).stat()
        ev = {"v": 1, "kind": "created", "source": "site", "root": str(src), "path": str(src / rel), "rel": rel}
        ev.update(size=st.st_size, mtime_ns=str(st.st_mtime_ns), ino=st.st_ino, server="cdn", remote=rel)
        ev.update(url=url, transported="uploaded")
        lines += json.dumps(ev).encode() + b"\n"
    db = tmp_path / "synced.db"
    res = _run("fc-record", ["--db", str(db), "--state", str(tmp_path / "r.db")], tmp_path, lines)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return db


def _verify(tmp_path: Path, db: Path, *extra: str) -> tuple[int, dict[str, dict], str]:
    res = _run("fc-verify", ["--db", str(db), "--timeout", "10", *extra], tmp_path)
    err = res.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    return res.returncode, {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, res.stdout.splitlines())}, err


def test_a_redirect_off_the_host_is_not_followed(tmp_path: Path, servers: tuple[_Counting, _Counting]) -> None:
    outer, inner = servers
    base = f"http://127.0.0.1:{outer.server_address[1]}/"
    # d.css: urllib follows a redirect to ftp:// with its own FTP client
    urls = {"a.css": base + "away/x", "b.css": base + "here/x", "c.css": base + "x", "d.css": base + "ftp/x"}
    db = _record(tmp_path, urls)
    for extra in ([], ["--get"]):
        status, report, err = _verify(tmp_path, db, *extra)
        assert status == 1 and set(report) == {"a.css", "d.css"}, (report, err)
        for name in ("a.css", "d.css"):
            assert report[name]["problem"] == "error" and "not followed" in report[name]["detail"], report
        assert "2 ok" in err, err  # the redirect on the same host (b.css) was followed, and the plain one checked
    assert inner.connections == 0
    assert outer.connections >= 8


def test_a_url_outside_the_known_base_url_is_not_fetched(tmp_path: Path, servers: tuple[_Counting, _Counting]) -> None:
    outer, inner = servers
    base = f"http://127.0.0.1:{outer.server_address[1]}/site/"
    elsewhere = f"http://127.0.0.1:{inner.server_address[1]}/"
    urls = {"a.css": elsewhere + "x", "b.css": base + "x", "c.css": base + "../x", "d.css": base + "%2E%2e/x"}
    db = _record(tmp_path, {**urls, "e.css": f"file://{tmp_path}/src/e.css"})
    (tmp_path / "cdn").mkdir()
    to = ["--to", f"file://{tmp_path / 'cdn'}?name=cdn", "--url", base, "--check", "http"]
    status, report, err = _verify(tmp_path, db, *to)
    assert status == 1 and set(report) == {"a.css", "c.css", "d.css", "e.css"}, (report, err)
    for name in ("a.css", "c.css", "d.css", "e.css"):
        assert report[name]["problem"] == "error", report
        assert report[name]["detail"].startswith("the recorded URL is not under the server's base URL"), report
    assert "1 ok" in err, err
    assert inner.connections == 0
    # without the base URL, fc-verify has only the recorded URL to go by (fetched, as before)
    status, report, err = _verify(tmp_path, db, "--check", "http")
    assert "a.css" not in report and inner.connections > 0, report
