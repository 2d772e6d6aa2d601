"""Helpers the benchmarks share: running tools, file trees, the peers' servers, CPU and memory readings."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))

from tests.servers import s3 as s3srv  # noqa: E402
from tests.servers.process import ServerProcess, free_port  # noqa: E402

BUCKET = "bench"


def results_file(kind: str, suffix: str) -> tuple[str, Path]:
    """A new bench/results/<kind>-<date>[-N]<suffix> and its stamp: two runs in one minute keep both results
    (the name used to carry the minute only, so the second overwrote the first)."""
    import datetime as dt

    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    folder = ROOT / "bench" / "results"
    folder.mkdir(exist_ok=True)
    name, n = stamp, 1
    while (folder / f"{kind}-{name}{suffix}").exists():
        n += 1
        name = f"{stamp}-{n}"
    return name, folder / f"{kind}-{name}{suffix}"


def run(argv: Sequence[str], **kw: object) -> None:
    result = subprocess.run(list(argv), capture_output=True, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(map(str, argv))}\n{result.stderr.decode()[-3000:]}")


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        raise SystemExit(f"{tool} is missing: run scripts/install-system-deps bench")
    return path


def make_tree(root: Path, count: int, size: int, per_dir: int = 500) -> None:
    """``count`` files of random bytes; a marker next to the tree (not in it: the peers would copy it) says done."""
    marker = root.parent / f".{root.name}.complete"
    if marker.exists() and sum(1 for _ in root.rglob("*.bin")) == count:
        return
    marker.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    for i in range(count):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        with open(d / f"f{i:06d}.bin", "wb") as f:
            f.write(os.urandom(size))
    marker.write_text("")


SET_ASIDE_FILES = 1000  # a destination holding this many files is set aside after its run, not deleted


def set_aside(dest: Path, work: Path) -> None:
    """Make room for the next run at ``dest``: a destination of SET_ASIDE_FILES files or more is moved into
    ``work``/set-aside (deleted by ``clear_set_aside`` at the end of the benchmark), a smaller one is deleted.

    On ext4 without a journal (this machine's disk) the kernel skips, at each new inode, every inode freed in about
    the last minute, reading its inode table block to tell: the previous run's 10,000 files deleted just before
    made every tool's file creation 4x dearer in the kernel (0.45 -> 1.7-2.5 s of system time for 10,000 files),
    which is why each tool's first round was its fastest."""
    if not dest.exists():
        return
    if not _holds_many(dest, SET_ASIDE_FILES):
        shutil.rmtree(dest)
        return
    trash = work / "set-aside"
    trash.mkdir(exist_ok=True)
    n = sum(1 for _ in trash.iterdir())
    dest.rename(trash / f"{dest.name}-{os.getpid()}-{n}")


def clear_set_aside(work: Path) -> None:
    shutil.rmtree(work / "set-aside", ignore_errors=True)


def _holds_many(top: Path, n: int) -> bool:
    """Whether ``top`` holds at least ``n`` files (the walk stops there)."""
    seen = 0
    for _, _, files in os.walk(top):
        seen += len(files)
        if seen >= n:
            return True
    return False


def remove_state(state: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(state) + suffix).unlink(missing_ok=True)


class Sshd:
    def __init__(self, work: Path):
        self.dir = work / "sshd"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        for name in ("host_key", "user_key"):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(self.dir / name)])
        (self.dir / "authorized_keys").write_text((self.dir / "user_key.pub").read_text())
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {(self.dir / 'host_key.pub').read_text().strip()}\n")
        self.key = self.dir / "user_key"
        (self.dir / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {self.dir / 'host_key'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile {self.dir / 'authorized_keys'}\nUsePAM no\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"PermitRootLogin prohibit-password\nAllowUsers {self.user}\nSubsystem sftp internal-sftp\n"
            "MaxStartups 100\nMaxSessions 100\n"
        )
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = open(self.dir / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen([need("sshd"), "-D", "-e", "-f", str(self.dir / "sshd_config")], stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("sshd did not start: " + (self.dir / "sshd.log").read_text()) from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def check_copy(src: Path, dest: Path) -> None:
    a = sorted((p.relative_to(src), p.stat().st_size) for p in src.rglob("*") if p.is_file())
    b = sorted((p.relative_to(dest), p.stat().st_size) for p in dest.rglob("*") if p.is_file())
    if a != b:
        raise SystemExit(f"incomplete copy in {dest}: {len(b)} files of {len(a)}")


def rss_of(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a running process, in bytes; (0, 0) when it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return rss, hwm


class CpuMeter:
    """How much CPU went to work other than this benchmark and its children, over a span.

    Other work on the machine (a test suite, write-back) skews every figure taken
    meanwhile, so each one reports its share.  Children count once reaped, so read
    it after the measured process is.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = machine_busy()
        self.own0 = own_cpu()

    def other_share(self) -> float:
        """CPU seconds spent by others, as a share of the machine's capacity over the span."""
        span = (time.monotonic() - self.t0) * (os.cpu_count() or 1)
        other = (machine_busy() - self.busy0) - (own_cpu() - self.own0)
        return max(0.0, other / span) if span > 0 else 0.0


def machine_busy() -> float:
    """CPU seconds the machine has spent not idle since boot (all cores, steal included)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def start_s3(work: Path) -> ServerProcess:
    """The tests' S3 endpoint (moto, tests/servers/s3.py) with bucket BUCKET, empty, without its file view."""
    port = free_port()
    argv = [PY, "-m", "tests.servers.s3", str(port), str(work / "s3-files"), BUCKET]
    env = {"PYTHONPATH": str(ROOT), "S3_ACCESS_KEY": s3srv.ACCESS_KEY, "S3_MIRROR": "0"}
    server = ServerProcess("s3", argv, port, work / "s3.log", env)
    server.start(timeout=30)
    return server


def bucket_listing(endpoint: str, prefix: str) -> list[tuple[str, int]]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        found += [(o["Key"][len(prefix) + 1 :], o["Size"]) for o in page.get("Contents", [])]
    return sorted(found)
