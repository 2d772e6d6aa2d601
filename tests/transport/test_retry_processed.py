"""The retry after a failed transfer sends the processed files (issue 17, finding 2).

fc-process used to remove a processed copy as soon as fc-transport acknowledged its line, and a transfer that
failed for good (a wrong password, a file where a directory must go) is acknowledged too: the retry
(--retry-failed, which fc-conveyor adds at each start) found the copies gone, took them for vanished sources and
dropped them with an info line.  (A wrong password at start is now refused before anything is read, by the
start-up check; a refusal after the start, here a file where the destination's directory must go, takes the
same path as the issue's wrong password did.)  Now fc-process keeps
the latest copy of each path until a newer version or the deletion supersedes it, and a copy found missing
while its source is still there is an error, never dropped quietly."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.conftest import work_dir_for
from tests.servers.ftpd import PASSWORD, USER, FtpServer

from .conftest import event, fc, jsonl, transport

CSS = {f"css/s{i}.css": f"body {{\n  margin: {i}px;\n}}\n" for i in range(3)}


def _pipeline(tmp_path: Path, env: dict[str, str], dest: str, *extra: str) -> subprocess.CompletedProcess[str]:
    def cmd(argv: list[str]) -> str:
        return " ".join(shlex.quote(a) for a in argv)

    st = tmp_path / "st"
    watch = cmd([*fc("fc-watch"), "--scan-once", "--state", str(st / "w.db"), str(tmp_path / "site")])
    process = cmd([*fc("fc-process"), "--chain", "minify.CSS,unique_filename.MD5", "--state", str(st / "p.db")])
    trans = cmd([*fc("fc-transport"), "--to", dest, "--state", str(st / "t.db"), *extra])
    return subprocess.run(
        ["bash", "-c", f"{watch} | {process} | {trans}"], capture_output=True, text=True, env=env, timeout=120
    )


def test_retry_after_a_failed_transfer_sends_the_processed_files(
    ftp_server: FtpServer, tmp_path: Path, env: dict[str, str]
) -> None:
    for rel, text in CSS.items():
        (tmp_path / "site" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / rel).write_text(text)
    sub = "retry-" + tmp_path.name[-10:]
    dest = f"ftp://{USER}@127.0.0.1:{ftp_server.port}/{sub}"
    blocker = ftp_server.files / sub / "css"  # a file where the css directory must go: every transfer fails
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    pw = {**env, "FC_PASSWORD": PASSWORD}
    wrong = _pipeline(tmp_path, pw, dest)
    assert wrong.returncode == 1 and "--retry-failed" in wrong.stderr, wrong.stderr
    # cron runs it again before the cause is fixed: nothing new, and fc-transport has acknowledged the failed
    # lines, so fc-process's housekeeping releases what it no longer needs
    _pipeline(tmp_path, pw, dest)
    blocker.unlink()
    right = _pipeline(tmp_path, pw, dest, "--retry-failed")
    assert right.returncode == 0, right.stderr
    sent = sorted(p.name for p in (ftp_server.files / sub).rglob("*.css"))
    assert len(sent) == 3 and all(len(name) == len("s0_") + 32 + len(".css") for name in sent), sent
    for p in (ftp_server.files / sub).rglob("*.css"):  # the processed (minified) copies, not the sources
        assert p.read_text().strip() == f"body{{margin:{p.name[1]}px}}", p.read_text()


def test_a_lost_processed_copy_is_an_error_not_a_quiet_skip(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.css").write_text("a{}")
    work = work_dir_for(tmp_path / "state" / "p.db.work", src / "a.css", "a.css", make=False)
    gone = event(src, "a.css", file=str(work / "a_123.css"), name="a_123.css")
    result = transport(["--to", f"file://{tmp_path}/cdn"], env, jsonl([gone]))
    assert result.returncode == 1, result.stderr.decode()
    err = result.stderr.decode()
    assert "error:" in err and "processed copy is gone" in err
    # a source that vanished too is the ordinary case: its deletion follows, nothing to say above info
    (src / "a.css").unlink()
    quiet = transport(["--to", f"file://{tmp_path}/cdn", "--state", str(tmp_path / "t2.db")], env, jsonl([gone]))
    assert quiet.returncode == 0 and quiet.stderr == b"", quiet.stderr.decode()
