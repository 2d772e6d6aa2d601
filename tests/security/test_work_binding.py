"""fc-transport took an event's ``file`` (a processed copy) from any ``*.work`` folder beneath its work bases without
checking that the copy was made for that event: a forged line, which may copy any line it saw, named another
path's processed file and published it under its own remote name (and under its own rel: anywhere in the tree).

fc-process now names each work directory for the event's ``path`` and ``rel`` (sourcefile.work_prefix: a hash, then
mkdtemp's random part), and a reader takes a ``file`` only from a directory so named for the line that names it; a
forger cannot make a directory in the work folder.  Real fc-process and fc-transport (commands) on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.transport.conftest import env, jsonl, transport  # noqa: F401 - fixture

A_CSS = b"a  {  color :  red ; }\n"
B_CSS = b"/* private */ b  {  color :  blue ; }\n"


def _processed(tmp_path: Path, env: dict[str, str]) -> dict[str, dict]:  # noqa: F811
    """fc-process's lines for a.css and b.css of a fresh source, by rel."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.css").write_bytes(A_CSS)
    (src / "b.css").write_bytes(B_CSS)
    evs = [
        {"v": 1, "kind": "created", "source": "s", "root": str(src), "path": str(src / rel), "rel": rel}
        for rel in ("a.css", "b.css")
    ]
    proc = [sys.executable, str(ROOT / "bin" / "fc-process"), "--processor", "minify.CSS", "--drain-timeout", "1"]
    res = subprocess.run(
        [*proc, "--state", str(tmp_path / "p.db")], input=jsonl(evs), capture_output=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    # without their hop: these lines are read by more than one fc-transport here, none of them fc-process's reader
    done = {e["rel"]: {k: v for k, v in e.items() if k != "hop"} for e in map(json.loads, res.stdout.splitlines())}
    assert set(done) == {"a.css", "b.css"} and all("file" in e for e in done.values()), done
    return done


def _send(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    lines: list[dict],
    name: str = "t",
) -> tuple[dict[str, bytes], dict[str, dict]]:
    dst = tmp_path / name
    args = ["--to", f"file://{dst}", "--state", str(tmp_path / f"{name}.db"), "--drain-timeout", "5"]
    res = transport(args, env, jsonl(lines))
    assert b"Traceback" not in res.stderr, res.stderr.decode(errors="replace")
    out = {e["rel"]: e for e in map(json.loads, res.stdout.splitlines())}
    sent = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()} if dst.exists() else {}
    return sent, out


def test_a_line_cannot_publish_another_paths_processed_file(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    done = _processed(tmp_path, env)
    b_file = Path(done["b.css"]["file"]).read_bytes()
    forged = {**done["a.css"], "file": done["b.css"]["file"]}  # a.css's line, b.css's processed copy
    sent, out = _send(tmp_path, env, [forged])
    assert not any(v == b_file for v in sent.values()), sent
    assert "made it for another path" in out["a.css"].get("error", ""), out
    # the real lines are sent, each with its own copy (another fc-transport: the forged line had a.css's id)
    sent, out = _send(tmp_path, env, [done["a.css"], done["b.css"]], "t2")
    assert sent == {"a.css": Path(done["a.css"]["file"]).read_bytes(), "b.css": b_file}, (sent, out)


def test_a_line_cannot_move_a_processed_file_to_another_rel(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    done = _processed(tmp_path, env)
    forged = {**done["b.css"], "rel": "public/b.css"}  # b.css's own copy, sent somewhere else in the tree
    sent, out = _send(tmp_path, env, [forged])
    assert sent == {}, sent
    assert "made it for another path" in out["public/b.css"].get("error", ""), out
