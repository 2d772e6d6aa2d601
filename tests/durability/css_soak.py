"""CSS soak: a generated site of stylesheets sharing images, fonts and @imports, with unique names and
link_updater, changed in seeded random bursts; the real pipeline runs after each burst

    fc-watch --scan-once | fc-filter | fc-process --chain link_updater.CSSURLUpdater,unique_filename.MD5
      | fc-transport --to file://dest | fc-record

while a thread samples the destination: every url() and @import of every published stylesheet must resolve
to a file present there at that moment (issue 17: a published page never references a missing file).  Some
runs are killed (kill -9, the whole pipeline) at a random moment: the next run must carry on from the state
files without a broken reference either.

Used by tests/durability/test_css_soak.py (a short run in `make test`) and `make css-soak` (bench/css_soak.py).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fileconveyor.processors import css_urls

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
URL = "http://cdn.example/"


@dataclass
class Report:
    css_files: int = 0
    references: int = 0  # url() and @import in the source stylesheets
    touches: int = 0
    rounds: int = 0
    kills: int = 0
    samples: int = 0  # looks at the whole destination
    checked: int = 0  # references checked in them
    broken: list[str] = field(default_factory=list)  # seen while converging
    unresolved_at_end: list[str] = field(default_factory=list)  # not rewritten, or not there, after a round
    stderr_tail: str = ""

    def summary(self) -> str:
        return (
            f"CSS files {self.css_files}; references {self.references}; touches {self.touches} in {self.rounds}"
            f" rounds; runs killed {self.kills}; samples {self.samples} ({self.checked} references checked);"
            f" broken references seen {len(self.broken)}; unresolved after a round {len(self.unresolved_at_end)}"
        )


def make_site(site: Path, rnd: random.Random, css_files: int, images: int) -> int:
    """Stylesheets css/c<i>.css referencing img/, fonts/ and each other: c0-c3 import nothing, c4-c9 import
    some of c0-c3, the rest some of c0-c9 (two levels of @import, as on real sites; no cycles)."""
    (site / "img").mkdir(parents=True)
    (site / "fonts").mkdir()
    (site / "css").mkdir()
    for i in range(images):
        (site / "img" / f"i{i}.png").write_bytes(b"\x89PNG image %d\n" % i)
    for i in range(2):
        (site / "fonts" / f"f{i}.woff").write_bytes(b"wOFF font %d\n" % i)
    refs = 0
    for i in range(css_files):
        lines = []
        below = range(0) if i < 4 else range(4) if i < 10 else range(10)
        for j in rnd.sample(below, min(len(below), rnd.choice((0, 1, 1, 2)))):
            lines.append(f"@import url(c{j}.css);" if rnd.random() < 0.5 else f'@import "c{j}.css";')
        for k in rnd.sample(range(images), 3):
            quote = rnd.choice(("", '"', "'"))
            lines.append(f".r{i}_{k}{{background:url({quote}../img/i{k}.png{quote}) no-repeat}}")
        if rnd.random() < 0.3:
            f = rnd.randrange(2)
            lines.append(f"@font-face{{font-family:f{f};src:url(../fonts/f{f}.woff?#iefix) format('woff')}}")
        refs += len(lines)
        (site / "css" / f"c{i}.css").write_text("\n".join(lines) + "\n")
    return refs


def touch(site: Path, rnd: random.Random, n: int) -> None:
    """``n`` random changes: an image or font gets new bytes, a stylesheet a new comment."""
    files = sorted(p for p in site.rglob("*") if p.is_file())
    for p in rnd.sample(files, min(n, len(files))):
        with open(p, "ab") as f:
            f.write(b"/* touched %d */\n" % rnd.randrange(1 << 30) if p.suffix == ".css" else b"%d" % rnd.random())


def _references(data: bytes) -> list[str]:
    return [r.url for r in css_urls.references(data)]


def check_destination(dest: Path, report: Report, at_end: bool = False) -> None:
    """Every stylesheet at the destination: each rewritten reference names a file there.  A missing file counts
    only when the stylesheet read again is unchanged: then it referenced the missing file at that moment."""
    for css in list(dest.rglob("*.css")):
        try:
            before = css.read_bytes()
        except FileNotFoundError:
            continue  # an old name deleted meanwhile
        for url in _references(before):
            if not url.startswith(URL):
                if at_end and not url.startswith(("data:", "http")):
                    report.unresolved_at_end.append(f"{css.name}: url({url}) not rewritten")
                continue
            report.checked += 1
            target = dest / url[len(URL) :].split("?")[0].split("#")[0]
            if target.exists():
                continue
            try:
                after = css.read_bytes()
            except FileNotFoundError:
                continue
            if after == before:
                (report.unresolved_at_end if at_end else report.broken).append(f"{css.name}: url({url}) missing")


class Sampler(threading.Thread):
    def __init__(self, dest: Path, report: Report):
        super().__init__(daemon=True)
        self.dest, self.report, self.stop = dest, report, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            check_destination(self.dest, self.report)
            self.report.samples += 1
            self.stop.wait(0.005)  # the pipeline needs the CPU more


def pipeline(tmp: Path, site: Path, dest: Path) -> str:
    b = f"{sys_python()} {BIN}"
    return (
        f"{b}/fc-watch --scan-once {site} | {b}/fc-filter --extensions css:png:woff"
        f" | {b}/fc-process --chain link_updater.CSSURLUpdater,unique_filename.MD5 --server file"
        f" --record-db {tmp}/synced.db --document-root {tmp} --base-path /site/ --retry-delay 0.02 --jobs 2"
        f" | {b}/fc-transport --to file://{dest} --url {URL}"
        f" | {b}/fc-record --db {tmp}/synced.db > /dev/null"
    )


def killed(script: str, env: dict[str, str], after: float) -> None:
    """Start the pipeline and kill -9 all of it ``after`` seconds later (or let it end before)."""
    proc = subprocess.Popen(
        ["bash", "-c", script], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc.wait(after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def sys_python() -> str:
    import sys

    return sys.executable


def soak(
    tmp: Path,
    *,
    css_files: int = 40,
    images: int = 12,
    rounds: int = 3,
    burst: int = 8,
    kill_rate: float = 0.0,
    seed: int = 1,
) -> Report:
    rnd = random.Random(seed)
    site, dest = tmp / "site", tmp / "dest"
    dest.mkdir(parents=True)
    report = Report(css_files=css_files, references=make_site(site, rnd, css_files, images))
    env = {**os.environ, "FC_STATE_DIR": str(tmp / "state"), "PYTHONPATH": str(ROOT / "lib")}
    script = pipeline(tmp, site, dest)
    sampler = Sampler(dest, report)
    sampler.start()
    try:
        for n in range(rounds + 1):
            if n:
                touch(site, rnd, burst)
                report.touches += burst
            if n and rnd.random() < kill_rate:
                killed(script, env, rnd.uniform(0.2, 2.0))
                report.kills += 1
            res = subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True, timeout=600)
            report.rounds = n
            report.stderr_tail = res.stderr.decode(errors="replace")[-3000:]
            if res.returncode != 0:
                raise AssertionError(f"round {n}: exit {res.returncode}\n{report.stderr_tail}")
            check_destination(dest, report, at_end=True)
            time.sleep(rnd.random() * 0.2)
    finally:
        sampler.stop.set()
        sampler.join(10)
    return report
