"""Owner-only state files, work directories and logs; no config file whose secrets others can read
(issue 16, finding 8).

State files name every file of the tree and hold the queue, work directories hold processed files before they
are public, the log names every file synced: 0600 files and 0700 directories whatever the umask, and files an
older version left 0644 are tightened (said at -v).  The synced-files database keeps the umask's mode: the web
server reads it.  fc-conveyor refuses a config.xml with a password that others can read, as fc-transport refuses
such a --config, with the same words."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileconveyor.cli.process import main as process_main
from fileconveyor.conveyor.logs import make_logger
from tests.conftest import RELAY, ROOT, call, unavailable
from tests.conveyor.test_config import RULES, SOURCES
from tests.conveyor.test_config import write as write_config
from tests.process.conftest import event, lines, outputs
from tests.relay import main as filter_main  # a stage with a state file: fc-filter keeps none


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path | str | bytes) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _filter(state: Path, *extra: str, src: Path | None = None) -> str:
    src = src or state.parent / "site"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("a")
    res = call(filter_main, [*extra, "--state", str(state)], lines([event(src / "a.txt")]))
    assert res.status == 0, res.stderr
    return res.stderr


@pytest.mark.usefixtures("umask")
def test_a_new_state_file_and_its_directory_are_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "new" / "dir" / "filter.db"
    _filter(state, src=tmp_path / "site")
    assert mode(tmp_path / "new") == 0o700 and mode(state.parent) == 0o700
    made = [p for p in state.parent.iterdir()]
    assert {p.name for p in made} >= {"filter.db", "filter.db.lock"}
    assert {p.name: mode(p) for p in made} == {p.name: 0o600 for p in made}


def test_the_default_state_directory_is_owner_only(tmp_path: Path, state_dir: Path, umask: int) -> None:
    src = tmp_path / "site"
    src.mkdir()
    (src / "a.txt").write_text("a")
    assert call(filter_main, [], lines([event(src / "a.txt")])).status == 0
    assert mode(state_dir) == 0o700
    assert all(mode(p) == 0o600 for p in state_dir.iterdir()), {p.name: oct(mode(p)) for p in state_dir.iterdir()}


@pytest.mark.usefixtures("umask")
def test_an_old_world_readable_state_file_is_tightened_and_said_at_v(tmp_path: Path) -> None:
    state = tmp_path / "filter.db"
    _filter(state)
    con = sqlite3.connect(state)  # left open: its -wal and -shm stay
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS x(y)")
    for p in (state, Path(f"{state}-wal"), Path(f"{state}-shm"), Path(f"{state}.lock")):
        p.chmod(0o644)  # as an older version (and a umask of 022) left them
    try:
        err = _filter(state, "-v")
        for p in (state, Path(f"{state}-wal"), Path(f"{state}-shm"), Path(f"{state}.lock")):
            assert mode(p) == 0o600, p
    finally:
        con.close()
    assert "owner-only" in err and str(state) in err, err
    # said once: the next run finds nothing to tighten
    assert "owner-only" not in _filter(state, "-v")


@pytest.mark.usefixtures("umask")
def test_work_directories_are_owner_only(tmp_path: Path) -> None:
    src = tmp_path / "site"
    src.mkdir()
    (src / "a.css").write_text("p {  margin: 0 }\n")
    work = tmp_path / "work"
    root = work / "process.db.work"
    root.mkdir(parents=True, mode=0o755)
    root.chmod(0o755)  # as an older version could leave it
    argv = ["--chain", "minify.CSS", "--state", str(tmp_path / "process.db"), "--work-dir", str(work)]
    res = call(process_main, argv, lines([event(src / "a.css")]))
    assert res.status == 0, res.stderr
    assert mode(root) == 0o700
    (out,) = outputs(res)
    # a processed file waits for the transporter in a directory only we can enter (the file keeps the umask's
    # mode: a transporter that links or copies it with its mode must leave it readable by the web server)
    assert mode(os.path.dirname(out["file"])) == 0o700
    assert mode(tmp_path / "process.db") == 0o600


@pytest.mark.usefixtures("umask")
def test_the_log_is_owner_only_after_a_rotation_too(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "fileconveyor.log"
    log_file.parent.mkdir()
    (tmp_path / "logs" / "fileconveyor.log.1").write_text("old\n")
    (tmp_path / "logs" / "fileconveyor.log.1").chmod(0o644)  # written by an older version
    log = make_logger(log_file, logging.INFO, logging.ERROR, console=False)
    try:
        log.info("Synced: 'a.css'")
        assert mode(log_file) == 0o600 and mode(tmp_path / "logs" / "fileconveyor.log.1") == 0o600
        handler = log.handlers[0]
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        handler.doRollover()
        log.info("Synced: 'b.css'")
        assert log_file.read_text().endswith("Synced: 'b.css'\n")
        assert {p.name: mode(p) for p in log_file.parent.iterdir()} == {
            "fileconveyor.log": 0o600,
            "fileconveyor.log.1": 0o600,
            "fileconveyor.log.2": 0o600,
        }
    finally:
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)


def test_the_synced_files_database_keeps_the_umasks_mode(tmp_path: Path) -> None:
    from fileconveyor.records import Records

    old = os.umask(0o022)
    try:
        Records(tmp_path / "synced_files.db").close()
    finally:
        os.umask(old)
    assert mode(tmp_path / "synced_files.db") == 0o644  # the web server reads it (README, fc-record)


FTP = (
    '<servers><server name="cdn" transporter="ftp"><host>127.0.0.1</host><username>u</username>'
    "<password>hunter2</password><url>http://cdn/</url></server></servers>"
)


def _conveyor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-conveyor"), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o644])
def test_fc_conveyor_refuses_a_config_whose_password_others_can_read(tmp_path: Path, bits: int) -> None:
    cfg = write_config(tmp_path, SOURCES + FTP + RULES)
    cfg.chmod(bits)
    res = _conveyor("--check", str(cfg))
    assert res.returncode == 3, res.stderr
    assert f"chmod 600 {cfg}" in res.stderr and "hunter2" not in res.stderr, res.stderr
    cfg.chmod(0o600)
    res = _conveyor("--check", str(cfg))
    assert res.returncode == 0, res.stderr


def test_fc_conveyor_and_fc_transport_say_the_same(tmp_path: Path) -> None:
    from fileconveyor import private
    from fileconveyor.conveyor.config import ConfigError, load
    from fileconveyor.transporters.destination import read_config

    cfg = write_config(tmp_path, SOURCES + FTP + RULES)
    conf = tmp_path / "dest.conf"
    conf.write_text("to = ftp://u@127.0.0.1/\npassword = hunter2\n")
    for f in (cfg, conf):
        f.chmod(0o644)
    with pytest.raises(ConfigError) as conveyor:
        load(cfg)
    with pytest.raises(Exception) as transport:
        read_config(conf)
    assert conveyor.value.errors[0][1] == private.secret_problem(cfg, cfg.stat())
    assert str(transport.value) == private.secret_problem(conf, conf.stat())
    assert "chmod 600" in str(transport.value)


def _status(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | mode, 1, 1, 1, uid, 0, 10, 0, 0, 0))


def test_a_secret_file_another_user_owns_is_refused() -> None:
    """An owner-only file another user owns is theirs to rewrite: as root, a config owned by www-data would let
    whoever runs the web server pick the folders root deletes in and the servers it logs in to."""
    from fileconveyor import private

    me = os.geteuid()
    other = 4242 if me != 4242 else 4343
    assert private.secret_problem("c", _status(0o600, me)) is None
    assert private.secret_problem("c", _status(0o600, 0)) is None  # root's own files are trusted, as OpenSSH does
    problem = private.secret_problem("c", _status(0o600, other))
    assert problem is not None and f"belongs to another user (uid {other})" in problem and "run: chown" in problem
    assert "chmod 600" in (private.secret_problem("c", _status(0o640, me)) or "")


def test_fc_transport_and_the_broker_refuse_key_and_config_files_another_user_owns(tmp_path: Path) -> None:
    """The same files, end to end: fc-transport's --config and fc-publish's --key-file (root only: only root can
    give a file away)."""
    from fileconveyor.delivery import nats_auth
    from fileconveyor.errors import ConfigError
    from fileconveyor.transporters.destination import read_config

    conf = tmp_path / "dest.conf"
    conf.write_text("to = ftp://u@127.0.0.1/\npassword = hunter2\n")
    keys = tmp_path / "keys"
    keys.write_text("0123456789abcdef0123456789abcdef\n")
    for f in (conf, keys):
        f.chmod(0o600)
    assert read_config(conf)["password"] == "hunter2"
    assert nats_auth.load_keys(str(keys), env={}) is not None
    if os.geteuid() != 0:
        return  # the refusal itself is test_a_secret_file_another_user_owns_is_refused's
    for f in (conf, keys):
        os.chown(f, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to another user"):
        read_config(conf)
    with pytest.raises(ConfigError, match="belongs to another user"):
        nats_auth.load_keys(str(keys), env={})


def test_the_pid_file_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    """The PID file's temporary name is guessable (our pid): in a directory others can write, a symlink planted
    there made fc-conveyor (often root) truncate and overwrite the file it points to."""
    from fileconveyor.conveyor.pidfile import PidFile

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pid_file = tmp_path / "fc.pid"
    (tmp_path / f".fc.pid.{os.getpid()}").symlink_to(victim)
    PidFile(pid_file).write()
    assert victim.read_text() == "precious\n"
    assert pid_file.read_text() == f"{os.getpid()}\n" and not pid_file.is_symlink()
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600
    assert not (tmp_path / f".fc.pid.{os.getpid()}").exists()


@pytest.mark.parametrize("part", ["", "-wal"])
def test_a_state_file_another_user_made_first_is_refused(tmp_path: Path, part: str) -> None:
    """``--state /tmp/x.db``: in a directory others may write, another user can make the file (or its -wal) first,
    0666; it stayed theirs and was used, and they could then write its acks table: a row with seq and through
    999,999 (measured: written by uid 65534 after fc-filter had made its tables there), with which the writer
    forgets lines no reader has and fc-consume acknowledges to the broker messages nobody applied.  Now: exit 3."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)  # as /tmp
    state = shared / "f.db"
    planted = Path(f"{state}{part}")
    planted.write_bytes(b"")
    planted.chmod(0o666)
    if os.geteuid() == 0:
        os.chown(planted, 65534, 65534)  # another user's
    line = b'{"v":1,"kind":"created","source":"s","root":"/tmp","path":"/tmp/x.txt","rel":"x.txt"}\n'
    r = subprocess.run(
        [sys.executable, str(RELAY), "--state", str(state)],
        input=line,
        capture_output=True,
        timeout=60,
    )
    if os.geteuid() != 0:
        assert r.returncode == 0, r.stderr  # our own file: used, and made owner-only
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        return
    assert r.returncode == 3, r.stderr
    assert b"belongs to another user (uid 65534)" in r.stderr, r.stderr
    assert r.stdout == b""
    assert planted.stat().st_size == 0  # nothing of ours written into it


def _sticky_shared(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)  # as /tmp
    return shared


@pytest.mark.parametrize("part", ["-wal", "-shm"])
def test_a_hard_link_planted_at_a_state_files_wal_or_shm_is_never_written_through(tmp_path: Path, part: str) -> None:
    # A link at x.db-wal or -shm to a file elsewhere (another user's plant in /tmp, where fs.protected_hardlinks
    # is off or the file is one they may write): owned by us, it passed the owner check, and SQLite used it: its
    # wal-index went over the first bytes of the file linked at -shm, its frames into the one at -wal (measured:
    # a file of 140,000 bytes began with the WAL's magic number after one insert into a database in WAL mode).
    shared = _sticky_shared(tmp_path)
    outside = tmp_path / "precious"
    outside.write_bytes(b"precious data\n" * 1000)
    state = shared / "f.db"
    os.link(outside, f"{state}{part}")
    line = b'{"v":1,"kind":"created","source":"s","root":"/tmp","path":"/tmp/x.txt","rel":"x.txt"}\n'
    r = subprocess.run([sys.executable, str(RELAY), "--state", str(state)], input=line, capture_output=True, timeout=60)
    assert outside.read_bytes() == b"precious data\n" * 1000
    assert r.returncode == 3, r.stderr
    assert b"has 2 names (a hard link to it was made)" in r.stderr, r.stderr


def test_a_wal_another_user_makes_between_the_checks_and_sqlites_open_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The -wal and -shm were only checked when there: another user making x.db-wal in /tmp right after that look
    # and before SQLite opened it (which creates it if missing, without O_EXCL) had SQLite use their file, whose
    # frames they can rewrite (an acks row of theirs in our state).  Now they are ours before SQLite looks.
    if os.geteuid() != 0:
        unavailable("another user's file needs root (CI runs as root)")
    shared = _sticky_shared(tmp_path)
    state = shared / "f.db"
    wal = f"{state}-wal"
    real_connect = sqlite3.connect
    planted: list[int] = []

    def plant_then_connect(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not planted:
            planted.append(_make_as_nobody(shared, os.path.basename(wal)))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", plant_then_connect)
    from fileconveyor.state import State

    with State(state, ["CREATE TABLE t(a)"]) as st:
        monkeypatch.undo()
        with st.transaction() as db:
            db.execute("INSERT INTO t VALUES (1)")
        wal_st = os.stat(wal)
        assert (wal_st.st_uid, stat.S_IMODE(wal_st.st_mode)) == (0, 0o600), "SQLite writes into their file"
    assert planted == [errno.EEXIST]  # the name was ours already: theirs could not be made


def _make_as_nobody(directory: Path, name: str) -> int:
    """Create ``directory/name`` (0666) as user nobody in a child process: 0, or the errno that refused it."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)  # reached as root: nobody may not search pytest's dirs
    pid = os.fork()
    if pid == 0:  # the child only: setegid/seteuid would change the whole test process
        code = 0
        try:
            os.setegid(65534)
            os.seteuid(65534)
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dfd))
        except OSError as exc:
            code = exc.errno or 1
        os._exit(code)
    os.close(dfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_hard_link_planted_at_a_finished_writers_wal_gets_no_acknowledgement_written_through(
    tmp_path: Path,
) -> None:
    # A cron `fc-watch --scan-once | stage` in /tmp: fc-watch ends (its -wal removed), and the stage
    # acknowledges to its state file afterwards, opening it by name; a link planted at w.db-wal meanwhile had
    # the acknowledgement's WAL frames written over the file it named.
    shared = _sticky_shared(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("a")
    wstate = shared / "w.db"
    watch = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "fc-watch"), "--scan-once", "--state", str(wstate), str(site)],
        capture_output=True,
        timeout=60,
    )
    assert watch.returncode == 0 and watch.stdout.count(b"\n") == 1, watch.stderr
    # fc-watch may leave its -wal at its end (state.keep_wal_at_close: on Python 3.12+); any other connection to
    # the file that closes last checkpoints it and SQLite removes it: sqlite3's, say
    con = sqlite3.connect(wstate)
    con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    con.close()
    assert not os.path.exists(f"{wstate}-wal")
    outside = tmp_path / "precious"
    outside.write_bytes(b"precious data\n" * 1000)
    os.link(outside, f"{wstate}-wal")
    r, w = os.pipe()  # its writer gone before the stage starts: the epoch alone lets it acknowledge
    os.write(w, watch.stdout)
    os.close(w)
    with os.fdopen(r, "rb") as stdin:
        stage = subprocess.run(
            [sys.executable, str(RELAY), "--state", str(tmp_path / "f.db")], stdin=stdin, capture_output=True
        )
    assert outside.read_bytes() == b"precious data\n" * 1000
    assert stage.returncode == 0, stage.stderr
    assert b"w.db-wal has 2 names (a hard link to it was made)" in stage.stderr, stage.stderr
