"""A forged line in the window a kill leaves (Intake's working marks: the lines a writer sends after a restart, up to
WORKING_AHEAD seqs beyond the last mark, come as ``recovered``) must not make fc-transport take a name it never
put at the destination as a path's own, so that a forged deletion of that path removes it.  fc-transport's
_maybe_sent (a recovered upload whose file is gone: the killed process may have sent it) names what the killed
process may have put there only when the destination holds a file there of the size the line says: a file of ours
the killed process wrote is one; an administrator's page of another size is not.

Real fc-watch lines, a real forked fc-transport killed like kill -9 at its first commit (tests/transport/
test_recovered.py), a real state file and a real local destination."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fileconveyor import events as E
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from tests.transport.conftest import fc
from tests.transport.test_recovered import killed_at_first_commit, run


def _after_a_kill(tmp_path: Path, more: bool = False) -> tuple[Path, Path, Path, list[tuple[str, str]], bytes, dict]:
    """fc-transport killed at its first commit, the admin's index.html at the destination; the writer's lines it
    sends again, and the hop of its last one (``more``: a file b.txt too, whose line is left out of them)."""
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    (dest / "index.html").write_bytes(b"<h1>the administrator's page</h1>")
    (src / "a.txt").write_bytes(b"a" * 100)
    if more:
        (src / "b.txt").write_bytes(b"b")
    scan = [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), str(src)]
    data = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    spec = [("to", f"file://{dest}")]
    killed_at_first_commit(spec, state, data)
    if more:
        data = b"".join(x for x in data.splitlines(keepends=True) if b'"b.txt"' not in x)
    last = json.loads(data.splitlines()[-1])["hop"]
    return src, dest, state, spec, data, last


def _forged(src: Path, hop: dict | None, kind: str, size: int | None = None) -> bytes:
    ev: dict = {"v": 1, "kind": kind, "source": "site", "root": str(src), "path": str(src / "gone.txt")}
    ev["rel"] = "gone.txt"
    if kind == "created":
        ev["name"] = "index.html"  # where the forger wants the name to point
        ev["size"] = size
    if hop is not None:
        ev["hop"] = hop
    return json.dumps(ev).encode() + b"\n"


def test_a_forged_recovered_line_does_not_name_a_file_fc_never_put_there(tmp_path: Path) -> None:
    src, dest, state, spec, data, last = _after_a_kill(tmp_path, more=True)
    # the next seq of the real writer: within the working mark, so the line comes as recovered; one it wrote (b.txt's:
    # a seq past what it wrote is refused, tests/security/test_seq_leap.py), taken by the forged line before it
    hop = {**last, "seq": last["seq"] + 1}
    forged = _forged(src, hop, "created", size=5) + _forged(src, None, "deleted")
    status, out, err = run(TransportStage(targets_from(spec)), state, data + forged)
    assert status == 0, err
    assert (dest / "index.html").read_bytes() == b"<h1>the administrator's page</h1>", err
    assert [E.decode(line).get("transported") for line in out.splitlines()] == ["unchanged"]
    assert "gone.txt: not deleted from file: no upload of it is known" in err, err


def test_what_the_killed_process_sent_is_still_deleted(tmp_path: Path) -> None:
    """The real case the registration is for (a kill between an upload and its commit, then the file deleted): the
    copy at the destination has the size the line says, and the deletion that follows removes it."""
    src, dest, state, spec, data, _ = _after_a_kill(tmp_path)
    assert (dest / "a.txt").read_bytes() == b"a" * 100
    (src / "a.txt").unlink()
    scan = [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), str(src)]
    gone = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    status, out, err = run(TransportStage(targets_from(spec)), state, data + gone)
    assert status == 0, err
    assert [E.decode(line)["transported"] for line in out.splitlines()] == ["deleted"]
    assert sorted(p.name for p in dest.iterdir()) == ["index.html"]


def test_a_link_the_killed_process_made_is_still_deleted(tmp_path: Path) -> None:
    """symlink_within (fc-conveyor's symlink_or_copy): the killed process linked the file instead of copying it;
    gone from the source, the link dangles (no size to look at), and it is a link to that very source file, which
    no forger can put at the destination: the deletion that follows removes it."""
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "t.db"
    src.mkdir()
    dest.mkdir()
    (src / "a.txt").write_bytes(b"a" * 100)
    scan = [*fc("fc-watch"), "--scan-once", "--state", str(tmp_path / "w.db"), str(src)]
    data = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    spec = [("to", f"file://{dest}?symlink_within={src}")]
    killed_at_first_commit(spec, state, data)
    assert (dest / "a.txt").is_symlink()
    (src / "a.txt").unlink()
    gone = subprocess.run(scan, capture_output=True, check=True, timeout=60).stdout
    status, out, err = run(TransportStage(targets_from(spec)), state, data + gone)
    assert status == 0, err
    assert [E.decode(line)["transported"] for line in out.splitlines()] == ["deleted"], err
    assert list(dest.iterdir()) == []
