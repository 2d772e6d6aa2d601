"""Scale-out chaos: the broker hop and whole workers under kill -9, against a real nats-server and PostgreSQL.

    storage:   fc-watch --output FIFO  ->  fc-publish --input FIFO nats://127.0.0.1:PORT/FC
    worker k:  fc-consume --partitions auto|2k,2k+1 -> fc-process (SpacesToUnderscores + cmd:sed)
               -> fc-transport --to file://DEST --record-db postgresql://... -> fc-record --db postgresql://...

Stages connected by named FIFOs, as under supervisord.  The source tree changes all the time (tests/durability/
chaos.py's Mutator: creations, modifications, renames, deletions), each write stamping the file with a version
larger than any before (``v=000000042`` on its first line).  Each round kills one process with SIGKILL (a kind
drawn first, then a worker: fc-consume, fc-process, fc-transport, fc-record, fc-publish, fc-watch or nats-server)
and starts it again.  With ``--partitions auto`` one worker is killed whole two thirds of the way and never
restarted: the time until the others hold all of its partitions' leases is measured.

At the end the changes stop, and the run checks:

- the destination equals the source as processed (names with ``_`` for spaces, ``a-f`` made upper case);
- the PostgreSQL record equals the destination: a row for each file with its URL, none for an absent file;
- per-path order: ``inotifywait`` sees each upload as it lands and its version is read at once; a version lower
  than one the name had before, or an upload after the name was deleted (a source path never comes back), is an
  order violation.  Reading later than the landing can only hide a violation, never invent one.

Used by bench/scale_chaos.py (``make scale-chaos``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from tests.broker.test_leases import owners
from tests.durability.chaos import Mutator, dest_tree, expected_name
from tests.durability.chaos_dupes import Dupes, Kill, Upload, UploadTrace, attribute
from tests.servers.nats import NatsServer
from tests.servers.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
WORKERS = 3
PARTITIONS = 2 * WORKERS
STAGES = ("consume", "process", "transport", "record")  # one worker's, in pipeline order
KINDS = ("nats", "watch", "publish", *STAGES)
LEASE = 4.0  # seconds: a killed fc-consume's leases stall its partitions at most this long
ACK_WAIT = 3.0
BASE_URL = "http://cdn.test/"
PROCESSOR = "cmd:sed -e y/abcdef/ABCDEF/ {in}"  # deterministic, and the version stamp survives it
_UPPER = bytes.maketrans(b"abcdef", b"ABCDEF")


def processed(data: bytes) -> bytes:
    return data.translate(_UPPER)


def version(head: bytes) -> int | None:
    return int(head[2:11]) if head[:2] == b"v=" and head[2:11].isdigit() else None


class VersionedMutator(Mutator):
    """The Mutator's changes, each write stamping its file with a version larger than any before; the rest is
    lines of lower-case hex (text, so sed keeps it byte for byte but for the case)."""

    def __init__(self, src: Path, rng: random.Random):
        super().__init__(src, rng)
        self.version = 0

    def _stamp(self) -> bytes:
        self.version += 1
        return b"v=%09d\n" % self.version

    def _line(self) -> bytes:
        return os.urandom(self.rng.randrange(1, 48)).hex().encode() + b"\n"

    def content(self) -> bytes:
        return self._stamp() + b"".join(self._line() for _ in range(self.rng.randrange(1, 40)))

    def modify(self, f: Path) -> None:
        with f.open("r+b") as fh:  # the stamp first: a reader in between sees the new version, the old body
            fh.write(self._stamp())
            fh.seek(0, os.SEEK_END)
            fh.write(self._line())


@dataclass
class Report:
    mode: str = "auto"
    rounds: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    files: int = 0
    lost: list[str] = field(default_factory=list)  # in the source, not at the destination
    extra: list[str] = field(default_factory=list)  # at the destination, not in the source
    wrong: list[str] = field(default_factory=list)  # at both, other content than the source as processed
    record_wrong: list[str] = field(default_factory=list)  # a file without its row, a row without its file or URL
    older: list[str] = field(default_factory=list)  # an upload of a lower version than the name had
    resurrected: list[str] = field(default_factory=list)  # an upload after the name's deletion
    uploads: int = 0
    dupes: Dupes = field(default_factory=Dupes)  # uploads of the bytes the name already had, per kills between
    leases_lost: int = 0  # "lease lost" warnings: a live fc-consume stopped pulling a partition it held
    takeover: float | None = None  # seconds from a worker's death to its partitions all owned by the others
    converge_seconds: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        bad = self.lost or self.extra or self.wrong or self.record_wrong or self.older or self.resurrected
        return not bad and (self.mode != "auto" or self.takeover is not None)

    def summary(self) -> str:
        kills = ", ".join(f"{k} {self.kills[k]}" for k in KINDS if self.kills[k])
        took = f"{self.takeover:.2f}s (bound lease + lease/3 = {LEASE * 4 / 3:.2f}s)" if self.takeover else "-"
        return (
            f"{self.rounds} rounds, {WORKERS} workers, {PARTITIONS} partitions ({self.mode}); kills: {kills}; "
            f"files at the end {self.files}; lost {len(self.lost)}; extra {len(self.extra)}; wrong {len(self.wrong)}; "
            f"record wrong {len(self.record_wrong)}; order violations {len(self.older) + len(self.resurrected)} "
            f"(older version {len(self.older)}, after deletion {len(self.resurrected)}); {self.duplicates()}; "
            f"leases lost by live workers {self.leases_lost}; takeover {took}; "
            f"converged {self.converge_seconds:.1f}s after the last restart; {self.seconds:.0f}s in all"
        )

    def duplicates(self) -> str:
        """Uploads of the bytes a name already had, told apart by the kills between the two: none, one kind (which),
        or several (two uploads of a name far apart)."""
        d = self.dupes
        none = d.of("no kill")
        single = Counter({k: d.of(k) for k, _ in d.by_kill if k != "no kill" and "+" not in k})
        several = d.total - none - sum(single.values())
        kinds = ", ".join(f"{k} {n}" for k, n in single.most_common())
        return (
            f"uploads {d.uploads}, duplicate uploads {d.total} (at most {max(d.per_name.values(), default=0)} "
            f"of one name; no kill between {none}; one kind of kill between {sum(single.values())}"
            + (f": {kinds}" if kinds else "")
            + f"; several kinds between {several})"
        )


class Cluster:
    def __init__(self, work: Path, db_url: str, mode: str):
        self.work, self.db_url, self.mode = work, db_url, mode
        self.src, self.dest, self.state = work / "src", work / "dest", work / "state"
        for d in (self.src, self.dest, self.state):
            d.mkdir(parents=True, exist_ok=True)
        store = work / "nats-store"
        store.mkdir(exist_ok=True)
        port = free_port()
        argv = ["nats-server", "-js", "-sd", str(store), "-p", str(port), "-a", "127.0.0.1"]
        self.nats = NatsServer(ServerProcess("nats-server", argv, port, work / "nats-server.log"), store)
        self.url = self.nats.stream_url("FC")
        names = ["watch"] + [f"{s}{k}" for k in range(WORKERS) for s in STAGES[:-1]]
        self.fifos = {n: work / f"{n}.fifo" for n in names}  # each process's output, read by the next one
        for f in self.fifos.values():
            if not f.exists():
                os.mkfifo(f)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.dead: set[int] = set()  # workers killed for good

    def names(self) -> list[str]:
        workers = [f"{s}{k}" for k in range(WORKERS) if k not in self.dead for s in STAGES]
        return ["watch", "publish", *workers]

    def command(self, name: str) -> list[str]:
        st, ff = self.state, self.fifos
        fc = [sys.executable, str(BIN / f"fc-{name.rstrip('0123456789')}"), "-q", "--state", f"{st}/{name}.db"]
        if name.startswith("consume"):
            fc.remove("-q")  # its warnings say when a live worker lost a lease (counted at the end)
        if name == "watch":
            return [*fc, "--settle", "0.05", "--output", str(ff["watch"]), str(self.src)]
        if name == "publish":
            return [*fc, "--partitions", str(PARTITIONS), "--timeout", "2", "--input", str(ff["watch"]), self.url]
        k = int(name[-1])
        stage = name[:-1]
        prev = str(ff[f"{STAGES[STAGES.index(stage) - 1]}{k}"]) if stage != "consume" else ""
        if stage == "consume":
            share = ["auto", "--lease", str(LEASE)] if self.mode == "auto" else [f"{2 * k},{2 * k + 1}"]
            return [*fc, "--partitions", *share, "--ack-wait", str(ACK_WAIT), "--output", str(ff[name]), self.url]
        if stage == "process":
            return [*fc, "--chain", "filename.SpacesToUnderscores", "--processor", PROCESSOR, "--jobs", "2",
                    "--input", prev, "--output", str(ff[name])]  # fmt: skip
        if stage == "transport":
            # --record-db: a deletion of a file another worker uploaded goes by the name the shared record holds
            return [*fc, "--to", f"file://{self.dest}", "--url", BASE_URL, "--record-db", self.db_url,
                    "--input", prev, "--output", str(ff[name])]  # fmt: skip
        return [*fc, "--db", self.db_url, "--input", prev, "--output", str(self.work / f"{name}.out")]

    def start(self, name: str) -> None:
        if name == "nats":
            self.nats.start()
            return
        with (self.work / f"{name}.err").open("ab") as log:
            self.procs[name] = subprocess.Popen(self.command(name), stderr=log, stdin=subprocess.DEVNULL)

    def kill(self, name: str) -> None:
        if name == "nats":
            self.nats.kill()
            return
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()

    def start_all(self) -> None:
        self.start("nats")
        for name in self.names():
            self.start(name)

    def stop_all(self) -> None:
        for name in self.procs:
            self.kill(name)
        self.nats.kill()

    def restart_exited(self, say: Callable[[str], None]) -> None:  # one that ended on its own: supervisord restarts it
        for name in self.names():
            p = self.procs[name]
            if p.poll() is not None:
                say(f"{name} had exited ({p.returncode}): started again")
                self.start(name)

    def taken_over(self) -> bool:
        """Every partition leased by a live worker's fc-consume (worker ids carry the pid)."""
        live = {f"-{self.procs[f'consume{k}'].pid}-" for k in range(WORKERS) if k not in self.dead}
        held = owners(self.nats)
        return len(held) == PARTITIONS and all(any(pid in w for pid in live) for w in held.values())


def expected(src: Path) -> dict[str, bytes]:
    out = {}
    for p in src.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            out[expected_name(p.relative_to(src).as_posix())] = processed(p.read_bytes())
    return out


def record_mismatches(db_url: str, src: Path, got: dict[str, bytes]) -> list[str]:
    """Rows and files that disagree: a file without a row, a row for no file, a row whose URL is not where its
    source file goes."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT input_file, url FROM synced_files").fetchall()
    bad, named = [], set()
    for input_file, url in rows:
        name = unquote(url.removeprefix(BASE_URL)) if url and url.startswith(BASE_URL) else None
        rel = os.path.relpath(input_file, src)
        if name is None or name != expected_name(rel):
            bad.append(f"row {input_file}: url {url}")
        elif name not in got:
            bad.append(f"row for absent {name}")
        named.add(name)
    bad += [f"no row for {name}" for name in sorted(set(got) - named)]
    return bad


def check_order(uploads: list[Upload], report: Report) -> None:
    """Each name's versions, as they landed, never go down; nothing lands after the name was deleted."""
    last: dict[str, int | None] = {}  # name -> highest version landed
    deleted: set[str] = set()
    for up in sorted(uploads, key=lambda u: u.at):
        if up.digest is None:
            deleted.add(up.name)
            last.pop(up.name, None)
            continue
        if up.name in deleted:
            report.resurrected.append(up.name)
        v = version(up.head)
        prev = last.get(up.name)
        if v is not None and prev is not None and v < prev:
            report.older.append(f"{up.name}: v{v} after v{prev}")
        last[up.name] = v if prev is None else prev if v is None else max(v, prev)


def run(
    work: Path,
    db_url: str,
    rounds: int,
    files: int,
    seed: int = 1,
    mode: str = "auto",
    converge_timeout: float = 300.0,
    say=lambda text: None,
) -> Report:
    started = time.monotonic()
    rng = random.Random(seed)
    c = Cluster(work, db_url, mode)
    mut = VersionedMutator(c.src, rng)
    mut.populate(files)
    for d in c.src.iterdir():  # made now, so that no upload lands before its directory is watched
        if d.is_dir():
            (c.dest / d.name).mkdir(exist_ok=True)
            for sub in d.iterdir():
                if sub.is_dir():
                    (c.dest / d.name / sub.name).mkdir(exist_ok=True)
    report = Report(mode=mode)
    tracer = UploadTrace(c.dest)
    kills: list[Kill] = []
    c.start_all()
    doomed = rounds * 2 // 3 if mode == "auto" else -1  # the round whose end kills a worker for good

    def mutate(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for _ in range(5):
                mut.step()
            time.sleep(0.02)

    try:
        for rnd in range(rounds):
            mutate(rng.uniform(0.3, 1.5))
            kind = rng.choice(KINDS)
            victim = (
                kind
                if kind in ("nats", "watch", "publish")
                else f"{kind}{rng.choice(sorted({*range(WORKERS)} - c.dead))}"
            )
            report.kills[kind] += 1
            c.kill(victim)
            kills.append(Kill(time.monotonic(), (kind,)))
            time.sleep(rng.uniform(0.0, 0.5))
            c.start(victim)
            say(f"round {rnd + 1}: killed {victim}")
            report.rounds = rnd + 1
            if rnd == doomed:
                kills.append(Kill(time.monotonic(), ("worker",)))
                report.takeover = takeover(c, mutate, say)
        c.restart_exited(say)
        last = time.monotonic()
        want = expected(c.src)
        report.files = len(want)
        told = last
        while True:
            got, _ = dest_tree(c.dest)
            record = record_mismatches(db_url, c.src, got) if got == want else []
            if got == want and not record:
                break
            if time.monotonic() - last > converge_timeout:
                break
            if time.monotonic() - told > 10:  # what a slow convergence waits for
                told = time.monotonic()
                missing = [k for k in want if got.get(k) != want[k]]
                say(f"{told - last:.0f}s: waiting for {len(missing)} file(s) ({missing[:3]}), "
                    f"{len(set(got) - set(want))} extra, {len(record)} record mismatch(es) {record[:3]}")  # fmt: skip
            c.restart_exited(say)
            time.sleep(0.5)
        report.converge_seconds = time.monotonic() - last
        time.sleep(0.5)  # the last inotify events
    finally:
        c.stop_all()
        uploads = tracer.stop()
    report.lost = sorted(k for k in want if k not in got)
    report.extra = sorted(k for k in got if k not in want)
    report.wrong = sorted(k for k in want if k in got and got[k] != want[k])
    report.record_wrong = record_mismatches(db_url, c.src, got)
    check_order(uploads, report)
    report.dupes = attribute(uploads, kills, len(KINDS) + 1)
    for k in range(WORKERS):
        err = work / f"consume{k}.err"
        report.leases_lost += err.read_bytes().count(b": lease lost") if err.exists() else 0
    report.seconds = time.monotonic() - started
    return report


def takeover(c: Cluster, mutate: Callable[[float], None], say: Callable[[str], None]) -> float | None:
    """Kill the last live worker whole, for good, and time until the others lease all its partitions (the
    source keeps changing meanwhile)."""
    k = max({*range(WORKERS)} - c.dead)
    for stage in STAGES:
        c.kill(f"{stage}{k}")
    c.dead.add(k)
    died = time.monotonic()
    deadline = died + 6 * LEASE
    while time.monotonic() < deadline:
        try:
            if c.taken_over():
                took = time.monotonic() - died
                say(f"worker {k} killed for good: its partitions taken over in {took:.2f}s")
                return took
        except Exception as exc:  # the server busy or restarting: look again
            say(f"lease look-up failed: {exc!r}")
        mutate(0.1)
    say(f"worker {k} killed for good: its partitions NOT taken over within {6 * LEASE:.0f}s")
    return None
