"""The issue's "done when": fc-watch piped into fc-transport, to a local folder and to a real SFTP server."""

from __future__ import annotations

import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, work_dir_for
from tests.servers.ftpd import PASSWORD, USER, FtpServer
from tests.servers.sshd import SshServer

from .conftest import event, fc, jsonl, lines, sftp_spec, transport, tree

SITE = ROOT / "examples" / "site"


def _pipeline(dest: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[bytes]:
    watch = " ".join(shlex.quote(a) for a in [*fc("fc-watch"), "--scan-once", str(SITE)])
    trans = " ".join(
        shlex.quote(a) for a in [*fc("fc-transport"), "--to", dest, "--url", "http://cdn.example/", *extra]
    )
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{watch} | {trans}"], capture_output=True, env=env, timeout=120
    )


def _check_site_copied(out: bytes, dest: Path) -> None:
    expected = tree(SITE)
    assert expected and tree(dest) == expected  # every file, same bytes, no temporary file left
    evs = lines(out)
    assert sorted(ev["remote"] for ev in evs) == sorted(expected)
    for ev in evs:
        assert ev["transported"] == "uploaded" and "error" not in ev
        assert ev["url"].startswith("http://cdn.example/")
    photo = next(ev for ev in evs if ev["rel"].endswith("photo of team.jpg"))
    assert photo["url"] == "http://cdn.example/sites/default/files/photo%20of%20team.jpg"


def test_scan_once_to_a_local_folder(tmp_path: Path, env: dict[str, str]) -> None:
    dest = tmp_path / "cdn"
    result = _pipeline(f"file://{dest}", env)
    assert result.returncode == 0, result.stderr.decode()
    _check_site_copied(result.stdout, dest)
    assert {ev["server"] for ev in lines(result.stdout)} == {"file"}
    # Nothing changed: the second run transports nothing.
    again = _pipeline(f"file://{dest}", env)
    assert again.returncode == 0 and again.stdout == b""


def test_scan_once_to_sftp(sshd_server: SshServer, sftp_dir: Path, env: dict[str, str]) -> None:
    result = _pipeline(sftp_spec(sshd_server, sftp_dir), env)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    _check_site_copied(result.stdout, sftp_dir)
    assert {ev["server"] for ev in lines(result.stdout)} == {"127.0.0.1"}


def test_scan_once_to_ftp(ftp_server: FtpServer, tmp_path: Path, env: dict[str, str]) -> None:
    sub = "tr-" + tmp_path.name[-12:]
    spec = f"ftp://{USER}@127.0.0.1:{ftp_server.port}/{sub}?connections=3"
    result = _pipeline(spec, {**env, "FC_PASSWORD": PASSWORD}, "--progress")
    assert result.returncode == 0, result.stderr.decode()
    _check_site_copied(result.stdout, ftp_server.files / sub)
    assert "127.0.0.1: 11 files" in result.stderr.decode()  # the progress line, per destination
    assert PASSWORD not in result.stderr.decode() + result.stdout.decode()


def test_one_event_per_destination(sshd_server: SshServer, sftp_dir: Path, tmp_path: Path, env: dict) -> None:
    src = tmp_path / "src"
    (src / "css").mkdir(parents=True)
    (src / "css" / "a.css").write_text("a{}")
    spec = sftp_spec(sshd_server, sftp_dir, name="ssh")
    args = ["--to", f"file://{tmp_path}/cdn?name=local", "--url", "http://a.example/", "--to", spec]
    result = transport([*args, "--url", "https://b.example/static"], env, jsonl([event(src, "css/a.css")]))
    assert result.returncode == 0, result.stderr.decode()
    by_server = {ev["server"]: ev for ev in lines(result.stdout)}
    assert by_server["local"]["url"] == "http://a.example/css/a.css"
    assert by_server["ssh"]["url"] == "https://b.example/static/css/a.css"
    assert (tmp_path / "cdn" / "css" / "a.css").read_text() == "a{}"
    assert (sftp_dir / "css" / "a.css").read_text() == "a{}"


def test_processed_file_and_name_are_used(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"  # and fc-process --work-dir proc's work directory for css/a.css:
    work = work_dir_for(tmp_path / "proc" / "process-1.db.work", src / "css" / "a.css", "css/a.css")
    (src / "css").mkdir(parents=True)
    (src / "css" / "a.css").write_text("a {  }")
    (work / "out.css").write_text("a{}")
    ev = event(src, "css/a.css", name="a_123.css", file=str(work / "out.css"), processed=["minify.CSS"])
    result = transport(["--to", f"file://{tmp_path}/cdn", "--work-dir", str(tmp_path / "proc")], env, jsonl([ev]))
    assert result.returncode == 0, result.stderr.decode()
    assert tree(tmp_path / "cdn") == {"css/a_123.css": b"a{}"}
    (out,) = lines(result.stdout)
    assert out["remote"] == "css/a_123.css" and out["processed"] == ["minify.CSS"]  # unknown fields pass through


def test_escaping_names_are_refused(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    evs = [
        {**event(src, "ok.txt"), "rel": "../../escaped.txt"},
        event(src, "ok.txt", name="../escaped.txt"),
        {**event(src, "ok.txt"), "rel": "/etc/escaped.txt"},
        event(src, "ok.txt", name="a\u0000b"),
        event(src, "ok.txt"),
    ]
    result = transport(["--to", f"file://{tmp_path}/cdn/root"], env, jsonl(evs))
    assert result.returncode == 1  # some events failed
    outs = lines(result.stdout)
    # the name holding a NUL byte is no event at all: refused where the line is read (a bad line, its number said)
    assert b"input line 4: field name holds a NUL byte" in result.stderr, result.stderr
    assert [("error" in ev) for ev in outs] == [True, True, True, False]
    assert all(ev["error_kind"] == "permanent" for ev in outs[:3])
    assert tree(tmp_path / "cdn") == {"root/ok.txt": b"ok"}
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "cdn" / "escaped.txt").exists()


def test_vanished_source_is_dropped_with_a_note(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ev = event(src, "gone.txt", size=3)
    result = transport(["-v", "--to", f"file://{tmp_path}/cdn"], env, jsonl([ev]))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert b"vanished" in result.stderr


def test_secrets_never_on_the_command_line(tmp_path: Path, env: dict[str, str]) -> None:
    result = transport(["--to", "ftp://user:s3cret@127.0.0.1/x"], env)
    assert result.returncode == 3
    assert b"FC_PASSWORD" in result.stderr and b"s3cret" not in result.stderr


def test_list_shows_every_transporter_with_its_settings(env: dict[str, str]) -> None:
    result = transport(["--list"], env)
    assert result.returncode == 0
    text = result.stdout.decode()
    for name in ("symlink_or_copy", "ftp", "sftp", "known_hosts", "trust_unknown_host", "connections", "tls"):
        assert name in text


def test_url_before_any_destination_is_a_usage_error(env: dict[str, str]) -> None:
    result = transport(["--url", "http://x/", "--to", "file:///tmp/x"], env)
    assert result.returncode == 2 and b"--url" in result.stderr


def test_destination_from_a_config_file(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    conf = tmp_path / "cdn.conf"
    conf.write_text(f"# the CDN's origin folder\nto = file://{tmp_path}/cdn\nurl = https://cdn.example/x\nname = cdn\n")
    result = transport(["--config", str(conf)], env, jsonl([event(src, "a.txt")]))
    assert result.returncode == 0, result.stderr.decode()
    (out,) = lines(result.stdout)
    assert (out["server"], out["url"]) == ("cdn", "https://cdn.example/x/a.txt")
    # a password in a file others can read is refused before anything happens
    conf.write_text(conf.read_text() + "password = hunter2\n")
    conf.chmod(0o644)
    refused = transport(["--config", str(conf)], env, jsonl([event(src, "a.txt")]))
    assert refused.returncode == 3 and b"chmod 600" in refused.stderr and b"hunter2" not in refused.stderr


def test_retry_failed_with_nothing_failed_says_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    """fc-conveyor adds --retry-failed at every start: "0 failed transfer(s) queued again" is noise (issue 17, 12)."""
    result = transport(["--to", f"file://{tmp_path}/cdn", "--retry-failed"], env)
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()


@pytest.mark.parametrize("kind", ["file", "ftp", "sftp"])
def test_directories_emptied_by_deletions_are_removed_if_we_made_them(
    kind: str,
    tmp_path: Path,
    env: dict[str, str],
    ftp_server: FtpServer,
    sshd_server: SshServer,
    sftp_dir: Path,
) -> None:
    """After the last file of a directory fc-transport created is deleted, the directory goes too, deepest
    first; a directory someone else made stays, and so does the destination root (even when emptied)."""
    sub = "dirs-" + secrets.token_hex(4)
    if kind == "file":
        spec, files = "file://" + str(tmp_path / "cdn"), tmp_path / "cdn"
    elif kind == "ftp":
        spec, files = f"ftp://{USER}@127.0.0.1:{ftp_server.port}/{sub}", ftp_server.files / sub
        env = {**env, "FC_PASSWORD": PASSWORD}
    else:
        spec, files = sftp_spec(sshd_server, sftp_dir), sftp_dir
    files.mkdir(parents=True)
    (files / "theirs").mkdir()  # a directory the destination had before
    site = tmp_path / "site"
    for rel in ("a/b/c.txt", "a/d.txt", "theirs/e.txt"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(rel)
    state = ["--state", str(tmp_path / "t.db")]
    up = transport(
        ["--to", spec, *state], env, jsonl([event(site, r) for r in ("a/b/c.txt", "a/d.txt", "theirs/e.txt")])
    )
    assert up.returncode == 0, up.stderr.decode()
    assert (files / "a" / "b" / "c.txt").is_file()
    (site / "a/b/c.txt").unlink()  # deleted at the source (a deletion of a file still there deletes nothing)
    gone = transport(["--to", spec, *state], env, jsonl([event(site, "a/b/c.txt", "deleted")]))
    assert gone.returncode == 0, gone.stderr.decode()
    assert not (files / "a" / "b").exists() and (files / "a" / "d.txt").is_file()  # a still holds d.txt
    # a later run (the made directories are in the state file) empties the rest
    rest = [event(site, r, "deleted") for r in ("a/d.txt", "theirs/e.txt")]
    for r in ("a/d.txt", "theirs/e.txt"):
        (site / r).unlink()
    gone = transport(["--to", spec, *state], env, jsonl(rest))
    assert gone.returncode == 0, gone.stderr.decode()
    assert not (files / "a").exists()
    assert (files / "theirs").is_dir() and list((files / "theirs").iterdir()) == []
    assert files.is_dir()  # the root stays
