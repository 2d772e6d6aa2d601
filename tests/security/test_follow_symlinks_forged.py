"""``--follow-symlinks`` on fc-transport and fc-process reads only what ``fc-watch --follow-symlinks`` publishes,
whatever an event says.

With the flag, a file whose way leads out of the root was opened by the kernel, following every link, and read
when its inode and size were the event's: anyone who can make a link in the tree and write one line (a stage of
their own) published any file they could stat.  ``innocent.css -> /etc/shadow`` (a link to a *file* out of the
root, which fc-watch never publishes, flag or not) or ``all -> /`` (a directory link fc-watch refuses to enter,
since it contains the root) plus a line carrying the target's ``ino`` and ``size`` sent the secret.  Now the way is
walked as fc-watch judges it (beneath.open_following): a symlinked directory is entered unless fc-watch refuses it,
and a link to a file counts only when the file lies beneath the root or beneath the target of a symlinked
directory on its way.  Real fc-watch, fc-transport and fc-process, as commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import ROOT

BIN = ROOT / "bin"
SECRET = b"root:$6$not-for-the-cdn\n"


def _run(cmd: str, args: list[str], tmp_path: Path, events: list[dict] = ()) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "state")}
    stdin = b"".join(json.dumps(ev).encode() + b"\n" for ev in events)
    return subprocess.run(
        [sys.executable, str(BIN / cmd), *args], input=stdin, capture_output=True, env=env, timeout=120
    )


def _event(root: Path, rel: str, target: Path) -> dict:
    """The event a forger writes for root/rel: the version of ``target``, which it can stat."""
    st = target.stat()
    ev = {"v": 1, "kind": "created", "source": "site", "root": str(root), "path": str(root / rel), "rel": rel}
    return {**ev, "size": st.st_size, "ino": st.st_ino, "mtime_ns": str(st.st_mtime_ns)}


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(the source root, a shared folder its ``shared`` link leads to, the secret beside them).

    site/shared -> shared (followed with the flag); shared/logo.css; shared/back.css -> logo.css (stays in the
    link's target: published); shared/up.css -> ../secret (leaves it); site/innocent.css -> secret;
    site/all -> / (contains the root: never entered)."""
    site, shared, secret = tmp_path / "site", tmp_path / "shared", tmp_path / "secret"
    site.mkdir()
    shared.mkdir()
    secret.write_bytes(SECRET)
    (site / "a.css").write_bytes(b"a { }\n")
    (shared / "logo.css").write_bytes(b"logo\n")
    (shared / "back.css").symlink_to("logo.css")
    (shared / "up.css").symlink_to("../secret")
    (site / "shared").symlink_to(shared, target_is_directory=True)
    (site / "innocent.css").symlink_to(secret)
    (site / "all").symlink_to("/", target_is_directory=True)
    return site, shared, secret


def _forged(site: Path, secret: Path) -> list[dict]:
    return [
        _event(site, "innocent.css", secret),
        _event(site, "shared/up.css", secret),
        _event(site, "all" + str(secret), secret),
    ]


def test_fc_watch_publishes_none_of_them(tree: tuple[Path, Path, Path], tmp_path: Path) -> None:
    # what the others must agree with
    site, _, _ = tree
    args = ["--follow-symlinks", "--scan-once", "--state", str(tmp_path / "w.db"), str(site)]
    scan = _run("fc-watch", args, tmp_path)
    published = {ev["rel"] for ev in map(json.loads, scan.stdout.splitlines()) if "error" not in ev}
    assert published == {"a.css", "shared/logo.css", "shared/back.css"}, scan.stderr.decode()


def test_fc_transport_follow_symlinks_sends_no_file_fc_watch_would_not(
    tree: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    site, shared, secret = tree
    dest = tmp_path / "dest"
    good = [_event(site, "a.css", site / "a.css"), _event(site, "shared/logo.css", shared / "logo.css")]
    good.append(_event(site, "shared/back.css", shared / "logo.css"))
    args = ["--to", "file://" + quote(str(dest)), "--follow-symlinks", "--state", str(tmp_path / "t.db")]
    res = _run("fc-transport", [*args, "--source", f"site={site}"], tmp_path, [*_forged(site, secret), *good])
    assert "Traceback" not in res.stderr.decode()
    sent = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert sent == {"a.css": b"a { }\n", "shared/logo.css": b"logo\n", "shared/back.css": b"logo\n"}, sent
    out = {ev["rel"]: ev for ev in map(json.loads, res.stdout.splitlines())}
    for ev in _forged(site, secret):
        assert "leads out of" in out[ev["rel"]].get("error", ""), out[ev["rel"]]


def test_fc_process_follow_symlinks_reads_no_file_fc_watch_would_not(
    tree: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    site, shared, secret = tree
    work = tmp_path / "work"
    good = _event(site, "shared/back.css", shared / "logo.css")
    args = ["--chain", "unique_filename.MD5", "--follow-symlinks", "--work-dir", str(work)]
    args += ["--state", str(tmp_path / "p.db"), "--source", f"site={site}"]
    res = _run("fc-process", args, tmp_path, [*_forged(site, secret), good])
    assert "Traceback" not in res.stderr.decode()
    assert not any(SECRET in p.read_bytes() for p in work.rglob("*") if p.is_file())
    out = {ev["rel"]: ev for ev in map(json.loads, res.stdout.splitlines())}
    assert out["shared/back.css"]["processed"] == ["unique_filename.MD5"], res.stderr.decode()
    for ev in _forged(site, secret):
        assert "leads out of" in out[ev["rel"]].get("error", ""), out[ev["rel"]]
