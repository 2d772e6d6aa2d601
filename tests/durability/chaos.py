"""Chaos: the whole pipeline, stages connected by named FIFOs as under supervisord,
a source tree changing all the time, and stages killed with -9 (one, or all at
once) and restarted, round after round.  Then the changes stop and the destination
and the record database must converge to exactly the source tree.

    fc-watch -> fc-filter -> fc-process -> fc-transport (file://) -> fc-record

Used by tests/durability/test_chaos.py (a short run in `make test`) and by
`make chaos` (bench/chaos.py: as many rounds as asked, figures printed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.durability.chaos_dupes import Dupes, Kill, UploadTrace, attribute, pending

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
STAGES = ("watch", "filter", "process", "transport", "record")


@dataclass
class Report:
    rounds: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    files: int = 0
    lost: list[str] = field(default_factory=list)  # in the source, not (or not right) at the destination
    extra: list[str] = field(default_factory=list)  # at the destination, gone from the source
    leftovers: list[str] = field(default_factory=list)  # temporary upload files left at the destination
    record_wrong: list[str] = field(default_factory=list)  # record database disagrees with the destination
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
        return (
            f"rounds {self.rounds}; kills {dict(self.kills)}; files at the end {self.files}; "
            f"lost {len(self.lost)}; extra {len(self.extra)}; record wrong {len(self.record_wrong)}; "
            f"temp leftovers {len(self.leftovers)}; uploads per file: median {per_file[len(per_file) // 2]}, "
            f"max {per_file[-1]}, re-uploads of a path (new content included) {dup}; "
            f"converged {self.converge_seconds:.1f}s after the last restart"
            + (f"; record lines re-written {self.rewritten}" if self.rewritten else "")
            + (f"\ntraced: {self.dupes.summary()}" if self.dupes is not None else "")
        )


class Pipeline:
    def __init__(self, work: Path):
        self.work = work
        self.src = work / "src"
        self.dest = work / "dest"
        self.state = work / "state"
        for d in (self.src, self.dest, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.fifos = {name: work / f"{name}.fifo" for name in ("w2f", "f2p", "p2t", "t2r")}
        for f in self.fifos.values():
            if not f.exists():
                os.mkfifo(f)
        self.db = work / "synced_files.db"
        self.out = work / "record-out.ndjson"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, stage: str) -> list[str]:
        py, st, ff = sys.executable, self.state, self.fifos
        common = ["-q"]
        if stage == "watch":
            return [
                py,
                str(BIN / "fc-watch"),
                *common,
                "--settle",
                "0.05",
                "--state",
                f"{st}/watch.db",
                "--output",
                str(ff["w2f"]),
                str(self.src),
            ]
        if stage == "filter":
            return [
                py,
                str(BIN / "fc-filter"),
                *common,
                "--ignore-dirs",
                "skip",
                "--state",
                f"{st}/filter.db",
                "--input",
                str(ff["w2f"]),
                "--output",
                str(ff["f2p"]),
            ]
        if stage == "process":
            return [
                py,
                str(BIN / "fc-process"),
                *common,
                "--chain",
                "filename.SpacesToUnderscores",
                "--jobs",
                "2",
                "--state",
                f"{st}/process.db",
                "--input",
                str(ff["f2p"]),
                "--output",
                str(ff["p2t"]),
            ]
        if stage == "transport":
            return [
                py,
                str(BIN / "fc-transport"),
                *common,
                "--to",
                f"file://{self.dest}",
                "--url",
                "http://cdn.test/",
                "--state",
                f"{st}/transport.db",
                "--input",
                str(ff["p2t"]),
                "--output",
                str(ff["t2r"]),
            ]
        return [
            py,
            str(BIN / "fc-record"),
            *common,
            "--db",
            str(self.db),
            "--state",
            f"{st}/record.db",
            "--input",
            str(ff["t2r"]),
            "--output",
            str(self.out),
        ]

    def start(self, stage: str) -> None:
        log = (self.work / f"{stage}.err").open("ab")
        self.procs[stage] = subprocess.Popen(self.command(stage), stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def kill(self, stage: str) -> None:
        p = self.procs[stage]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()

    def start_all(self) -> None:
        for stage in STAGES:
            self.start(stage)

    def stop_all(self) -> None:
        for stage in self.procs:
            self.kill(stage)

    def dead(self) -> list[str]:
        return [f"{s} (exit {p.returncode})" for s, p in self.procs.items() if p.poll() is not None]


def expected_name(rel: str) -> str:
    """Where a source file must end up: filename.SpacesToUnderscores changes base names only."""
    d, _, base = rel.rpartition("/")
    return (d + "/" if d else "") + base.replace(" ", "_")


class Mutator:
    """Changes the source tree: creates, modifies, renames and deletes files."""

    NAMES = ("a", "b c", "déjà vu", "x-1", "y_2", "z z z")

    def __init__(self, src: Path, rng: random.Random):
        self.src = src
        self.rng = rng
        self.n = 0

    def populate(self, count: int) -> None:
        for _ in range(count):
            self.create()

    def _files(self) -> list[Path]:
        return [p for p in self.src.rglob("*") if p.is_file()]

    def create(self) -> None:
        self.n += 1
        d = self.src / f"d{self.rng.randrange(12)}"
        if self.rng.random() < 0.1:
            d = d / "skip"  # ignored by fc-filter: must never arrive
        d.mkdir(parents=True, exist_ok=True)
        name = f"{self.rng.choice(self.NAMES)} {self.n}.txt"
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


def expected_tree(src: Path) -> dict[str, bytes]:
    out = {}
    for p in src.rglob("*"):
        rel = p.relative_to(src).as_posix()
        if p.is_file() and "/skip/" not in f"/{rel}" and not p.name.startswith("."):
            out[expected_name(rel)] = p.read_bytes()
    return out


def dest_tree(dest: Path) -> tuple[dict[str, bytes], list[str]]:
    files, temps = {}, []
    for p in dest.rglob("*"):
        if p.is_file():
            rel = p.relative_to(dest).as_posix()
            if ".fc-tmp" in p.name or p.name.startswith(".fc-"):
                temps.append(rel)
            else:
                files[rel] = p.read_bytes()
    return files, temps


def record_view(db: Path, dest: Path) -> set[str]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT url FROM synced_files").fetchall()
    finally:
        conn.close()
    from urllib.parse import unquote

    return {unquote(url.removeprefix("http://cdn.test/")) for (url,) in rows}


def run(
    work: Path,
    rounds: int,
    files: int,
    seed: int = 1,
    converge_timeout: float = 120.0,
    say=lambda text: None,
    trace: bool = False,
) -> Report:
    """``trace``: watch the destination (inotifywait) and charge each duplicate upload to the kills before it
    (chaos_dupes.py)."""
    rng = random.Random(seed)
    pipe = Pipeline(work)
    mut = Mutator(pipe.src, rng)
    mut.populate(files)
    report = Report()
    tracer, kills = None, []
    if trace:
        for d in pipe.src.iterdir():  # made now, so that no upload lands before its directory is watched
            if d.is_dir():
                (pipe.dest / d.name).mkdir(exist_ok=True)
        tracer = UploadTrace(pipe.dest)
    pipe.start_all()
    last_restart = time.monotonic()
    try:
        for r in range(rounds):
            t_end = time.monotonic() + rng.uniform(0.1, 0.8)
            while time.monotonic() < t_end:
                mut.step()
                time.sleep(rng.uniform(0.0, 0.02))
            victims = list(STAGES) if rng.random() < 0.1 else [rng.choice(STAGES)]
            for v in victims:
                pipe.kill(v)
                report.kills[v] += 1
            if tracer is not None:
                held = set()
                for v in victims:
                    if v in ("process", "transport"):  # the stages that keep an inbox
                        held |= pending(pipe.state / f"{v}.db", expected_name)
                kills.append(Kill(time.monotonic(), tuple(victims), held))
            time.sleep(rng.uniform(0.0, 0.3))
            for v in victims:
                pipe.start(v)
            last_restart = time.monotonic()
            report.rounds = r + 1
            if r % 10 == 9:
                say(f"round {r + 1}/{rounds}: kills so far {dict(report.kills)}")
        # the changes stop; everything must arrive
        want = expected_tree(pipe.src)
        deadline = time.monotonic() + converge_timeout
        while True:
            got, temps = dest_tree(pipe.dest)
            recorded = record_view(pipe.db, pipe.dest)
            if got == want and recorded == set(want):
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
        report.files = len(want)
        report.lost = sorted(k for k in want if got.get(k) != want[k])
        report.extra = sorted(set(got) - set(want))
        report.leftovers = temps
        report.record_wrong = sorted(recorded ^ set(want))
        if tracer is not None:
            time.sleep(0.5)  # the last inotify events
            report.dupes = attribute(tracer.stop(), kills, len(STAGES))
            tracer = None
        if pipe.out.exists():
            seqs = set()
            for line in pipe.out.read_bytes().splitlines():
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
                    report.uploads[ev.get("rel", "?")] += 1
        if not report.ok:
            report.stderr_tail = "\n".join(
                f"--- {s}.err\n" + (work / f"{s}.err").read_text(errors="replace")[-1500:] for s in STAGES
            )
    finally:
        pipe.stop_all()
        if tracer is not None:
            tracer.stop()
    return report
