"""fc-record never looks at the ``file`` a line names: the size of a processed copy sent comes from fc-transport.

fc-record filled ``remote_size`` of a processed file with ``os.stat`` of the event's ``file``, whatever path a line
named: one forged line put the size of any file the user can reach into the record (which a web application
reads), and a path on a hung network mount would have wedged the stage for good.  fc-transport, which opened and
sent that copy, now says its size (``remote_size``); fc-record takes it, else records it as unknown."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import ROOT
from tests.record.conftest import record

BIN = ROOT / "bin"


def _remote_sizes(db: Path) -> dict[str, int | None]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT input_file, remote_size FROM synced_files"))


def test_a_forged_file_is_not_looked_at(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 12345)
    ev = {"v": 1, "kind": "created", "source": "s", "root": "/srv", "path": "/srv/a.css", "rel": "a.css"}
    ev.update(size=7, file=str(secret), server="cdn", remote="a.css", url="http://cdn/a.css", transported="uploaded")
    res = record(tmp_path / "r.db", [ev], tmp_path / "state.db")
    assert res.status == 0, res.stderr
    assert _remote_sizes(tmp_path / "r.db") == {"/srv/a.css": None}  # was 12345, the secret's size


def test_the_size_of_the_processed_copy_sent_is_recorded(tmp_path: Path) -> None:
    src, dest, db = tmp_path / "src", tmp_path / "dest", tmp_path / "r.db"
    src.mkdir()
    (src / "a.css").write_text("body   {\n    color :   red ;\n}\n\n\n" * 20)
    (src / "b.txt").write_text("plain\n")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "FC_STATE_DIR": str(tmp_path / "state")}
    script = (
        f"fc-watch --scan-once {src} | fc-process --chain minify.CSS | fc-transport --to file://{dest} "
        f"| fc-record --db {db}"
    )
    res = subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    sent = (dest / "a.css").stat().st_size
    assert sent < (src / "a.css").stat().st_size  # minified: the copy sent is not the source
    assert _remote_sizes(db) == {str(src / "a.css"): sent, str(src / "b.txt"): 6}
