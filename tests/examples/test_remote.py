"""The examples that send to real servers: live to SFTP (the sshd of tests/servers) and images to S3 (moto)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

from tests.conftest import require_tool
from tests.servers import s3
from tests.servers.s3 import S3Server, s3_server  # noqa: F401 - fixture
from tests.servers.sshd import SshServer, sshd_server  # noqa: F401 - fixture

from .conftest import SCRIPT, example, site_files, tree, wait_for


def test_live_to_sftp_until_sigterm(site: Path, tmp_path: Path, env: dict[str, str], sshd_server: SshServer) -> None:  # noqa: F811
    files = sshd_server.files / ("ex-" + secrets.token_hex(4))
    settings = {"key_file": sshd_server.key_file, "known_hosts": sshd_server.known_hosts, "agent": "no"}
    to = f"sftp://{sshd_server.user}@127.0.0.1:{sshd_server.port}{quote(str(files))}?{urlencode(settings)}"
    env = {**env, "FC_SFTP": to, "FC_SFTP_URL": "https://static.example/"}
    out, err = tmp_path / "out.jsonl", tmp_path / "err.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # its own process group, as a shell job is: SIGTERM goes to every stage, as Ctrl-C would
        p = subprocess.Popen(
            ["bash", str(SCRIPT), "live_to_sftp", str(site)],
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
    try:
        wait_for("the site on the server", lambda: tree(files) == site_files(site))
        (site / "themes" / "new file.css").write_bytes(b"a { color: red }\n")
        wait_for("a new file on the server", lambda: (files / "themes" / "new file.css").is_file(), timeout=20)
        assert (files / "themes" / "new file.css").read_bytes() == b"a { color: red }\n"
    finally:
        os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=30)
    wait_for("every stage stopped", lambda: not _group_alive(p.pid), timeout=15)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["rel"] for e in events} == site_files(site) | {"themes/new file.css"}, err.read_text()
    (new,) = [e for e in events if e["rel"] == "themes/new file.css"]
    assert new["transported"] == "uploaded" and new["url"] == "https://static.example/themes/new%20file.css"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_images_to_s3_with_css_rewritten(site: Path, tmp_path: Path, env: dict[str, str], s3_server: S3Server) -> None:  # noqa: F811
    for tool in ("jpegtran", "optipng", "gifsicle"):
        require_tool(tool, "image_optimizer.Max uses it")
    prefix = "ex-" + secrets.token_hex(4)
    db = tmp_path / "synced_files.db"
    env = {**env, **s3_server.env, "AWS_PROFILE": s3.PROFILE, "FC_S3_ENDPOINT": s3_server.endpoint, "FC_DB": str(db)}
    events = example("images_to_s3", site, f"s3://{s3.BUCKET}/{prefix}", env=env)
    wanted = site_files(site, ".css", ".png", ".jpg", ".jpeg", ".gif")
    assert {e["rel"] for e in events} == wanted and all(e["transported"] == "uploaded" for e in events)
    rows = sqlite3.connect(db).execute("SELECT input_file, transported_file_basename, url, server FROM synced_files")
    url = {os.path.relpath(r[0], site): r[2] for r in rows if r[3] == "s3cdn"}
    assert set(url) == wanted
    for rel in wanted:  # unique names: the MD5 of the (processed) content
        assert re.search(r"_[0-9a-f]{32}\.(css|png|jpg|gif)$", url[rel]), url[rel]
    # The stylesheet on S3 points at the uploaded copies: relative, root-relative and @import references.
    bucket = s3_server.files / s3.BUCKET
    style = (bucket / url["themes/garland/style.css"].split(f"/{s3.BUCKET}/", 1)[1]).read_text()
    for ref in ("themes/garland/images/header.jpg", "themes/garland/images/bullet.gif", "misc/druplicon.png"):
        assert url[ref] in style, (ref, style)
    assert url["themes/garland/print.css"] in style
    assert "images/header.jpg)" not in style
    # A plain HTTP GET of a recorded URL (no credentials: the objects are public-read) returns the file.
    header = url["themes/garland/images/header.jpg"]
    with urllib.request.urlopen(header, timeout=10) as r:
        body = r.read()
    assert body == (bucket / header.split(f"/{s3.BUCKET}/", 1)[1]).read_bytes()
    assert body[:2] == b"\xff\xd8" and len(body) <= (site / "themes/garland/images/header.jpg").stat().st_size
    with urllib.request.urlopen(url["themes/garland/style.css"], timeout=10) as r:
        assert r.read().decode() == style
