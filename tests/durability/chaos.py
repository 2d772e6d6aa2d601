"""Chaos: stages connected by named FIFOs as under supervisord, a source tree changing all the time, and stages
killed with -9 (one, or all at once) and restarted, round after round.  Then the changes stop and every
destination and the record database must converge to exactly what the source tree says.

Two topologies:

- ``pipeline``: one rule, every stage::

      fc-watch -> fc-filter -> fc-process -> fc-transport (file://) -> fc-record

- ``conveyor``: the processes fc-conveyor runs for a config.xml (built by its own plan, conveyor/plan.py, so the
  command lines are the ones it and its --supervisord config use): one source fanned out by fc-tee to two rules::

      fc-watch -> fc-tee -+-> fc-filter (css) -> fc-process -> fc-transport -> fc-record   (rule 'css')
                          +-> fc-transport -> fc-record                                     (rule 'all')

  the 'css' rule takes only the .css files, renamed and compressed by its chain (filename.SpacesToUnderscores,
  then ``cmd:gzip -n -c {in}``: its content changes, so it is sent from fc-process's work directory) through
  symlink_or_copy (a copy then, with --skip-unchanged); at the end each must decompress to its source's bytes.
  The 'all' rule takes every file, sent by symlink_or_copy's class under a third-party name, which copies (the
  original's symlinks would show the source's content whatever was sent: a lost change would go unseen).  Both
  fc-records write the one synced-files database.

Used by tests/durability/test_chaos.py (short runs in `make test`) and by `make chaos` (bench/chaos.py: as many
rounds as asked, figures printed).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from tests.durability.chaos_dupes import Dupes, Kill, UploadTrace, attribute, pending

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
STAGES = ("watch", "filter", "process", "transport", "record")  # the pipeline topology's
TOPOLOGIES = ("pipeline", "conveyor")
URL = "http://cdn.test/"


@dataclass
class BranchResult:
    files: int = 0
    lost: list[str] = field(default_factory=list)  # in the source, not (or not right) at the destination
    extra: list[str] = field(default_factory=list)  # at the destination, gone from the source
    record_wrong: list[str] = field(default_factory=list)  # record database disagrees with the destination


@dataclass
class Report:
    topology: str = "pipeline"
    rounds: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    files: int = 0
    lost: list[str] = field(default_factory=list)  # every branch's, each name under its branch's directory
    extra: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # temporary upload files left at a destination
    record_wrong: list[str] = field(default_factory=list)
    branches: dict[str, BranchResult] = field(default_factory=dict)  # per rule ('' for the pipeline's one)
    uploads: Counter[str] = field(default_factory=Counter)  # per file, from fc-record's output
    rewritten: int = 0  # fc-record output lines written again (same hop.seq): not uploads
    dupes: Dupes | None = None  # duplicate uploads seen at the destination, per kill kind (trace=True)
    converge_seconds: float = 0.0
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.extra or self.record_wrong)

    def summary(self) -> str:
        per_file = sorted(self.uploads.values()) or [0]
        dup = sum(n - 1 for n in self.uploads.values() if n > 1)
        per_branch = "; ".join(
            f"rule {label!r}: files {b.files}, lost {len(b.lost)}, extra {len(b.extra)}, "
            f"record wrong {len(b.record_wrong)}"
            for label, b in self.branches.items()
            if label
        )
        return (
            f"{self.topology}: rounds {self.rounds}; kills {dict(self.kills)}; files at the end {self.files}; "
            f"lost {len(self.lost)}; extra {len(self.extra)}; record wrong {len(self.record_wrong)}; "
            + (f"({per_branch}); " if per_branch else "")
            + f"temp leftovers {len(self.leftovers)}; uploads per file: median {per_file[len(per_file) // 2]}, "
            f"max {per_file[-1]}, re-uploads of a path (new content included) {dup}; "
            f"converged {self.converge_seconds:.1f}s after the last restart"
            + (f"; record lines re-written {self.rewritten}" if self.rewritten else "")
            + (f"\ntraced: {self.dupes.summary()}" if self.dupes is not None else "")
        )


@dataclass(frozen=True)
class Branch:
    """One rule's end: where its files land, what it takes of the source and under which names."""

    label: str  # '' for the pipeline's one rule; else also its directory under the destination root
    dest: Path
    url: str  # what fc-record's URLs of this rule start with
    out: Path  # its fc-record's output lines
    takes: Callable[[str], bool]  # which source files (relative paths) the rule syncs
    name: Callable[[str], str]  # a source file's name at the destination (the chain's renames)
    decode: Callable[[bytes], bytes] = bytes  # what arrived -> the source bytes it must come from (the chain undone)

    def traced(self, rel: str) -> str:
        """A source file's name as the upload trace sees it (relative to the destination root)."""
        return f"{self.label}/{self.name(rel)}" if self.label else self.name(rel)


def expected_name(rel: str) -> str:
    """Where a source file must end up: filename.SpacesToUnderscores changes base names only."""
    d, _, base = rel.rpartition("/")
    return (d + "/" if d else "") + base.replace(" ", "_")


class Stages:
    """A topology's processes: started, killed -9, restarted, by name."""

    def __init__(self, work: Path):
        self.work = work
        self.src = work / "src"
        self.dest = work / "dest"  # every branch's destination is this or beneath it (one upload trace)
        self.state = work / "state"
        for d in (self.src, self.dest, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.db = work / "synced_files.db"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: Counter[str] = Counter()
        self.stages: tuple[str, ...] = ()  # in start order
        self.branches: list[Branch] = []
        self.inboxes: dict[str, Branch] = {}  # stages that keep an inbox -> the branch they feed

    def argv(self, stage: str, first: bool) -> list[str]:
        raise NotImplementedError

    def stdout(self, stage: str) -> Path | None:
        return None

    def start(self, stage: str) -> None:
        log = (self.work / f"{stage}.err").open("ab")
        out_path = self.stdout(stage)
        out = out_path.open("ab") if out_path is not None else subprocess.DEVNULL
        try:
            argv = self.argv(stage, first=self.started[stage] == 0)
            self.procs[stage] = subprocess.Popen(argv, stderr=log, stdout=out, stdin=subprocess.DEVNULL)
        finally:
            log.close()
            if out_path is not None:
                out.close()  # type: ignore[union-attr]
        self.started[stage] += 1

    def kill(self, stage: str) -> None:
        p = self.procs[stage]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()

    def start_all(self) -> None:
        for stage in self.stages:
            self.start(stage)

    def stop_all(self) -> None:
        for stage in self.procs:
            self.kill(stage)

    def dead(self) -> list[str]:
        return [f"{s} (exit {p.returncode})" for s, p in self.procs.items() if p.poll() is not None]


class Pipeline(Stages):
    """fc-watch -> fc-filter -> fc-process -> fc-transport -> fc-record, one FIFO between each two."""

    def __init__(self, work: Path):
        super().__init__(work)
        self.fifos = {name: work / f"{name}.fifo" for name in ("w2f", "f2p", "p2t", "t2r")}
        for f in self.fifos.values():
            if not f.exists():
                os.mkfifo(f)
        self.out = work / "record-out.ndjson"
        self.stages = STAGES
        branch = Branch("", self.dest, URL, self.out, lambda rel: True, expected_name)
        self.branches = [branch]
        self.inboxes = {"process": branch, "transport": branch}

    def argv(self, stage: str, first: bool) -> list[str]:
        py, st, ff = sys.executable, self.state, self.fifos
        common = [py, str(BIN / f"fc-{stage}"), "-q", "--state", f"{st}/{stage}.db"]
        if stage == "watch":
            return [*common, "--settle", "0.05", "--output", str(ff["w2f"]), str(self.src)]
        if stage == "filter":
            return [*common, "--ignore-dirs", "skip", "--input", str(ff["w2f"]), "--output", str(ff["f2p"])]
        if stage == "process":
            chain = ["--chain", "filename.SpacesToUnderscores", "--jobs", "2"]
            return [*common, *chain, "--input", str(ff["f2p"]), "--output", str(ff["p2t"])]
        if stage == "transport":
            to = ["--to", f"file://{self.dest}", "--url", URL]
            return [*common, *to, "--input", str(ff["p2t"]), "--output", str(ff["t2r"])]
        return [*common, "--db", str(self.db), "--input", str(ff["t2r"]), "--output", str(self.out)]


CONFIG = """<config>
  <sources ignoredDirs="skip"><source name="site" scanPath="{src}" /></sources>
  <servers>
    <server name="cdn" transporter="symlink_or_copy"><location>{dest}</location><url>{url}</url></server>
    <server name="copy" transporter="fileconveyor.transporters.local:SymlinkOrCopy">
      <to>file://{dest}</to><url>{url}</url></server>
  </servers>
  <rules>
    <rule for="site" label="css"><filter><extensions>css</extensions></filter>
      <processorChain><processor name="filename.SpacesToUnderscores" /><processor name="cmd:gzip -n -c {{in}}" />
      </processorChain>
      <destinations><destination server="cdn" path="css" /></destinations></rule>
    <rule for="site" label="all"><destinations><destination server="copy" path="all" /></destinations></rule>
  </rules>
  <settings>
    <PERSISTENT_DATA_DB>{state}</PERSISTENT_DATA_DB><SYNCED_FILES_DB>{db}</SYNCED_FILES_DB>
    <PID_FILE>{work}/fc-conveyor.pid</PID_FILE>
  </settings>
</config>
"""


class Conveyor(Stages):
    """The processes fc-conveyor runs for CONFIG, from its own plan: one fc-watch, fc-tee, two rules."""

    def __init__(self, work: Path):
        super().__init__(work)
        from fileconveyor.conveyor import config, plan

        cfg = work / "config.xml"
        cfg.write_text(CONFIG.format(src=self.src, dest=self.dest, url=URL, state=self.state, db=self.db, work=work))
        self.plan = plan.build(config.load(cfg))
        self.plan.fifo_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for f in self.plan.fifos:
            if not f.exists():
                os.mkfifo(f, 0o600)
        self.by_name = {p.name: p for p in self.plan.procs}
        self.stages = tuple(p.name for p in self.plan.start_order())  # readers first, as fc-conveyor
        rules = {r.label: i for i, r in enumerate(self.plan.config.rules, start=1)}
        css, every = (f"site-r{rules[label]}" for label in ("css", "all"))
        self.branches = [
            Branch("css", self.dest / "css", URL + "css/", work / f"{css}-record.out", _is_css, expected_name, _gunzip),
            Branch("all", self.dest / "all", URL + "all/", work / f"{every}-record.out", lambda rel: True, str),
        ]
        self.inboxes = {
            f"{css}-process": self.branches[0],
            f"{css}-transport": self.branches[0],
            f"{every}-transport": self.branches[1],
        }
        assert set(self.inboxes) < set(self.stages), self.stages
        assert {"site-watch", "site-tee", f"{css}-filter", f"{css}-record", f"{every}-record"} < set(self.stages)

    def argv(self, stage: str, first: bool) -> list[str]:
        """As fc-conveyor's supervisor starts it (conveyor/supervisor.py): first_args at the first start only."""
        p = self.by_name[stage]
        assert not p.env, "no secrets in this config"
        return [sys.executable, str(BIN / p.command), *p.argv[1:], *(p.first_args if first else [])]

    def stdout(self, stage: str) -> Path | None:
        return self.work / f"{stage}.out" if self.by_name[stage].last else None


def _is_css(rel: str) -> bool:
    return rel.lower().endswith(".css")


def _gunzip(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return b"\0not gzip: " + data  # never a source's bytes: the file is wrong


TOPOLOGY = {"pipeline": Pipeline, "conveyor": Conveyor}


class Mutator:
    """Changes the source tree: creates, modifies, renames and deletes files."""

    NAMES = ("a", "b c", "déjà vu", "x-1", "y_2", "z z z")

    def __init__(self, src: Path, rng: random.Random, exts: tuple[str, ...] = (".txt",)):
        self.src = src
        self.rng = rng
        self.n = 0
        self.exts = exts

    def populate(self, count: int) -> None:
        for _ in range(count):
            self.create()

    def _files(self) -> list[Path]:
        return [p for p in self.src.rglob("*") if p.is_file()]

    def create(self) -> None:
        self.n += 1
        d = self.src / f"d{self.rng.randrange(12)}"
        if self.rng.random() < 0.1:
            d = d / "skip"  # ignored (fc-filter, or fc-watch's ignoredDirs): must never arrive
        d.mkdir(parents=True, exist_ok=True)
        ext = self.exts[0] if len(self.exts) == 1 else self.rng.choice(self.exts)
        name = f"{self.rng.choice(self.NAMES)} {self.n}{ext}"
        tmp = d / f".{name}.part"
        tmp.write_bytes(self.content())
        tmp.rename(d / name)

    def content(self) -> bytes:
        """A new file's bytes (bench/scale_chaos.py's VersionedMutator stamps a version in them)."""
        return os.urandom(self.rng.randrange(1, 4096))

    def modify(self, f: Path) -> None:
        with f.open("ab") as fh:
            fh.write(os.urandom(self.rng.randrange(1, 512)))

    def step(self) -> None:
        files = self._files()
        op = self.rng.random()
        if not files or op < 0.4:
            self.create()
            return
        f = self.rng.choice(files)
        try:
            if op < 0.65:
                self.modify(f)
            elif op < 0.85:
                f.rename(f.with_name(f"moved {self.n} {f.name}"))
                self.n += 1
            else:
                f.unlink()
        except FileNotFoundError:
            pass


def expected_tree(src: Path, takes: Callable[[str], bool] = lambda rel: True, name=expected_name) -> dict[str, bytes]:
    out = {}
    for p in src.rglob("*"):
        rel = p.relative_to(src).as_posix()
        if p.is_file() and "/skip/" not in f"/{rel}" and not p.name.startswith(".") and takes(rel):
            out[name(rel)] = p.read_bytes()
    return out


def dest_tree(dest: Path, decode: Callable[[bytes], bytes] = bytes) -> tuple[dict[str, bytes], list[str]]:
    """What a destination holds: name -> content (through ``decode``), and temporary upload files.  A symlink
    (symlink_or_copy links a source's file) holds its target's bytes; a dangling one is there, and wrong."""
    files, temps = {}, []
    for p in dest.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(dest).as_posix()
        if ".fc-tmp" in p.name or p.name.startswith(".fc-"):
            temps.append(rel)
            continue
        try:
            files[rel] = decode(p.read_bytes())
        except OSError as exc:
            files[rel] = f"\0unreadable: {exc}".encode()  # never a source's bytes
    return files, temps


def record_view(db: Path, url: str = URL) -> set[str]:
    """The names fc-record holds under ``url`` (one rule's), relative to it."""
    if not db.exists():
        return set()
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT url FROM synced_files").fetchall()
    finally:
        conn.close()
    return {unquote(u.removeprefix(url)) for (u,) in rows if u.startswith(url)}


def run(
    work: Path,
    rounds: int,
    files: int,
    seed: int = 1,
    converge_timeout: float = 120.0,
    say=lambda text: None,
    trace: bool = False,
    topology: str = "pipeline",
    kill_all_in: frozenset[int] = frozenset(),
) -> Report:
    """``trace``: watch the destination (inotifywait) and charge each duplicate upload to the kills before it
    (chaos_dupes.py).  ``kill_all_in``: rounds (from 0) that kill every stage whatever the draw, so that a short
    run is sure to have killed each one (the draws follow the mutator's, which follow the clock)."""
    rng = random.Random(seed)
    pipe = TOPOLOGY[topology](work)
    # the conveyor's 'css' rule takes about half the files; the pipeline's draws are as they always were
    mut = Mutator(pipe.src, rng, (".txt", ".css") if topology == "conveyor" else (".txt",))
    mut.populate(files)
    report = Report(topology)
    tracer, kills = None, []
    if trace:
        for d in pipe.src.iterdir():  # made now, so that no upload lands before its directory is watched
            if d.is_dir():
                for b in pipe.branches:
                    (b.dest / d.name).mkdir(parents=True, exist_ok=True)
        tracer = UploadTrace(pipe.dest)
    pipe.start_all()
    started = last_restart = time.monotonic()
    kill_log = (work / "kills.log").open("a")  # when each round killed what: the evidence when a run loses files
    try:
        for r in range(rounds):
            t_end = time.monotonic() + rng.uniform(0.1, 0.8)
            while time.monotonic() < t_end:
                mut.step()
                time.sleep(rng.uniform(0.0, 0.02))
            victims = list(pipe.stages) if rng.random() < 0.1 else [rng.choice(pipe.stages)]
            if r in kill_all_in:
                victims = list(pipe.stages)
            for v in victims:
                pipe.kill(v)
                report.kills[v] += 1
            kill_log.write(f"{time.monotonic() - started:.2f} round {r}: {' '.join(victims)}\n")
            kill_log.flush()
            if tracer is not None:
                held = set()
                for v in victims:
                    if v in pipe.inboxes:
                        held |= pending(pipe.state / f"{v}.db", pipe.inboxes[v].traced)
                kills.append(Kill(time.monotonic(), tuple(victims), held))
            time.sleep(rng.uniform(0.0, 0.3))
            for v in victims:
                pipe.start(v)
            last_restart = time.monotonic()
            report.rounds = r + 1
            if r % 10 == 9:
                say(f"round {r + 1}/{rounds}: kills so far {dict(report.kills)}")
        # the changes stop; everything must arrive
        wants = {b.label: expected_tree(pipe.src, b.takes, b.name) for b in pipe.branches}
        deadline = time.monotonic() + converge_timeout
        while True:
            results = {b.label: check_branch(b, wants[b.label], pipe.db) for b in pipe.branches}
            if not any(res.lost or res.extra or res.record_wrong for res, _ in results.values()):
                report.converge_seconds = time.monotonic() - last_restart
                break
            if time.monotonic() > deadline:
                report.converge_seconds = float("inf")
                break
            dead = pipe.dead()
            if dead:
                for s in list(pipe.procs):
                    if pipe.procs[s].poll() is not None:
                        say(f"{s} exited ({pipe.procs[s].returncode}); restarting it")
                        pipe.start(s)
            time.sleep(0.25)
        for label, (res, temps) in results.items():
            report.branches[label] = res

            def under(names: list[str], label: str = label) -> list[str]:
                return [f"{label}/{n}" for n in names] if label else list(names)

            report.files += res.files
            report.lost += under(res.lost)
            report.extra += under(res.extra)
            report.record_wrong += under(res.record_wrong)
            report.leftovers += under(temps)
        if tracer is not None:
            time.sleep(0.5)  # the last inotify events
            report.dupes = attribute(tracer.stop(), kills, len(pipe.stages))
            tracer = None
        for b in pipe.branches:
            count_uploads(b, report)
        if not report.ok:
            report.stderr_tail = "\n".join(
                f"--- {s}.err\n" + (work / f"{s}.err").read_text(errors="replace")[-1500:] for s in pipe.stages
            )
    finally:
        kill_log.close()
        pipe.stop_all()
        if tracer is not None:
            tracer.stop()
    return report


def check_branch(branch: Branch, want: dict[str, bytes], db: Path) -> tuple[BranchResult, list[str]]:
    """How far one rule's destination and its rows in the record database are from ``want`` (expected_tree), and
    the temporary upload files left there."""
    have, temps = dest_tree(branch.dest, branch.decode)
    recorded = record_view(db, branch.url)
    res = BranchResult(
        len(want),
        lost=sorted(k for k in want if have.get(k) != want[k]),
        extra=sorted(set(have) - set(want)),
        record_wrong=sorted(recorded ^ set(want)),
    )
    return res, temps


def count_uploads(branch: Branch, report: Report) -> None:
    """Uploads per file from the branch's fc-record output; a line written again after a kill (its hop.seq seen
    already) is counted in ``rewritten``, not as an upload."""
    if not branch.out.exists():
        return
    seqs = set()
    for line in branch.out.read_bytes().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        seq = (ev.get("hop") or {}).get("seq")
        if seq is not None and seq in seqs:
            report.rewritten += 1  # fc-record wrote this line again after a kill: not an upload
            continue
        seqs.add(seq)
        if ev.get("transported") == "uploaded":
            rel = ev.get("rel", "?")
            report.uploads[f"{branch.label}/{rel}" if branch.label else rel] += 1
