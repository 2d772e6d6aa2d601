"""An event whose ``root`` holds a NUL byte names no directory: it was an "unexpected failure" in fc-transport
(``open: embedded null character in path``), the runner's path for a bug in the stage.  No file name holds a NUL
byte, so ``events.decode`` refuses such a line at every stage's reading (a bad line, reported with its number and
skipped, as any other); fc-transport's own refusal of the root (a permanent error) stays behind it.  The real
command, on a real source and destination."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from tests.conftest import ROOT

BIN = ROOT / "bin"


def test_a_root_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.css").write_bytes(b"a { }\n")
    root = str(src) + "\0x"
    forged = {"v": 1, "kind": "created", "source": "site", "root": root, "path": root + "/a.css", "rel": "a.css"}
    good = {**forged, "root": str(src), "path": str(src / "a.css")}
    args = ["--to", "file://" + quote(str(tmp_path / "dest"))]
    stdin = b"".join(json.dumps(ev).encode() + b"\n" for ev in (forged, good))
    res = subprocess.run(
        [sys.executable, str(BIN / "fc-transport"), *args, "--state", str(tmp_path / "s.db"), "--drain-timeout", "5"],
        input=stdin,
        capture_output=True,
        env={**os.environ, "FC_STATE_DIR": str(tmp_path / "state")},
        timeout=120,
    )
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1 and "unexpected failure" not in err, err
    assert "input line 1: field root holds a NUL byte" in err, err
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(e["root"], e["transported"]) for e in out] == [(str(src), "uploaded")], out


def test_names_no_file_can_have_are_bad_lines_not_internal_errors(tmp_path: Path) -> None:
    """``name: null`` (null is as if absent), ``rel_b64`` that is not base64 and a ``name_b64`` holding a NUL byte
    were taken and failed later as fc-transport's "internal error"; each is now what decode says of it: null is
    dropped (the file goes by its own name), the two others are bad lines with their numbers, and the good event
    after them is uploaded."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.css", "b.css"):
        (src / name).write_bytes(b"a { }\n")
    base = {"v": 1, "kind": "created", "source": "site", "root": str(src)}
    events = [
        {**base, "path": str(src / "a.css"), "rel": "a.css", "name": None},
        {**base, "path": str(src / "b.css"), "rel": "b.css", "rel_b64": "!!"},
        {**base, "path": str(src / "b.css"), "rel": "b.css", "name_b64": "YQBi"},  # a NUL b
        {**base, "path": str(src / "b.css"), "rel": "b.css"},
    ]
    res = subprocess.run(
        [sys.executable, str(BIN / "fc-transport"), "--to", "file://" + quote(str(tmp_path / "dest")),
         "--state", str(tmp_path / "s.db"), "--drain-timeout", "5"],
        input=b"".join(json.dumps(ev).encode() + b"\n" for ev in events),
        capture_output=True,
        env={**os.environ, "FC_STATE_DIR": str(tmp_path / "state")},
        timeout=120,
    )  # fmt: skip
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1 and "internal error" not in err and "unexpected" not in err, err
    assert "input line 2: field rel_b64 is not valid base64" in err, err
    assert "input line 3: field name_b64 holds a NUL byte" in err, err
    out = sorted((e["rel"], e.get("transported"), e.get("error")) for e in map(json.loads, res.stdout.splitlines()))
    assert out == [("a.css", "uploaded", None), ("b.css", "uploaded", None)], out
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["a.css", "b.css"]
