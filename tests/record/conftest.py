"""Helpers for the fc-record and fc-verify tests: real fc-watch events, a stand-in for fc-transport that really
copies files into a destination folder (fc-transport is tested on its own; the pipeline test uses the real one),
and a real HTTP server over that folder."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.cli import record as record_cli
from fileconveyor.cli import watch as watch_cli
from tests.conftest import ROOT, Result, call

BIN = ROOT / "bin"


def lines(events: list[dict]) -> bytes:
    return b"".join(E.encode(e) for e in events)


def decode(out: bytes) -> list[dict]:
    return [json.loads(x) for x in out.splitlines()]


_LAST_ID: dict[tuple[Path, str], str] = {}


def watch(site: Path, state: Path) -> list[dict]:
    """fc-watch --scan-once, in-process: the real events, ids included.

    Nothing here acknowledges fc-watch's lines, so a later scan may send earlier lines again (at least once,
    docs/events.md): those replays are dropped the documented way, by the last id seen for the path."""
    res = call(watch_cli.main, ["--scan-once", "--state", str(state), f"site={site}"])
    assert res.status == 0, res.stderr
    out = []
    for ev in decode(res.stdout):
        key = (state, ev["rel"])
        if _LAST_ID.get(key) != ev["id"]:
            _LAST_ID[key] = ev["id"]
            out.append(ev)
    return out


def transport(
    events: list[dict], cdn: Path | None, server: str = "cdn", base: str = "http://cdn.example/"
) -> list[dict]:
    """What fc-transport emits for one destination, with the files really copied to ``cdn``."""
    out = []
    for ev in events:
        ev = {k: v for k, v in ev.items() if k != "hop"}
        rel = ev["rel"]
        ev.update(server=server, remote=rel, url=base + rel)
        if ev["kind"] == "deleted":
            if cdn is not None:
                (cdn / rel).unlink(missing_ok=True)
            ev["transported"] = "deleted"
        else:
            if cdn is not None:
                (cdn / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ev["path"], cdn / rel)
            ev["transported"] = "uploaded"
        out.append(ev)
    return out


def record(db: Path, events: list[dict], state: Path, *extra: str) -> Result:
    return call(record_cli.main, ["--db", str(db), "--state", str(state), *extra], lines(events))


def make_site(root: Path) -> Path:
    site = root / "site"
    (site / "css").mkdir(parents=True)
    (site / "img").mkdir()
    (site / "css" / "a.css").write_text("body { color: red }\n")
    (site / "css" / "b.css").write_text("p { margin: 0 }\n" * 20)
    (site / "img" / "logo.png").write_bytes(b"\x89PNG fake" * 100)
    (site / "index.html").write_text("<html></html>\n")
    return site


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self._special():
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        if self._special():
            return
        super().do_HEAD()

    def _special(self) -> bool:
        """/moved/X redirects to /X; /broken/X answers 500: what real CDNs do now and then."""
        if self.path.startswith("/moved/"):
            self.send_response(301)
            self.send_header("Location", self.path[len("/moved") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        if self.path.startswith("/broken/"):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server (http.server, threads) serving a fresh destination folder: (folder, base URL)."""
    cdn = tmp_path / "cdn"
    cdn.mkdir()
    handler = functools.partial(_Quiet, directory=str(cdn))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield cdn, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


from tests.servers.postgres import pg_server, pg_url  # noqa: E402, F401 - fixtures
