"""fc-process said "vanished before it was processed" of a file under a root ``--source`` refuses when no file was
there: it looked for the file beneath the refused root before checking the root, and a user went looking for a
deleted file (and the look answered whether a path exists outside every root given).  Now the root is checked first:
the file is said to be refused, with its source and root, as one that exists is.  Real fc-process (the command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_a_missing_file_under_a_refused_root_is_said_refused(tmp_path: Path) -> None:
    src, other = tmp_path / "src", tmp_path / "other"
    src.mkdir()
    other.mkdir()
    (other / "here.css").write_text("a {  }\n")
    evs = [
        {"v": 1, "kind": "created", "source": "s", "root": str(other), "path": str(other / rel), "rel": rel}
        for rel in ("gone.css", "here.css")
    ]
    argv = [sys.executable, str(ROOT / "bin" / "fc-process"), "--processor", "minify.CSS", "--source", f"s={src}"]
    argv += ["--state", str(tmp_path / "p.db"), "--drain-timeout", "1"]
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    lines = b"".join(json.dumps(ev).encode() + b"\n" for ev in evs)
    res = subprocess.run(argv, input=lines, capture_output=True, env=env, timeout=120)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1 and "Traceback" not in err, err
    assert "vanished" not in err, err
    for rel in ("gone.css", "here.css"):
        said = f"fc-process: error: {other / rel}: fc-process: SourceRefused: refusing '{other / rel}': its source 's'"
        assert said in err, err
    outs = {o["rel"]: o for o in map(json.loads, res.stdout.splitlines())}
    assert all("no --source given to fc-process" in outs[rel]["error"] for rel in ("gone.css", "here.css")), outs
