"""fc-conveyor runs the original daemon's sample config.xml (servers pointed at a
local folder and the loopback FTP server) as supervised pipelines: it syncs a
Drupal-like tree, restarts a stage killed with -9 without losing anything, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from tests.conftest import ROOT, require_tool, unavailable
from tests.servers.ftpd import PASSWORD, USER, FtpServer, ftp_server  # noqa: F401 - fixture

BIN = ROOT / "bin"
SAMPLE = Path(__file__).with_name("fixtures") / "sample.xml"


def wait_for(cond: Callable[[], object], timeout: float, what: str, log: Path | None = None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def synced(db: Path) -> set[tuple[str, str, str]]:
    """(input file relative to the tmp dir, server, transported name)"""
    if not db.exists():
        return set()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            rows = con.execute("SELECT input_file, server, transported_file_basename FROM synced_files").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return set()
    return {(r[0], r[1], r[2]) for r in rows}


class Conveyor:
    def __init__(self, tmp: Path, ftp: FtpServer):
        self.tmp = tmp
        self.htdocs = tmp / "htdocs"
        self.drupal = self.htdocs / "drupal"
        shutil.copytree(ROOT / "examples" / "site", self.drupal)
        # a video for the Videos rule (over its 1,000,000-byte minimum) and one it must not take
        (self.drupal / "misc" / "intro.flv").write_bytes(os.urandom(1_000_100))
        (self.drupal / "misc" / "tiny.flv").write_bytes(b"x" * 100)
        self.downloads = tmp / "Downloads"
        self.downloads.mkdir()
        (self.downloads / "Holiday 720p.mov").write_bytes(b"movie" * 100)
        (self.downloads / "Holiday 1080p.mov").write_bytes(b"movie" * 100)
        self.static = self.htdocs / "static.example.com"
        self.ftp_root = f"conveyor-{uuid.uuid4().hex[:8]}"
        self.ftp_files = ftp.files / self.ftp_root
        self.db = tmp / "synced_files.db"
        self.pid_file = tmp / "fileconveyor.pid"
        self.log = tmp / "fileconveyor.log"
        self.config = tmp / "config.xml"
        # The sample as written; only the paths and the FTP server's address and account change.
        xml = SAMPLE.read_text()
        xml = xml.replace(
            'scanPath="/htdocs/drupal" documentRoot="/htdocs"', f'scanPath="{self.drupal}" documentRoot="{self.htdocs}"'
        )
        xml = xml.replace("/Users/wimleers/Downloads", str(self.downloads))
        xml = xml.replace("<location>/htdocs/static.example.com</location>", f"<location>{self.static}</location>")
        xml = xml.replace(
            "<host>localhost</host>",
            f"<host>127.0.0.1</host>\n      <port>{ftp.port}</port>\n      <path>/{self.ftp_root}</path>",
        )
        xml = xml.replace("<username>daemontest</username>", f"<username>{escape(USER)}</username>")
        xml = xml.replace("<password>daemontest</password>", f"<password>{escape(PASSWORD)}</password>")
        self.config.write_text(xml)
        self.config.chmod(0o600)
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            str(BIN / "fc-conveyor"),
            "--pid-file",
            str(self.pid_file),
            "--log-file",
            str(self.log),
            "--state-dir",
            str(self.tmp / "state"),
            *extra,
            str(self.config),
        ]

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.tmp)

    def status(self) -> dict:
        out = subprocess.run(self.args("--status", "--json"), capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout)

    def stage(self, name: str) -> dict:
        return next(s for s in self.status()["stages"] if s["name"] == name)

    def stop(self) -> int:
        assert self.proc is not None
        pid = int(self.pid_file.read_text())
        assert pid == self.proc.pid
        os.kill(pid, signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def conveyor(tmp_path: Path, ftp_server: FtpServer) -> Iterator[Conveyor]:  # noqa: F811
    c = Conveyor(tmp_path, ftp_server)
    yield c
    if c.proc is not None and c.proc.poll() is None:
        c.proc.kill()
        c.proc.wait()
    # no stage may outlive the test
    subprocess.run(["pkill", "-9", "-f", str(tmp_path / "state")], check=False)


def expected_rule1(c: Conveyor) -> set[str]:
    """The files rule 1 takes: under its paths, with its extensions (any case), not in CVS."""
    dirs = ("misc", "profiles", "modules", "themes", "sites/all", "sites/default")
    exts = ("ico", "js", "css", "gif", "png", "jpg", "jpeg", "svg", "swf")
    out = set()
    for p in c.drupal.rglob("*"):
        rel = p.relative_to(c.drupal).as_posix()
        if p.is_file() and rel.startswith(tuple(d + "/" for d in dirs)) and p.suffix[1:].lower() in exts:
            out.add(str(p))
    return out


def test_sample_config_runs_survives_kill_9_and_stops_on_term(conveyor: Conveyor) -> None:
    c = conveyor
    c.start()
    rule1 = expected_rule1(c)
    assert len(rule1) >= 6
    video = str(c.drupal / "misc" / "intro.flv")
    movie = str(c.downloads / "Holiday 720p.mov")

    def all_synced() -> bool:
        rows = synced(c.db)
        have = {(f, s) for f, s, _ in rows}
        want = {(f, s) for f in rule1 for s in ("origin pull cdn", "ftp push cdn")}
        want |= {(video, "ftp push cdn"), (movie, "origin pull cdn"), (movie, "ftp push cdn")}
        return want <= have

    wait_for(all_synced, 150, "the sample config's rules to sync every matching file", c.log)
    rows = synced(c.db)
    files = {f for f, _, _ in rows}
    # only what the rules select: not the small video, not the 1080p movie, not index.php
    assert str(c.drupal / "misc" / "tiny.flv") not in files
    assert str(c.downloads / "Holiday 1080p.mov") not in files
    assert str(c.drupal / "index.php") not in files
    # the files are really on both servers, under the rules' paths, with the processed names
    for f, server, name in rows:
        rel = Path(f).relative_to(c.drupal if f.startswith(str(c.drupal)) else c.downloads).parent / name
        if f == video:
            assert (c.ftp_files / "videos" / rel).exists()
        elif f == movie:
            assert (c.static / "mirror" / rel).exists() and (c.ftp_files / "mirror" / rel).exists()
        else:
            root = c.static if server == "origin pull cdn" else c.ftp_files
            assert (root / "static" / rel).exists(), (server, rel)
    # CSS rewritten per server: each copy points at that server's URLs
    css = [r for r in rows if r[0].endswith("style.css")]
    assert {r[1] for r in css} == {"origin pull cdn", "ftp push cdn"}
    for _, server, name in css:
        root = c.static if server == "origin pull cdn" else c.ftp_files
        text = (root / "static" / "themes" / "garland" / name).read_text()
        base = "http://localhost/static.example.com/" if server == "origin pull cdn" else "http://localhost/daemontest/"
        assert base in text, text
    # the Videos rule's fileDeletionDelayAfterSync applies to its own files only (the original
    # scheduled every synced file of every rule for deletion)
    con = sqlite3.connect(c.db)
    scheduled = {r[0] for r in con.execute("SELECT input_file FROM source_deletions")}
    con.close()
    assert scheduled == {video}

    # kill -9 one stage: it is restarted and nothing is lost
    name = next(s["name"] for s in c.status()["stages"] if s["command"] == "fc-transport" and "r1" in s["name"])
    victim = c.stage(name)
    assert victim["state"] == "running"
    new_css = c.drupal / "misc" / "added.css"
    os.kill(victim["pid"], signal.SIGKILL)
    new_css.write_text("body { color: red }\n")
    wait_for(lambda: c.stage(name).get("restarts", 0) >= 1 and c.stage(name)["state"] == "running", 30, "a restart")
    wait_for(
        lambda: (
            {(str(new_css), s) for s in ("origin pull cdn", "ftp push cdn")} <= {(f, s) for f, s, _ in synced(c.db)}
        ),
        60,
        "the file added around the kill to reach both servers",
        c.log,
    )
    assert "exited" in c.log.read_text() or "killed by signal 9" in c.log.read_text()

    # SIGTERM: every stage stops, exit 0, PID file gone
    pids = [s["pid"] for s in c.status()["stages"] if s.get("pid")]
    assert len(pids) == len(c.status()["stages"])
    assert c.stop() == 0
    assert not c.pid_file.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    log = c.log.read_text()
    assert "File Conveyor has shut down." in log
    # the original's log format
    assert " - FileConveyor              - WARNING  - File Conveyor is initializing" in log
    st = c.status()
    assert st["running"] is False


def test_invalid_config_reports_every_error_and_starts_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "config.xml"
    cfg.write_text(
        """<?xml version="1.0"?>
<config>
  <sources>
    <source name="site" scanPath="/no/such/dir" />
  </sources>
  <servers>
    <server name="cdn" transporter="symlink_or_copy"><location>/tmp/x</location><url>http://x/</url></server>
  </servers>
  <rules>
    <rule for="site" label="a">
      <destinations><destination server="nope" /></destinations>
    </rule>
  </rules>
</config>
"""
    )
    out = subprocess.run(
        [
            sys.executable,
            str(BIN / "fc-conveyor"),
            "--pid-file",
            str(tmp_path / "pid"),
            "--state-dir",
            str(tmp_path / "st"),
            str(cfg),
        ],
        capture_output=True,
        timeout=30,
    )
    err = out.stderr.decode()
    assert out.returncode == 3, err
    assert f"{cfg}:4:" in err and f"{cfg}:11:" in err, err  # both errors, each with its line
    assert "nothing was started" in err
    assert not (tmp_path / "pid").exists() and not (tmp_path / "st").exists()


def local_config(tmp_path: Path) -> tuple[Path, Path, Path]:
    site = tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "site", site)
    cdn = tmp_path / "cdn"
    cfg = tmp_path / "config.xml"
    cfg.write_text(
        f"""<config>
  <sources ignoredDirs="CVS"><source name="site" scanPath="{site}" /></sources>
  <servers>
    <server name="cdn" transporter="symlink_or_copy"><location>{cdn}</location><url>http://cdn/</url></server>
  </servers>
  <rules>
    <rule for="site" label="CSS"><filter><extensions>css</extensions></filter>
      <processorChain><processor name="unique_filename.MD5" /></processorChain>
      <destinations><destination server="cdn" path="css" /></destinations></rule>
    <rule for="site" label="all"><destinations><destination server="cdn" path="all" /></destinations></rule>
  </rules>
  <settings>
    <PERSISTENT_DATA_DB>{tmp_path / "state"}</PERSISTENT_DATA_DB><PID_FILE>{tmp_path / "pid"}</PID_FILE>
  </settings>
</config>
"""
    )
    return cfg, site, cdn


def test_a_second_conveyor_with_the_same_pid_file_refuses_to_start(tmp_path: Path) -> None:
    cfg, _, _ = local_config(tmp_path)
    first = subprocess.Popen([sys.executable, str(BIN / "fc-conveyor"), str(cfg)], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (tmp_path / "pid").exists(), 20, "the PID file")
        second = subprocess.run([sys.executable, str(BIN / "fc-conveyor"), str(cfg)], capture_output=True, timeout=30)
        assert second.returncode == 4, second.stderr.decode()
        assert f"already running with this PID file (pid {first.pid})" in second.stderr.decode()
        # with another PID file, the same config is still refused: its stages' state is in use
        third = subprocess.run(
            [sys.executable, str(BIN / "fc-conveyor"), "--pid-file", str(tmp_path / "other.pid"), str(cfg)],
            capture_output=True,
            timeout=30,
        )
        assert third.returncode == 4, third.stderr.decode()
        assert f"another fc-conveyor (pid {first.pid}) runs this config's stages" in third.stderr.decode()
        assert not (tmp_path / "other.pid").exists()
        # --status with another PID file still finds it: by its state directory's lock
        other = [sys.executable, str(BIN / "fc-conveyor"), "--pid-file", str(tmp_path / "other.pid"), "--status"]
        st = json.loads(subprocess.run([*other, "--json", str(cfg)], capture_output=True, timeout=30).stdout)
        assert (st["running"], st["pid"], st["found_by"]) == (True, first.pid, "state_dir_lock")
        text = subprocess.run([*other, str(cfg)], capture_output=True, timeout=30).stdout.decode()
        assert f"running (pid {first.pid}, found by the lock on its state directory" in text, text
        # the PID file is re-created when deleted, as the original did
        (tmp_path / "pid").unlink()
        wait_for(lambda: (tmp_path / "pid").exists(), 5, "the PID file to come back")
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0


def test_printed_shell_pipelines_run_as_printed(tmp_path: Path) -> None:
    """--print's script with --scan-once (the cron use): it ends when every branch is
    done, with status 0, and everything is there at that moment."""
    cfg, site, cdn = local_config(tmp_path)
    script = subprocess.run(
        [sys.executable, str(BIN / "fc-conveyor"), "--print", str(cfg)], capture_output=True, timeout=30, check=True
    ).stdout.decode()
    assert "| tee" in script and script.count("fc-record") == 2
    once = script.replace("bin/fc-watch ", "bin/fc-watch --scan-once ")
    assert once != script
    run = subprocess.run(["bash", "-c", once], capture_output=True, timeout=180, start_new_session=True)
    assert run.returncode == 0, run.stderr.decode()
    every = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file() and "CVS" not in p.parts}
    assert {p.relative_to(cdn / "all").as_posix() for p in (cdn / "all").rglob("*") if p.is_file()} == every
    css = list((cdn / "css").rglob("*.css"))
    assert len(css) == 3 and all("_" in p.stem for p in css)  # unique_filename.MD5 names
    # a branch that fails makes the script fail: the destination is now a file.  Its fc-transport is refused at
    # start (exit 3) and its fc-record ends with 0, well before the script waits for that branch: the script said 0
    # in 4 of 5 runs when it waited for a bare background pipeline (bash keeps only its last command's status).
    shutil.rmtree(cdn / "all")
    (cdn / "all").write_text("not a directory")
    for i in range(3):
        (site / "misc" / f"new{i}.txt").write_text("x")
        run = subprocess.run(["bash", "-c", once], capture_output=True, timeout=180, start_new_session=True)
        assert run.returncode != 0, (i, run.stderr.decode())


def test_supervisord_and_systemd_output_name_every_stage_and_no_secret(tmp_path: Path) -> None:
    cfg, _, _ = local_config(tmp_path)
    text = (
        cfg.read_text()
        .replace(
            "</servers>",
            '<server name="ftp push" transporter="ftp"><host>127.0.0.1</host><username>u</username>'
            "<password>s3cr3t-pw</password><url>http://ftp/</url></server></servers>",
        )
        .replace(
            '<destination server="cdn" path="all" />',
            '<destination server="cdn" path="all" /><destination server="ftp push" />',
        )
    )
    cfg.write_text(text)
    cfg.chmod(0o600)  # it holds a password
    plan_names = None
    for mode in ("--supervisord", "--systemd", "--print"):
        out = subprocess.run(
            [sys.executable, str(BIN / "fc-conveyor"), mode, str(cfg)], capture_output=True, timeout=30
        )
        assert out.returncode == 0, out.stderr.decode()
        body = out.stdout.decode()
        assert "s3cr3t-pw" not in body
        assert "FC_" in body  # the secret's variable is named instead
        if mode == "--supervisord":
            import configparser

            ini = configparser.RawConfigParser()
            ini.read_string(body)
            plan_names = [s.removeprefix("program:") for s in ini.sections() if s.startswith("program:")]
            assert ini["group:fileconveyor"]["programs"].split(",") == plan_names
            for name in plan_names:
                assert ini[f"program:{name}"]["autorestart"] == "true"
        elif mode == "--systemd":
            assert plan_names
            for name in plan_names:
                assert f"# --- fileconveyor-{name}.service ---" in body
            assert "Restart=always" in body
            # systemd itself reads them: every unit must load without a fatal error
            analyze = require_tool("systemd-analyze", "fc-conveyor --systemd's units are verified with it")
            units = tmp_path / "units"
            units.mkdir()
            for part in body.split("\n# --- ")[1:]:
                name, text = part.split(" ---\n", 1)
                (units / name).write_text(text)
            assert len(list(units.glob("*.service"))) == len(plan_names)
            check = subprocess.run(
                [analyze, "verify", "--man=no", *sorted(map(str, units.iterdir()))], capture_output=True, timeout=60
            )
            assert check.returncode == 0, check.stderr.decode()
        else:
            subprocess.run(["bash", "-n"], input=out.stdout, check=True)


def test_kill_9_of_fc_conveyor_takes_its_stages_along_and_a_restart_loses_nothing(tmp_path: Path) -> None:
    cfg, site, cdn = local_config(tmp_path)
    argv = [sys.executable, str(BIN / "fc-conveyor"), str(cfg)]
    status = [sys.executable, str(BIN / "fc-conveyor"), "--status", "--json", str(cfg)]
    first = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (cdn / "all" / "index.php").exists(), 60, "the first sync")
        st = json.loads(subprocess.run(status, capture_output=True, timeout=30, check=True).stdout)
        pids = [s["pid"] for s in st["stages"]]
        assert len(pids) == 8 and all(pids)
        watch = next(s for s in st["stages"] if s["command"] == "fc-watch")
        every = [p for p in site.rglob("*") if p.is_file() and "CVS" not in p.parts]
        assert watch["watch"]["files"] == len(every)
        first.send_signal(signal.SIGKILL)
        first.wait()

        def all_gone() -> bool:
            alive = 0
            for pid in pids:
                try:
                    os.kill(pid, 0)
                    alive += 1
                except ProcessLookupError:
                    pass
            return alive == 0

        wait_for(all_gone, 30, "the orphaned stages to stop")
        (site / "misc" / "late.css").write_text("p { margin: 0 }\n")  # changed while nothing runs
        second = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: (cdn / "all" / "misc" / "late.css").exists(), 60, "the change made while down")
            wait_for(lambda: any((cdn / "css" / "misc").glob("late_*.css")), 60, "its CSS rule's copy")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()


def test_printed_supervisord_config_runs_under_supervisord(tmp_path: Path) -> None:
    """What --supervisord prints, included as it is from a minimal supervisord.conf: every
    stage starts, files flow, a stage killed with -9 is restarted and nothing is lost."""
    bindir = Path(sys.executable).parent
    if not (bindir / "supervisord").exists():
        unavailable("supervisord is not installed (pip install supervisor: the [test] extras)")
    cfg, site, cdn = local_config(tmp_path)
    printed = subprocess.run(
        [sys.executable, str(BIN / "fc-conveyor"), "--supervisord", str(cfg)],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    (tmp_path / "fileconveyor.conf").write_text(printed)
    sock = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    logs = tmp_path / "logs"  # each stage's stderr, shown when a wait times out
    logs.mkdir()
    conf.write_text(
        f"[supervisord]\nlogfile={tmp_path / 'supervisord.log'}\npidfile={tmp_path / 'supervisord.pid'}\n"
        f"childlogdir={logs}\n"
        f"[unix_http_server]\nfile={sock}\n[supervisorctl]\nserverurl=unix://{sock}\n"
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[include]\nfiles = {tmp_path / 'fileconveyor.conf'}\n"
    )

    def ctl(*args: str) -> str:
        out = subprocess.run([bindir / "supervisorctl", "-c", conf, *args], capture_output=True, timeout=30)
        return out.stdout.decode().strip()

    d = subprocess.Popen([bindir / "supervisord", "-n", "-c", conf], start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        every = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file() and "CVS" not in p.parts}

        def tree(d: Path) -> set[str]:
            return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} if d.exists() else set()

        wait_for(lambda: tree(cdn / "all") == every, 90, "every file in cdn/all", tmp_path / "supervisord.log")
        victim = int(ctl("pid", "fileconveyor:site-r2-transport"))
        assert victim > 0
        os.kill(victim, signal.SIGKILL)
        for i in range(20):
            (site / "misc" / f"n{i}.txt").write_text(str(i))
        wait_for(
            lambda: (
                ctl("pid", "fileconveyor:site-r2-transport").isdigit()
                and int(ctl("pid", "fileconveyor:site-r2-transport")) not in (0, victim)
            ),
            30,
            "supervisord to restart the stage",
        )
        try:
            wait_for(
                lambda: {f"misc/n{i}.txt" for i in range(20)} <= tree(cdn / "all"), 60, "the files written meanwhile"
            )
        except AssertionError as e:
            got = sorted(f for f in tree(cdn / "all") if f.startswith("misc/n"))
            said = "".join(
                f"\n--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(logs.iterdir()) if f.stat().st_size
            )
            raise AssertionError(f"{e}\narrived of the 20: {got}\n{ctl('status')}{said}") from None
        assert "RUNNING" in ctl("status") and "FATAL" not in ctl("status")
        # fc-conveyor --status still tells what runs (the stages with a state file), and where
        st = json.loads(
            subprocess.run(
                [sys.executable, str(BIN / "fc-conveyor"), "--status", "--json", str(cfg)],
                capture_output=True,
                timeout=30,
                check=True,
            ).stdout
        )
        assert st["running"] is False
        stateful = [x for x in st["stages"] if x["command"] not in ("fc-tee", "fc-filter")]  # pass-throughs
        assert stateful and all(x["state"] == "running outside fc-conveyor" for x in stateful), stateful
        assert int(ctl("pid", "fileconveyor:site-r2-transport")) in [x["pid"] for x in stateful]
    finally:
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(d.pid, signal.SIGKILL)
            d.wait()


def test_failures_are_logged_and_retried_at_the_next_start(tmp_path: Path) -> None:
    """A destination that refuses files for good (here: a file where each of their directories should be; a
    folder that is a file is refused at start now) gives an ERROR per file in the log, like the original; once
    fixed, the next start of fc-conveyor sends them (it retries failed files at start), and says so."""
    cfg, site, cdn = local_config(tmp_path)
    blocks = [cdn / path / top for path in ("all", "css") for top in ("misc", "modules", "sites", "themes")]
    for block in blocks:
        block.parent.mkdir(parents=True, exist_ok=True)
        block.write_text("a file where a directory should be")
    log = tmp_path / "fileconveyor.log"
    argv = [sys.executable, str(BIN / "fc-conveyor"), "--log-file", str(log), str(cfg)]
    first = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: log.exists() and log.read_text().count("Failed: ") >= 3, 60, "failures in the log", log)
        text = log.read_text()
        assert " - ERROR    - Failed: '" in text
        assert "Fix it, then restart fc-conveyor: it retries failed files when it starts." in text
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    console = first.stderr.read().decode()  # type: ignore[union-attr]
    assert "Failed: '" in console  # ERROR reaches the console too
    for block in blocks:
        block.unlink()
    second = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        every = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file() and "CVS" not in p.parts}
        wait_for(
            lambda: (
                {p.relative_to(cdn / "all").as_posix() for p in (cdn / "all").rglob("*") if p.is_file()} == every
                if (cdn / "all").is_dir()
                else False
            ),
            60,
            "the failed files, sent at the next start",
            log,
        )
        wait_for(lambda: "Synced: '" in log.read_text(), 10, "Synced lines in the log")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0


def test_wrong_ftp_password_is_refused_at_start_and_by_check(tmp_path: Path, ftp_server: FtpServer) -> None:  # noqa: F811
    """The login is tried at start: --check and a start both exit 3 naming the server and the refusal, and no
    stage starts; a server that is down is only a warning (its files will wait)."""
    c = Conveyor(tmp_path, ftp_server)
    right = c.config.read_text()
    c.config.write_text(right.replace(f"<password>{escape(PASSWORD)}</password>", "<password>wrong</password>"))
    check = subprocess.run(c.args("--check"), capture_output=True, timeout=60)
    err = check.stderr.decode()
    assert check.returncode == 3 and check.stdout == b"", err
    assert "fc-conveyor: error: refused at start: ftp push cdn (ftp://" in err and "login refused: 530" in err
    start = subprocess.run(c.args(), capture_output=True, timeout=60)
    assert start.returncode == 3, start.stdout.decode() + start.stderr.decode()
    assert "login refused: 530" in c.log.read_text()
    assert "Fully up and running" not in c.log.read_text()
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("*transport*.db"))
    down = right.replace(f"<port>{ftp_server.port}</port>", "<port>1</port>")
    c.config.write_text(down)
    check = subprocess.run(c.args("--check"), capture_output=True, timeout=60)
    assert check.returncode == 0 and b": valid." in check.stdout, check.stderr.decode()
    assert "warning: ftp push cdn (ftp://" in check.stderr.decode() and "connection refused" in check.stderr.decode()
    c.config.write_text(right)
    check = subprocess.run(c.args("--check"), capture_output=True, timeout=60)
    assert check.returncode == 0 and check.stderr == b"", check.stderr.decode()


def test_a_renamed_config_carries_on_and_a_copy_says_how_to(tmp_path: Path) -> None:
    """State is keyed by the config file's path.  Renamed (the old file gone), its state directory moves along and
    nothing is sent again; copied (both there), the copy starts over and the log names the state to carry on
    from (--state-dir)."""
    cfg, site, cdn = local_config(tmp_path)
    cfg.write_text(cfg.read_text().replace(f"<PERSISTENT_DATA_DB>{tmp_path / 'state'}</PERSISTENT_DATA_DB>", ""))
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "states")}
    log = tmp_path / "fileconveyor.log"
    # every file goes to all/, the CSS files to css/ too: the first run must have sent all of them before it
    # stops, or the second one sends the rest (for the first time), which is not what is tested here
    files = [p for p in site.rglob("*") if p.is_file() and "CVS" not in p.parts]  # ignoredDirs
    expected = len(files) + sum(p.suffix == ".css" for p in files)

    def uploads() -> dict[Path, tuple[int, int]]:
        """What is on the destination: an upload again would replace the file or link (a new inode)."""
        return {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in cdn.rglob("*") if not p.is_dir()}

    def run_until_synced(config: Path, settle: float) -> None:
        argv = [sys.executable, str(BIN / "fc-conveyor"), "--log-file", str(log), str(config)]
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL, env=env)
        try:
            status = [sys.executable, str(BIN / "fc-conveyor"), "--status", "--json", str(config)]

            def idle() -> bool:
                st = json.loads(subprocess.run(status, capture_output=True, timeout=30, env=env).stdout)
                return st["running"] and all(x.get("queue", {}).get("queued", 0) == 0 for x in st["stages"])

            def all_sent() -> bool:
                return len(uploads()) >= expected and log.read_text().count("Synced: '") >= expected

            wait_for(all_sent, 60, f"{expected} files sent and recorded", log)
            wait_for(idle, 60, "every queue empty", log)
            time.sleep(settle)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0

    run_until_synced(cfg, 1)
    assert log.read_text().count("Synced: '") == expected
    sent = uploads()
    assert len(sent) == expected
    renamed = tmp_path / "renamed.xml"
    cfg.rename(renamed)
    run_until_synced(renamed, 3)  # what it would send again: every stage replays what was not acknowledged
    text = log.read_text()
    assert f"This config file was {cfg} (gone now: moved or renamed): its state moves along" in text
    assert text.count("Synced: '") == expected  # nothing sent again
    assert uploads() == sent
    # the stages' paths moved along: an acknowledgement to the old place failed and the line came again each start
    assert "cannot acknowledge" not in text
    assert [d.name for d in (tmp_path / "states").iterdir() if d.name.startswith("conveyor-")] == [
        d.name for d in (tmp_path / "states").iterdir() if d.name.startswith("conveyor-renamed-")
    ]
    # a copy: both files exist, so the copy cannot take the state; it says which state to give it
    copy = tmp_path / "copy.xml"
    shutil.copy(renamed, copy)
    argv = [sys.executable, str(BIN / "fc-conveyor"), "--log-file", str(log), str(copy)]
    started = subprocess.Popen(argv, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: "has its state in" in log.read_text(), 30, "the copy's warning", log)
    finally:
        started.send_signal(signal.SIGTERM)
        started.wait(timeout=60)
    line = next(ln for ln in log.read_text().splitlines() if "has its state in" in ln)
    assert f"{renamed.resolve()}, with the same sources and servers, has its state in" in line
    assert "start this one with --state-dir " in line and "conveyor-renamed-" in line


def test_json_without_status_is_a_usage_error(tmp_path: Path) -> None:
    cfg, _, _ = local_config(tmp_path)
    out = subprocess.run(
        [sys.executable, str(BIN / "fc-conveyor"), "--json", str(cfg)], capture_output=True, timeout=30
    )
    assert out.returncode == 2 and "--json goes with --status" in out.stderr.decode()
    assert not (tmp_path / "pid").exists()


def test_transfers_refused_for_good_then_fixed_send_the_processed_files(
    tmp_path: Path,
    ftp_server: FtpServer,  # noqa: F811
) -> None:
    """Issue 17, finding 2: the processed copies of transfers refused for good (a wrong password, then) were
    removed once fc-transport acknowledged them, and the restart after the fix ("2 failed transfer(s) queued
    again") sent nothing.  Now fc-process keeps the latest copy of each path, and the restart sends every
    processed file.  A wrong password is refused at start now (finding 9), so the refusal here is one per file:
    a file on the server where the files' directory must go."""
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    for i in range(2):
        (site / "css" / f"s{i}.css").write_text(f"body {{\n  margin: {i}px;\n}}\n")
    sub = f"pw-{uuid.uuid4().hex[:8]}"

    def config(password: str) -> Path:
        cfg = tmp_path / "config.xml"
        cfg.write_text(
            f"""<config>
  <sources><source name="site" scanPath="{site}" /></sources>
  <servers>
    <server name="ftp" transporter="ftp"><host>127.0.0.1</host><port>{ftp_server.port}</port>
      <path>/{sub}</path><username>{escape(USER)}</username><password>{escape(password)}</password>
      <url>http://cdn/</url></server>
  </servers>
  <rules>
    <rule for="site" label="CSS"><filter><extensions>css</extensions></filter>
      <processorChain><processor name="minify.CSS" /><processor name="unique_filename.MD5" /></processorChain>
      <destinations><destination server="ftp" /></destinations></rule>
  </rules>
  <settings><PERSISTENT_DATA_DB>{tmp_path / "state"}</PERSISTENT_DATA_DB><PID_FILE>{tmp_path / "pid"}</PID_FILE>
  </settings>
</config>
"""
        )
        cfg.chmod(0o600)
        return cfg

    log = tmp_path / "fileconveyor.log"
    (ftp_server.files / sub).mkdir()
    (ftp_server.files / sub / "css").write_text("a file where the files' directory must go")
    argv = [sys.executable, str(BIN / "fc-conveyor"), "--log-file", str(log), str(config(PASSWORD))]
    first = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.exists() and "Fix it, then restart" in log.read_text(), 60, "the refused files", log)
        time.sleep(6)  # past fc-process's housekeeping (every 5 s), which released acknowledged work files
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    assert not list((ftp_server.files / sub).rglob("*.css"))
    (ftp_server.files / sub / "css").unlink()
    second = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: len(list((ftp_server.files / sub).rglob("*.css"))) == 2,
            60,
            "both processed files on the FTP server after the fix",
            log,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    for p in (ftp_server.files / sub).rglob("*.css"):
        assert p.read_text().strip() == f"body{{margin:{p.name[1]}px}}"  # minified: the processed copy
