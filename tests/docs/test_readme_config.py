"""The README's config.xml for a newcomer ("One config file for the whole job"), exactly as printed there:
fc-conveyor --check takes it, and a real run fills the local folder, CSS rewritten to the URLs of its images;
with its SFTP <server> swapped for the one make try-sftp prints, as the README says, the files reach that server
too.  So the README's example cannot rot."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.conveyor.test_conveyor import synced, wait_for

from .conftest import TryServer, readme_block

HEADING = "### One config file for the whole job"
SITE = ROOT / "examples" / "site"
WEB = (".css", ".js", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico")  # the rule's <extensions>


class Folder:
    """The README's set-up: an empty folder holding config.xml and a copy of the demo site."""

    def __init__(self, tmp: Path, xml: str):
        self.dir = tmp / "fc"
        self.dir.mkdir()
        shutil.copytree(SITE, self.dir / "site")
        (self.dir / "config.xml").write_text(xml, encoding="utf-8")
        self.home = tmp / "home"  # a newcomer's: no SSH key, no state, no PID file
        self.home.mkdir()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("FC_")}, "HOME": str(self.home)}
        self.proc: subprocess.Popen[bytes] | None = None

    def conveyor(self, *args: str) -> list[str]:
        return [sys.executable, str(ROOT / "bin" / "fc-conveyor"), *args, "config.xml"]

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.conveyor("--check"), capture_output=True, text=True, cwd=self.dir, env=self.env)

    def start(self) -> None:
        out = (self.dir / "console.txt").open("wb")
        self.proc = subprocess.Popen(self.conveyor(), stdout=out, stderr=out, cwd=self.dir, env=self.env)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    @property
    def db(self) -> Path:
        return self.dir / "synced_files.db"

    def web_assets(self) -> set[str]:
        site = self.dir / "site"
        return {str(p) for p in site.rglob("*") if p.is_file() and p.suffix.lower() in WEB and "CVS" not in p.parts}

    def names(self, server: str) -> dict[str, str]:
        """Path relative to the site -> its name on ``server``, from the synced-files database."""
        site = self.dir / "site"
        return {os.path.relpath(f, site): name for f, s, name in synced(self.db) if s == server}

    def url(self, rel: str, server: str) -> str:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            sql = "SELECT url FROM synced_files WHERE input_file = ? AND server = ?"
            row = con.execute(sql, (str(self.dir / "site" / rel), server)).fetchone()
        finally:
            con.close()
        return str(row[0])


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    f = Folder(tmp_path, readme_block(HEADING, "xml"))
    yield f
    if f.proc is not None and f.proc.poll() is None:
        f.stop()


def _synced_to(f: Folder, server: str) -> bool:
    have = {os.path.join(f.dir / "site", rel) for rel in f.names(server)}
    return have >= f.web_assets()


def _css_points_at_the_images(f: Folder, css: Path, server: str) -> None:
    text = css.read_text()
    for ref in ("themes/garland/images/header.jpg", "themes/garland/images/bullet.gif", "misc/druplicon.png"):
        assert f.url(ref, server) in text, (ref, text)


def test_the_readme_config_as_printed(folder: Folder) -> None:
    f = folder
    assert {"local", "static"} <= set(re.findall(r'<server name="([^"]+)"', (f.dir / "config.xml").read_text()))
    # its SFTP server is a placeholder: a warning, not an error
    out = f.check()
    assert out.returncode == 0, out.stderr
    assert "valid. 1 source(s), 2 server(s), 1 rule(s)" in out.stdout
    assert "warning: static (sftp://deploy@static.example/" in out.stderr and "starting anyway" in out.stderr
    # a real run: the local folder fills while the SFTP server's files wait
    f.start()
    wait_for(lambda: _synced_to(f, "local"), 120, "every web asset in cdn/", f.dir / "fileconveyor.log")
    names = f.names("local")
    cdn = f.dir / "cdn" / "static"
    for rel, name in names.items():
        assert (cdn / os.path.dirname(rel) / name).exists(), rel
        assert re.search(r"_[0-9a-f]{32}\.[a-z]+$", name), name  # unique_filename.MD5
    assert "index.php" not in names and not any(rel.startswith("CVS") for rel in names)
    _css_points_at_the_images(f, cdn / "themes/garland" / names["themes/garland/style.css"], "local")
    # live: a new file in site/ is in cdn/static/ a moment later
    (f.dir / "site" / "misc" / "new.js").write_text("var  a  =  1 ;\n")
    wait_for(lambda: "misc/new.js" in f.names("local"), 60, "the new file in cdn/", f.dir / "fileconveyor.log")
    assert (cdn / "misc" / f.names("local")["misc/new.js"]).read_text() == "var a=1;"  # minify.JS
    assert not f.names("static")
    assert f.stop() == 0
    # "Each file synced is logged in fileconveyor.log next to config.xml (... -v shows the files there too)"
    console = (f.dir / "console.txt").read_text()
    assert f"Each file synced is logged in {f.dir / 'fileconveyor.log'} (-v: here too)." in console, console
    assert "Synced: " not in console and "Synced: " in (f.dir / "fileconveyor.log").read_text()


def test_the_readme_config_with_make_try_sftp(folder: Folder, try_sftp: TryServer) -> None:
    f = folder
    config = f.dir / "config.xml"
    xml = config.read_text()
    # "make try-sftp ... prints the lines to put in here instead of these": the lines of its <server>
    placeholder = re.search(r'(<server name="static" transporter="sftp">\n)(.*?)(\s*</server>)', xml, re.S)
    assert placeholder
    printed = try_sftp.server_xml.splitlines()
    assert printed[0].strip().startswith("<server ") and printed[-1].strip() == "</server>"
    lines = "\n".join(printed[1:-1])
    config.write_text(xml.replace(placeholder.group(0), placeholder.group(1) + lines + placeholder.group(3)))
    out = f.check()
    assert out.returncode == 0 and "starting anyway" not in out.stderr, out.stderr
    f.start()
    for server in ("local", "static"):
        wait_for(lambda s=server: _synced_to(f, s), 120, f"every web asset on {server}", f.dir / "fileconveyor.log")
    remote = try_sftp.files
    for rel, name in f.names("static").items():
        assert (remote / os.path.dirname(rel) / name).exists(), rel
    style = f.names("static")["themes/garland/style.css"]
    _css_points_at_the_images(f, remote / "themes/garland" / style, "static")  # its own URLs, not the local ones
    assert f.stop() == 0
