"""An event whose ``root`` holds a NUL byte names no directory: fc-transport refuses it as it refuses any root it may
not read beneath (a permanent error), where it was an "unexpected failure" (``open: embedded null character in
path``), the runner's path for a bug in the stage.  (fc-process drops it, as a file that vanished.)  The real command,
on a real source and destination."""

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
    out = [json.loads(x) for x in res.stdout.splitlines()]
    by_root = {e["root"]: e for e in out}  # (two paths: their events may come in either order)
    assert sorted(by_root) == sorted([root, str(src)]) and by_root[str(src)]["transported"] == "uploaded", out
    assert by_root[root]["error_kind"] == "permanent" and "NUL" in by_root[root]["error"], out
