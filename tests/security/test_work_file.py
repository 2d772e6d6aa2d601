"""Issue 16 review, finding C: fc-transport took an event's ``file`` from any ``*.work`` folder next to its state
file or in a work base: a symlink ``evil.work -> /etc`` published /etc/shadow, and in a shared directory (``--state
/tmp/t.db``) any user could plant ``/tmp/evil.work``.  A work folder is now used only when it is a real directory
(never followed through a symlink), ours, and not writable by other users, as fc-process makes it
(sourcefile.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fileconveyor.sourcefile import work_prefix
from tests.conftest import ROOT
from tests.transport.conftest import env, jsonl, transport  # noqa: F401 - fixture

SECRET = b"SECRET outside the source\n"


def _site(tmp_path: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "src", tmp_path / "outside"
    src.mkdir()
    out.mkdir()
    (out / "secret.css").write_bytes(SECRET)
    (src / "x.css").write_bytes(b"a{}\n")
    return src, out


def _named(work: Path, name: str) -> Path:
    """``work``/<the directory fc-process would make for the event _send sends>/``name`` (its parent made): a
    file fc-transport takes from a work folder must lie in a directory named for its event (sourcefile.work_prefix)."""
    src = work.parent / "src"
    ev = {"root": str(src), "path": str(src / "x.css"), "rel": "x.css"}
    where = work / (work_prefix(ev) + b"abcd1234").decode() / name
    where.parent.mkdir()
    return where


def _send(tmp_path: Path, env: dict[str, str], file: Path) -> tuple[dict[str, bytes], list[dict]]:  # noqa: F811
    src = tmp_path / "src"
    ev = {"v": 1, "kind": "created", "source": "s", "root": str(src), "path": str(src / "x.css"), "rel": "x.css"}
    ev["file"] = str(file)
    dst = tmp_path / "dst"
    res = transport(
        ["--to", f"file://{dst}", "--state", str(tmp_path / "t.db"), "--drain-timeout", "5"], env, jsonl([ev])
    )
    out = [json.loads(x) for x in res.stdout.splitlines()]
    sent = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()} if dst.exists() else {}
    return sent, out


def test_fc_transport_takes_file_only_from_a_real_work_directory(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    _src, out = _site(tmp_path)
    (tmp_path / "evil.work").symlink_to(out)
    secret = _named(tmp_path / "evil.work", "secret.css")
    secret.write_bytes(SECRET)
    sent, events = _send(tmp_path, env, secret)
    assert not any(SECRET in v for v in sent.values()), sent
    assert any("symlink" in e.get("error", "") for e in events), events


def test_a_work_folder_other_users_may_write_to_is_refused(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    _site(tmp_path)
    planted = tmp_path / "any.work"
    planted.mkdir()
    planted.chmod(0o777)  # as in a shared directory; fc-process makes its own 0700
    (secret := _named(planted, "secret.css")).write_bytes(SECRET)
    sent, events = _send(tmp_path, env, secret)
    assert sent == {}, sent
    assert any("not fc-process's" in e.get("error", "") for e in events), events


def test_fc_process_s_own_work_file_is_still_sent(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    src, _out = _site(tmp_path)
    ev = {"v": 1, "kind": "created", "source": "s", "root": str(src), "path": str(src / "x.css"), "rel": "x.css"}
    proc = [sys.executable, str(ROOT / "bin" / "fc-process"), "--processor", "minify.CSS", "--drain-timeout", "1"]
    res = subprocess.run(
        [*proc, "--state", str(tmp_path / "p.db")], input=jsonl([ev]), capture_output=True, env=env, timeout=60
    )
    (done,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert done["file"].startswith(str(tmp_path / "p.db.work")), done
    assert os.stat(tmp_path / "p.db.work").st_mode & 0o777 == 0o700
    dst = tmp_path / "dst"
    transport(["--to", f"file://{dst}", "--state", str(tmp_path / "t.db")], env, jsonl([done]))
    assert (dst / "x.css").read_bytes() == Path(done["file"]).read_bytes()


def test_fc_process_reads_nothing_beneath_a_forged_root(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    # finding B: with no check of the root, any file we can read was copied into the work folder (and published)
    src, out = _site(tmp_path)
    forged = {"v": 1, "kind": "created", "source": "s", "root": str(out), "path": str(out / "secret.css")}
    forged["rel"] = "secret.css"
    good = {"v": 1, "kind": "created", "source": "s", "root": str(src), "path": str(src / "x.css"), "rel": "x.css"}
    proc = [sys.executable, str(ROOT / "bin" / "fc-process"), "--processor", "minify.CSS", "--drain-timeout", "1"]
    proc += ["--work-dir", str(tmp_path / "work"), "--source", f"s={src}", "--state", str(tmp_path / "p.db")]
    res = subprocess.run(proc, input=jsonl([forged, good]), capture_output=True, env=env, timeout=60)
    staged = [p.read_bytes() for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert not any(b"SECRET" in s for s in staged), staged
    done = {e["rel"]: e for e in map(json.loads, res.stdout.splitlines())}
    assert "no --source given to fc-process" in done["secret.css"]["error"], done
    assert Path(done["x.css"]["file"]).read_bytes() == b"a{}", done  # the real source's file is processed
