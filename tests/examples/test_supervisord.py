"""examples/supervisord.conf under the real supervisord: one program per stage, FIFOs between them.  A stage
killed with kill -9 is restarted by supervisord and no file is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, unavailable

from .conftest import SCRIPT, site_files, tree, wait_for

CONF = ROOT / "examples" / "supervisord.conf"
STAGES = ("fc-watch", "fc-filter", "fc-process", "fc-transport", "fc-record")
ASSETS = (".css", ".js", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".woff", ".woff2")


class Supervisor:
    def __init__(self, conf: Path, env: dict[str, str]):
        self.conf, self.env = conf, env
        bindir = Path(sys.executable).parent
        self.ctl = bindir / "supervisorctl"

    def pid(self, program: str) -> int:
        out = subprocess.run([self.ctl, "-c", self.conf, "pid", program], capture_output=True, env=self.env, timeout=30)
        text = out.stdout.decode().strip()
        return int(text) if text.isdigit() else 0

    def status(self) -> str:
        out = subprocess.run([self.ctl, "-c", self.conf, "status"], capture_output=True, env=self.env, timeout=30)
        return out.stdout.decode()


@pytest.fixture
def supervised(site: Path, tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[Supervisor, Path, Path]]:
    bindir = Path(sys.executable).parent
    if not (bindir / "supervisord").exists():
        unavailable("supervisord is not installed (pip install supervisor: the [test] extras)")
    var, log, cdn = tmp_path / "var", tmp_path / "log", tmp_path / "cdn"
    text = CONF.read_text()
    # The example's paths, rewritten to this test's (the checkout's python first: the one running the tests).
    for path, here in [
        ("/opt/fileconveyor/.venv/bin", str(bindir)),
        ("/opt/fileconveyor", str(ROOT)),
        ("/srv/www", str(site)),
        ("/var/www/cdn", str(cdn)),
        ("/var/lib/fileconveyor", str(var)),
        ("/var/log/fileconveyor", str(log)),
    ]:
        assert path in text
        text = text.replace(path, here)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(text)
    log.mkdir()
    subprocess.run(["bash", str(SCRIPT), "make_fifos", str(var / "fifo")], check=True, env=env, timeout=30)
    assert sorted(p.name for p in (var / "fifo").iterdir()) == ["filter", "process", "transport", "watch"]
    output = tmp_path / "supervisord.out"
    with output.open("wb") as f:
        d = subprocess.Popen(
            [bindir / "supervisord", "-n", "-c", conf], env=env, stdout=f, stderr=f, start_new_session=True
        )
    sup = Supervisor(conf, env)
    try:
        wait_for("supervisord started", lambda: d.poll() is not None or sup.pid("fc-record") > 0)
        assert d.poll() is None, output.read_text()
        yield sup, cdn, var
    finally:
        d.send_signal(signal.SIGTERM)  # supervisord stops every program with SIGTERM, then exits
        try:
            d.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(d.pid, signal.SIGKILL)
            d.wait()
            pytest.fail("supervisord did not stop within 60 s")


def test_stages_under_supervisord_survive_kill_9(supervised: tuple[Supervisor, Path, Path], site: Path) -> None:
    sup, cdn, var = supervised
    wait_for("the site in the destination folder", lambda: tree(cdn) == site_files(site, *ASSETS), timeout=60)
    for name in STAGES:
        assert sup.pid(name) > 0, sup.status()
    new = site / "new"
    new.mkdir()
    first = {f"new/a{i}.css" for i in range(10)}
    for rel in first:
        (site / rel).write_text(f".a{{color: #{len(rel):06x}}}\n")
    (new / "skip.php").write_text("<?php ?>\n")  # no rule for it: filtered out
    wait_for("new files live", lambda: first <= tree(cdn), timeout=30)
    # Files in flight while a middle stage dies: supervisord restarts it and nothing is lost.
    victim = sup.pid("fc-process")
    second = {f"new/b{i}.js" for i in range(100)}
    for i in range(100):
        (site / f"new/b{i}.js").write_text(f"var  b = {i};\n")
    wait_for("the first of them delivered", lambda: bool(second & tree(cdn)), timeout=30)
    os.kill(victim, signal.SIGKILL)
    in_flight = len(second - tree(cdn))
    print(f"{in_flight} of {len(second)} not delivered yet when fc-process was killed")
    wait_for("fc-process restarted", lambda: sup.pid("fc-process") not in (0, victim), timeout=30)
    expected = site_files(site, *ASSETS)
    wait_for("every file after the restart", lambda: tree(cdn) == expected, timeout=60)
    assert "new/skip.php" not in tree(cdn)
    assert (cdn / "new/b1.js").read_text() == "var b=1;"  # minified (rjsmin): went through fc-process
    for name in STAGES:
        assert sup.pid(name) > 0, sup.status()
    db = var / "synced_files.db"
    wait_for(
        "every file recorded",
        lambda: len(sqlite3.connect(db).execute("SELECT input_file FROM synced_files").fetchall()) == len(expected),
    )
