"""fc-conveyor --role publisher|worker (docs/scale-out.md, "Running it with fc-conveyor"): one config.xml names
the broker (<BROKER>) and the shared record (<SYNCED_FILES_DB> as a postgresql:// URL); the storage host runs
fc-watch [| fc-filter] | fc-publish, each worker fc-consume | the rules' stages.  The plan, the printed units
(supervisord's parsed, systemd's verified by systemd-analyze), the configuration errors, and one run across a
real nats-server into a real PostgreSQL record."""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from fileconveyor.conveyor import config as C
from fileconveyor.conveyor import config_scale as S
from fileconveyor.conveyor import plan as P
from tests.conftest import ROOT, require_tool
from tests.conveyor.test_conveyor import wait_for
from tests.servers.nats import NatsServer, start_nats
from tests.servers.postgres import PASSWORD, PgServer, pg_server  # noqa: F401 - fixture

BIN = ROOT / "bin"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""))  # the record's password, and as a URL holds it


def make_config(tmp: Path, broker: str | None, record: str | None, *, two_rules: bool = True) -> Path:
    """Source 'site' with two rules (CSS processed, everything), source 'img' with one filtered rule."""
    site, img, cdn = tmp / "site", tmp / "img", tmp / "cdn"
    for d in (site / "css", img, cdn):
        d.mkdir(parents=True, exist_ok=True)
    all_rule = (
        '<rule for="site" label="all"><destinations><destination server="cdn" path="all" /></destinations></rule>'
    )
    settings = f"<PERSISTENT_DATA_DB>{tmp / 'state'}</PERSISTENT_DATA_DB><PID_FILE>{tmp / 'pid'}</PID_FILE>"
    if broker:
        settings += f"<BROKER>{broker}</BROKER><BROKER_PARTITIONS>4</BROKER_PARTITIONS>"
    if record:
        settings += f"<SYNCED_FILES_DB>{record}</SYNCED_FILES_DB>"
    cfg = tmp / "config.xml"
    cfg.write_text(
        f"""<config>
  <sources><source name="site" scanPath="{site}" /><source name="img" scanPath="{img}" /></sources>
  <servers>
    <server name="cdn" transporter="symlink_or_copy"><location>{cdn}</location><url>http://cdn/</url></server>
  </servers>
  <rules>
    <rule for="site" label="CSS"><filter><extensions>css</extensions></filter>
      <processorChain><processor name="unique_filename.MD5" /></processorChain>
      <destinations><destination server="cdn" path="css" /></destinations></rule>
    {all_rule if two_rules else ""}
    <rule for="img" label="images"><filter><extensions>png</extensions></filter>
      <destinations><destination server="cdn" path="img" /></destinations></rule>
  </rules>
  <settings>{settings}</settings>
</config>
"""
    )
    cfg.chmod(0o600)  # it may hold the record's password
    return cfg


def conveyor(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BIN / "fc-conveyor"), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def commands(plan: P.Plan) -> list[tuple[str, str]]:
    return [(p.name, p.command) for p in plan.procs]


def test_each_role_runs_its_side_of_the_broker(tmp_path: Path) -> None:
    record = f"postgresql://fc:{SECRETS[1]}@db.example/cdn"
    config = C.load(make_config(tmp_path, "nats://broker:4222/FC", record))
    assert config.settings.broker == "nats://broker:4222/FC" and config.settings.broker_partitions == 4
    assert config.settings.synced_files_db == record  # a URL as written, not folded into a Path

    pub = P.build(config, role=P.PUBLISHER)
    assert commands(pub) == [
        ("site-watch", "fc-watch"),
        ("site-publish", "fc-publish"),  # two rules: each filters on the workers
        ("img-watch", "fc-watch"),
        ("img-r1-filter", "fc-filter"),  # one rule: what it does not want never crosses the broker
        ("img-publish", "fc-publish"),
    ]
    publish = {p.name: p for p in pub.procs}["site-publish"]
    assert publish.args[:3] == ["--partitions", "4", "nats://broker:4222/FC-site"]
    assert pub.group == "fileconveyor-publisher" and not pub.record_used
    assert not any(p.env for p in pub.procs)  # no stage of the storage host touches the record

    work = P.build(config, role=P.WORKER, partitions="0-1")
    names = commands(work)
    assert names[:3] == [("site-consume", "fc-consume"), ("site-tee", "fc-tee"), ("site-r1-filter", "fc-filter")]
    assert ("img-consume", "fc-consume") in names and ("img-r1-filter", "fc-filter") not in names
    assert ("site-r2-record", "fc-record") in names and ("img-r1-record", "fc-record") in names
    consume = {p.name: p for p in work.procs}["img-consume"]
    assert consume.args[:3] == ["--partitions", "0-1", "nats://broker:4222/FC-img"]
    auto = {p.name: p for p in P.build(config, role=P.WORKER, partitions="auto").procs}["img-consume"]
    assert auto.args[:3] == ["--partitions", "auto", "nats://broker:4222/FC-img"]  # leases: each its share
    assert S.role_problem(config, "worker", "auto") is None and S.role_problem(config, "worker", "4") is not None
    for p in work.procs:
        assert not any(s in a for a in p.args for s in SECRETS), p.argv  # never on a command line (ps)
        if p.command == "fc-record":
            assert p.args[:2] == ["--db", "postgresql://fc@db.example/cdn"] and p.env == {"PGPASSWORD": PASSWORD}

    # the default is the one-machine plan, as before: no broker stage at all
    whole = P.build(config)
    assert not {"fc-publish", "fc-consume"} & {p.command for p in whole.procs}
    assert whole.group == "fileconveyor"
    assert ("site-r1-filter", "fc-filter") in commands(whole) and ("img-r1-filter", "fc-filter") in commands(whole)


def test_printed_units_per_role_load_and_hold_no_password(tmp_path: Path) -> None:
    record = f"postgresql://fc:{SECRETS[1]}@db.example/cdn"
    cfg = make_config(tmp_path, "nats://broker:4222/FC", record)
    analyze = require_tool("systemd-analyze", "fc-conveyor --systemd's units are verified with it")
    for role in ("publisher", "worker"):
        names = None
        for mode in ("--supervisord", "--systemd", "--print"):
            out = conveyor(mode, "--role", role, cfg)
            assert out.returncode == 0, out.stderr
            assert not any(s in out.stdout for s in SECRETS)
            if role == "worker":
                assert "PGPASSWORD" in out.stdout and "~/.pgpass" in out.stdout  # named, and where it belongs
            else:
                assert "PGPASSWORD" not in out.stdout and "fc-record" not in out.stdout
            if mode == "--supervisord":
                ini = configparser.RawConfigParser()
                ini.read_string(out.stdout)
                names = [s.removeprefix("program:") for s in ini.sections() if s.startswith("program:")]
                assert ini[f"group:fileconveyor-{role}"]["programs"].split(",") == names
                heads = [n for n in names if n.endswith("-publish" if role == "publisher" else "-consume")]
                assert len(heads) == 2
                for name in names:
                    env = ini[f"program:{name}"].get("environment", "")
                    # the stages that read or write the record: fc-record, and fc-transport (--record-db: a deletion
                    # removes only a name the record or its state knows was uploaded)
                    assert ("PGPASSWORD" in env) == name.endswith(("-record", "-transport"))
            elif mode == "--systemd":
                assert names
                units = tmp_path / f"units-{role}"
                units.mkdir()
                for part in out.stdout.split("\n# --- ")[1:]:
                    name, text = part.split(" ---\n", 1)
                    (units / name).write_text(text)
                assert sorted(u.name for u in units.glob("*.service")) == sorted(
                    f"fileconveyor-{role}-{n}.service" for n in names
                )
                check = subprocess.run(
                    [analyze, "verify", "--man=no", *sorted(map(str, units.iterdir()))],
                    capture_output=True,
                    timeout=60,
                )
                assert check.returncode == 0, check.stderr.decode()
            else:
                subprocess.run(["bash", "-n"], input=out.stdout, text=True, check=True)


def test_a_role_without_a_broker_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, None, None)
    for role in ("worker", "publisher"):
        out = conveyor("--print", "--role", role, cfg)
        assert out.returncode == 3 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and "<BROKER>" in out.stderr and f"--role {role}" in out.stderr
    assert conveyor("--print", cfg).returncode == 0  # one machine needs no broker
    assert conveyor("--print", "--partitions", "0", cfg).returncode == 2  # only a worker owns partitions

    # a misspelt element is named with the right one
    cfg.write_text(cfg.read_text().replace("</settings>", "<BROKR>nats://b/FC</BROKR></settings>"))
    out = conveyor("--print", "--role", "worker", cfg)
    assert out.returncode == 3 and "unknown setting <BROKR>; did you mean <BROKER>?" in out.stderr


@pytest.mark.parametrize(
    ("broker", "partitions", "says"),
    [
        ("nats://fc:hunter2@broker/F.C", None, "'nats://fc@broker/F.C': stream name"),
        ("nats://s3cr3t-token@broker:x/FC", None, "'nats://***@broker:x/FC': not a valid broker address"),
        ("http://fc:hunter2@broker/FC", None, "'http://fc@broker/FC': not a broker address"),
        ("http://broker/FC", None, "not a broker address"),
        ("nats://broker/F.C", None, "stream name"),
        ("nats://broker/FC", "7", "the stream has 4 partitions"),
    ],
)
def test_a_wrong_broker_is_refused_without_showing_its_secret(
    tmp_path: Path, broker: str, partitions: str | None, says: str
) -> None:
    cfg = make_config(tmp_path, broker, None)
    out = conveyor("--print", "--role", "worker", *(["--partitions", partitions] if partitions else []), cfg)
    assert out.returncode == 3 and says in out.stderr, out.stderr
    assert "hunter2" not in out.stderr and "s3cr3t" not in out.stderr


BROKER_PW = "nats-Pw:@/9"


@pytest.fixture
def nats_with_login(tmp_path: Path) -> Iterator[NatsServer]:
    """nats-server that takes only user fc with BROKER_PW."""
    config = f'jetstream {{ store_dir: STORE }}\nauthorization {{ user: fc, password: "{BROKER_PW}" }}\n'
    server = start_nats(tmp_path / "nats", config)
    yield server
    server.kill()


def test_publisher_and_worker_from_one_config_fill_the_shared_record(
    tmp_path: Path,
    nats_with_login: NatsServer,
    pg_server: PgServer,  # noqa: F811
) -> None:
    """Both roles from one config.xml (each with its own state directory and PID file, as on two hosts): files
    written into the sources reach the destination through nats-server, and the record in PostgreSQL names each;
    neither the record's password nor the broker's is in any process's command line."""
    import psycopg

    url = pg_server.url(pg_server.new_database("roles"))
    broker = nats_with_login.stream_url("FC").replace("nats://", f"nats://fc:{quote(BROKER_PW, safe='')}@")
    cfg = make_config(tmp_path, broker, url)
    site, img, cdn = tmp_path / "site", tmp_path / "img", tmp_path / "cdn"
    (site / "css" / "a.css").write_text("body { color: red }\n")
    (site / "index.html").write_text("<p>hi</p>\n")
    (img / "logo.png").write_bytes(b"\x89PNG....")
    (img / "notes.txt").write_text("not an image\n")  # the img rule's filter keeps it off the broker

    def start(role: str) -> subprocess.Popen[bytes]:
        d = tmp_path / role
        argv = ["--role", role, "--state-dir", d / "state", "--pid-file", d / "pid", "--log-file", d / "log", cfg]
        return subprocess.Popen(
            [sys.executable, str(BIN / "fc-conveyor"), *map(str, argv)],
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PGPASSWORD": "", "PGPASSFILE": "/nonexistent"},  # only the config's password
        )

    def rows() -> set[tuple[str, str]]:
        with psycopg.connect(url) as conn:
            try:
                found = conn.execute("SELECT input_file, server FROM synced_files").fetchall()
            except psycopg.errors.UndefinedTable:
                return set()
        return {(str(Path(f).relative_to(tmp_path)), s) for f, s in found}

    worker, publisher = start("worker"), start("publisher")
    try:
        want = {("site/css/a.css", "cdn"), ("site/index.html", "cdn"), ("img/logo.png", "cdn")}
        wait_for(lambda: rows() == want, 60, "the record's rows", tmp_path / "worker" / "log")
        assert (cdn / "all" / "index.html").read_text() == "<p>hi</p>\n"
        assert (cdn / "img" / "logo.png").read_bytes() == b"\x89PNG...."
        assert [p.name.startswith("a_") for p in (cdn / "css").rglob("*.css")] == [True]  # unique_filename.MD5
        assert not (cdn / "img" / "notes.txt").exists()
        # a file written while running crosses too
        (site / "late.txt").write_text("late\n")
        wait_for(lambda: ("site/late.txt", "cdn") in rows(), 30, "late.txt's row", tmp_path / "worker" / "log")
        # what runs: the worker's fc-record got the password in its environment, on no command line
        cmdlines = []
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(tmp_path) in cmd:
                cmdlines.append(cmd)
        assert any("fc-record" in c for c in cmdlines) and any("fc-publish" in c for c in cmdlines)
        assert not any(s in c for c in cmdlines for s in (*SECRETS, BROKER_PW, quote(BROKER_PW, safe="")))
        st = conveyor("--status", "--json", "--role", "worker", "--state-dir", tmp_path / "worker" / "state", cfg)
        status = json.loads(st.stdout)
        assert status["synced"]["synced"] == {"cdn": 4} and not any(s in st.stdout for s in SECRETS)
        texts = {
            role: conveyor("--status", "--role", role, "--state-dir", tmp_path / role / "state", cfg).stdout
            for role in ("worker", "publisher")
        }
        assert (
            "  site-consume " in texts["worker"]
            and "/roles_" in texts["worker"]
            and "4 synced file(s)" in texts["worker"]
        )
        assert "  img-publish " in texts["publisher"] and "synced" not in texts["publisher"]  # no record there
        assert all(line.split()[1] == "running" for line in texts["publisher"].splitlines()[1:])
    finally:
        for p in (publisher, worker):
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in (publisher, worker)]
    assert codes == [0, 0]


def test_the_record_url_on_one_machine_and_its_password_kept_private(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, None, None)
    # --db takes a URL as well as a file, as every stage's --db does (a Path would fold its '//')
    out = conveyor("--print", "--db", f"postgresql://fc:{SECRETS[1]}@db.example:5433/cdn", cfg)
    assert out.returncode == 0, out.stderr
    assert "--db postgresql://fc@db.example:5433/cdn " in out.stdout and not any(s in out.stdout for s in SECRETS)
    assert "--record-db" not in out.stdout or "--record-db postgresql://fc@db.example:5433/cdn" in out.stdout
    # a config holding the record's password is refused while other users can read it
    cfg = make_config(tmp_path, None, f"postgresql://fc:{SECRETS[1]}@db.example/cdn")
    cfg.chmod(0o644)
    out = conveyor("--print", cfg)
    assert out.returncode == 3 and "chmod 600" in out.stderr and not any(s in out.stderr for s in SECRETS)
    # two '@' (a password not percent-encoded): refused, none of it shown
    cfg = make_config(tmp_path, None, "postgresql://fc:p@ss@db.example/cdn")
    out = conveyor("--print", cfg)
    assert out.returncode == 3 and "<SYNCED_FILES_DB>" in out.stderr and "p@ss" not in out.stderr


def test_the_record_password_is_taken_out_of_the_url_in_either_place() -> None:
    from fileconveyor.conveyor.config_scale import split_password

    assert split_password("postgresql://fc@h/cdn?sslmode=require&password=x%40y") == (
        "postgresql://fc@h/cdn?sslmode=require",
        {"PGPASSWORD": "x@y"},
    )
    assert split_password("postgresql://fc:a%3Ab@h:5433/cdn") == ("postgresql://fc@h:5433/cdn", {"PGPASSWORD": "a:b"})
    assert split_password("postgresql://fc@h/cdn") == ("postgresql://fc@h/cdn", {})  # ~/.pgpass, PGPASSFILE
    assert split_password(Path("/srv/fc/synced_files.db")) == ("/srv/fc/synced_files.db", {})


def test_the_brokers_login_goes_by_environment_never_on_a_command_line(tmp_path: Path) -> None:
    """<BROKER> with a user and password (or a token): fc-publish and fc-consume get them as NATS_USER and
    NATS_PASSWORD (NATS_TOKEN) in their environment, the URL without them on their command line; the printed
    units name the variables; the files of <BROKER_KEY_FILE>, <BROKER_NKEY> are passed by name.  (It was refused:
    fc-publish and fc-consume took credentials only in the URL, on every command line.)"""
    secret = "hunter2:@/x"
    broker = f"nats://fc:{quote(secret, safe='')}@broker:4222/FC"
    cfg = make_config(tmp_path, broker, None)
    text = cfg.read_text().replace(
        "</settings>",
        f"<BROKER_KEY_FILE>{tmp_path / 'keys'}</BROKER_KEY_FILE><BROKER_NKEY>nk.seed</BROKER_NKEY></settings>",
    )
    cfg.write_text(text)
    config = C.load(cfg)
    for role in ("publisher", "worker"):
        heads = [p for p in P.build(config, role=role).procs if p.command in ("fc-publish", "fc-consume")]
        assert len(heads) == 2
        for p in heads:
            assert p.env == {"NATS_USER": "fc", "NATS_PASSWORD": secret}
            assert "nats://broker:4222/FC-" in " ".join(p.args) and not any("hunter2" in a for a in p.args)
            assert p.args[p.args.index("--key-file") + 1] == str(tmp_path / "keys")
            assert p.args[p.args.index("--nkey") + 1] == str(tmp_path / "nk.seed")
        for mode in ("--supervisord", "--systemd", "--print"):
            out = conveyor(mode, "--role", role, cfg)
            assert out.returncode == 0, out.stderr
            assert "hunter2" not in out.stdout and "NATS_PASSWORD" in out.stdout, out.stdout
    token = P.build(C.load(make_config(tmp_path, "nats://s3cr3t-tok@broker/FC", None)), role=P.WORKER).procs
    assert [p.env for p in token if p.command == "fc-consume"] == [{"NATS_TOKEN": "s3cr3t-tok"}] * 2
    # a config holding the broker's password is refused while other users can read it
    cfg.chmod(0o644)
    out = conveyor("--print", "--role", "worker", cfg)
    assert out.returncode == 3 and "chmod 600" in out.stderr and "hunter2" not in out.stderr
