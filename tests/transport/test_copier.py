"""fc-transport's small copies to a local folder, done by a copier process (stages/transport/copier.py,
transporters/copier.py): the main thread checks and opens, the copier creates, copies and renames.  Each file
arrives whole, once; a file the copier cannot copy ends as it does without a copier (today's outcome and message);
a copier killed or answering garbage costs nothing but a warning; fc-transport killed -9 with its copier working
leaves no copier behind, and its next run completes the copy.  Real runner, real transporter, real copier
process, real kills."""

from __future__ import annotations

import io
import os
import re
import select
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from fileconveyor import events as E
from fileconveyor.delivery.runner import Options, Runner
from fileconveyor.delivery.stage import Outcome
from fileconveyor.report import Reporter
from fileconveyor.stages.transport import copier as copier_lane
from fileconveyor.stages.transport.copier import START_AT, Copy, Lane, Steps
from fileconveyor.stages.transport.dest import targets_from
from fileconveyor.stages.transport.stage import TransportStage
from fileconveyor.stopping import Stopper
from fileconveyor.transporters import copier as copier_process
from fileconveyor.transporters.base import join, temp_name
from fileconveyor.transporters.local import Prepared

from .conftest import event, fc, file_argv, jsonl, tree

N = 4 * START_AT  # files in one round: a copier starts after the first START_AT
BAD, STALE = 100, 101  # files after START_AT, in d1 and d2


def _site(tmp_path: Path, n: int = N) -> tuple[Path, list[dict]]:
    src = tmp_path / "src"
    evs = []
    for i in range(n):
        rel = f"d{i % 3}/f {i}.bin"  # a space: names travel to the copier as they are
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"%d\n" % i * 100)
        evs.append(event(src, rel))
    return src, evs


def run(stage: TransportStage, state: Path, data: bytes) -> tuple[int, list[dict], str]:
    out, err = io.BytesIO(), io.StringIO()
    opts = Options(state_path=state, drain_timeout=10)
    status = Runner(stage, opts, io.BytesIO(data), out, Reporter("fc-t", err, 1), Stopper()).run()
    return status, [E.decode(line) for line in out.getvalue().splitlines()], err.getvalue()


def _lane(stage: TransportStage) -> Lane:
    (lane,) = stage.copiers.values()
    return lane


def copiers_of(pid: int) -> list[int]:
    """The copier processes started by process ``pid`` that are alive (zombies are dead)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if any(a.endswith(b"copier_child.py") for a in argv) and str(pid).encode() in argv and state != "Z":
            found.append(int(entry))
    return found


def test_small_files_in_a_large_round_are_copied_by_a_copier_process(tmp_path: Path) -> None:
    src, evs = _site(tmp_path)
    dest = tmp_path / "dest"
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, out, err = run(stage, tmp_path / "t.db", jsonl(evs))
    assert status == 0, err
    assert [ev["transported"] for ev in out] == ["uploaded"] * N
    assert tree(dest) == tree(src)  # every file whole, no temporary name left
    lane = _lane(stage)
    assert lane.copied >= N - START_AT - copier_process.MAX_FDS, "the copier copied the most of them"
    assert lane.proc is None and not copiers_of(os.getpid()), "stopped with the stage"
    assert (dest / "d0" / "f 0.bin").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class KillsItsCopier(TransportStage):
    """fc-transport that kills its copier (SIGKILL) once it has handed it ``after`` files."""

    after = START_AT

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.handed = 0

    def _hand_over(self, item, steps: Steps, copy: Copy):  # type: ignore[no-untyped-def,override]
        lane = self.copiers.get(item.lane)
        if lane is not None and lane.proc is not None:
            self.handed += 1
            if self.handed == self.after:
                os.kill(lane.proc.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        return super()._hand_over(item, steps, copy)


def test_a_copier_killed_mid_run_costs_a_warning_and_no_file(tmp_path: Path) -> None:
    src, evs = _site(tmp_path)
    dest = tmp_path / "dest"
    stage = KillsItsCopier(targets_from([("to", f"file://{dest}")]))
    status, out, err = run(stage, tmp_path / "t.db", jsonl(evs))
    assert status == 0, err
    assert sorted(ev["rel"] for ev in out) == sorted(ev["rel"] for ev in evs)
    assert {ev["transported"] for ev in out} == {"uploaded"}
    assert tree(dest) == tree(src)
    assert "the copier process ended or answered garbage; copying in the main thread" in err
    assert err.count("copier") == 1, err
    assert _lane(stage).proc is None, "not started again"


GARBAGE = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
while True:
    msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1024)
    if not msg:
        break
    sock.sendall(b"0 0 garbage")
"""


def test_a_copier_answering_garbage_is_left_and_its_files_copied_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that is not one status per file: none of its files counts as copied (the copier renamed none
    here, yet a rename it did would be of the same bytes)."""
    child = tmp_path / "garbage.py"
    child.write_text(GARBAGE)
    monkeypatch.setattr(copier_process, "CHILD", str(child))
    src, evs = _site(tmp_path)
    dest = tmp_path / "dest"
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, out, err = run(stage, tmp_path / "t.db", jsonl(evs))
    assert status == 0, err
    assert {ev["transported"] for ev in out} == {"uploaded"} and len(out) == N
    assert tree(dest) == tree(src)
    assert "answered garbage" in err
    assert _lane(stage).copied == 0


def _with_faults(tmp_path: Path, name: str, copier: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, str, Path]:
    """A run where one file's final name is a directory (it cannot be replaced) and another's temporary name is
    left by a crash (``O_EXCL`` refuses it in the copier; the usual upload removes it)."""
    base = tmp_path / name
    _, evs = _site(base)
    dest = base / "dest"
    (dest / "d1" / f"f {BAD}.bin" / "x").mkdir(parents=True)
    stale = temp_name(join(os.fsencode(dest), f"d2/f {STALE}.bin".encode()))
    (dest / "d2").mkdir()
    (dest / "d2" / os.fsdecode(stale)).write_bytes(b"a crash's leftover")
    if not copier:
        monkeypatch.setattr(copier_lane, "START_AT", 10**9)
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, out, err = run(stage, base / "t.db", jsonl(evs))
    monkeypatch.undo()
    assert (_lane(stage).copied > 0) == copier, "the copier took part (or not)"
    assert status == 1, (err, [ev for ev in out if "d1/f" in ev["rel"]][:3])
    # the temporary name is made from the destination's path: one per run
    same = [
        {k: re.sub(r"\.fc-\w+\.tmp", ".fc-T.tmp", str(v).replace(str(base), "BASE")) for k, v in ev.items()}
        for ev in out
    ]
    return [{k: v for k, v in ev.items() if k != "hop"} for ev in same], err, dest


def _same(text: str, base: Path) -> str:
    """``text`` with what differs between two runs in ``base`` and another folder made the same."""
    return re.sub(r"\.fc-\w+\.tmp", ".fc-T.tmp", text.replace(str(base), "BASE"))


def test_a_file_the_copier_cannot_copy_ends_as_without_a_copier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, err, dest = _with_faults(tmp_path, "copier", True, monkeypatch)
    plain_out, plain_err, _ = _with_faults(tmp_path, "plain", False, monkeypatch)
    assert out == plain_out  # every event's outcome and message, the failed one's included
    assert _same(err, tmp_path / "copier") == _same(plain_err, tmp_path / "plain")
    failed = [ev for ev in out if "error" in ev]
    assert [ev["rel"] for ev in failed] == [f"d1/f {BAD}.bin"]
    assert (dest / "d2" / f"f {STALE}.bin").read_bytes() == b"%d\n" % (STALE) * 100
    assert not [p for p in dest.rglob(".fc-*")], "no temporary name left"
    assert stat.S_ISDIR((dest / "d1" / f"f {BAD}.bin").stat().st_mode)


def test_a_file_the_main_thread_copies_itself_ends_as_with_the_usual_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files the main thread copies itself (no copier used: START_AT never reached) go through Lane.copy_here,
    prepare's checks and the copier's copy (copier_child.copy_one) in this process; one it cannot copy (a
    directory at its final name, a crash's temporary name there) is uploaded again the usual way.  Every event's
    outcome and message, and the destination, are those of the usual upload for every file (copy_here replaced
    by it)."""

    def usual(lane: Lane, steps: Steps, copy: Copy, prep: Prepared, made: list[bytes]) -> Outcome:
        prep.src.close()
        return copier_lane.again(steps, copy, made)

    copied: list[int] = []
    real = copier_lane.Lane.copy_here

    def counted(lane: Lane, steps: Steps, copy: Copy, prep: Prepared, made: list[bytes]) -> Outcome:
        outcome = real(lane, steps, copy, prep, made)
        copied.append(1)
        return outcome

    monkeypatch.setattr(copier_lane.Lane, "copy_here", counted)
    out, err, dest = _with_faults(tmp_path, "here", False, monkeypatch)
    assert len(copied) == N, "every file went through copy_here"
    monkeypatch.setattr(copier_lane.Lane, "copy_here", usual)
    usual_out, usual_err, usual_dest = _with_faults(tmp_path, "usual", False, monkeypatch)
    assert out == usual_out  # every event's outcome and message, the failed one's included
    assert _same(err, tmp_path / "here") == _same(usual_err, tmp_path / "usual")
    assert tree(dest) == tree(usual_dest)
    assert [ev["rel"] for ev in out if "error" in ev] == [f"d1/f {BAD}.bin"]
    assert (dest / "d2" / f"f {STALE}.bin").read_bytes() == b"%d\n" % (STALE) * 100
    assert not [p for p in dest.rglob(".fc-*")], "no temporary name left"


def test_fc_transport_killed_with_its_copier_working_leaves_no_copier_and_loses_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    src, evs = _site(tmp_path, 3000)
    dest = tmp_path / "dest"
    argv, out = file_argv(f"file://{dest}", tmp_path, evs)
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not copiers_of(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        copiers = copiers_of(proc.pid)
        assert copiers, "a copier started"
        time.sleep(0.05)  # a few batches in its hands
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while copiers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not copiers_of(proc.pid), "the copier died with fc-transport"
    assert len(tree(dest)) < len(evs), "killed midway"

    again = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert tree(dest) == tree(src), "every file, whole, and no temporary name left"
    rels = [E.decode(line)["rel"] for line in out.read_bytes().splitlines()]
    assert set(rels) == {ev["rel"] for ev in evs}


@pytest.mark.parametrize("index", [START_AT + 3, 3])
def test_links_planted_in_the_destination_are_never_written_through(tmp_path: Path, index: int) -> None:
    """Symlinks in the destination before a copier round: one at a file's final name (pointing outside) and one
    in place of a directory (pointing outside).  The copier renames over the link itself (renameat in a directory
    the main thread opened beneath the destination root) and never writes through either; what lands outside
    the root is nothing.  ``index``: the file with the link at its name, one the copier copies (after the first
    START_AT of the round) or one the main thread copies itself (Lane.copy_here)."""
    src, evs = _site(tmp_path)
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file.txt").write_bytes(b"theirs\n")
    final = f"f {index}.bin"
    rel = f"d{index % 3}/{final}"
    (dest / rel).parent.mkdir(parents=True)
    (dest / rel).symlink_to(outside / "file.txt")
    (dest / "d2").symlink_to(outside / "dir", target_is_directory=True)
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, out, err = run(stage, tmp_path / "t.db", jsonl(evs))
    assert _lane(stage).copied > 0, "the copier took part"
    assert (outside / "file.txt").read_bytes() == b"theirs\n"
    assert list((outside / "dir").iterdir()) == [], "nothing written through the linked directory"
    assert not (dest / rel).is_symlink() and (dest / rel).read_bytes() == (src / rel).read_bytes()
    assert (dest / "d2").is_symlink()  # left as it was: its files are refused, not written elsewhere
    refused = {ev["rel"] for ev in out if "error" in ev}
    assert refused == {ev["rel"] for ev in evs if ev["rel"].startswith("d2/")}, err[-2000:]
    assert status != 0


def test_the_copier_does_not_hold_fc_transports_stdout() -> None:
    """fc-transport lets go of its stdout pipe at its end (Sending.close_early, Output.release) so that the next
    stage sees the end of its input at once and acknowledges then.  A copier that inherited the pipe kept that end
    back until it was stopped, at fc-transport's close, and the next stage acknowledged only after its input had
    been quiet for a while (runner.IDLE_ACK_QUIET): 0.1-0.2 s more at the end of every pipeline run."""
    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)  # the copier is started with the pipe as our stdout, as in `fc-transport | fc-record`
    os.close(w)
    try:
        proc = copier_process.CopierProcess()
    finally:
        os.dup2(saved, 1)  # let go of the pipe, as Output.release does
        os.close(saved)
    try:
        assert proc.proc is not None and proc.proc.poll() is None, "the copier runs"
        assert select.select([r], [], [], 1.0)[0], "the reader sees the end while the copier runs"
        assert os.read(r, 1) == b""
    finally:
        proc.stop()
        os.close(r)


def test_the_copier_starts_at_the_first_small_copy_and_a_run_that_never_uses_it_ends_at_once(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The copier's start-up (a python: 25 ms on a quiet machine, 0.2 s on a loaded one) overlaps the main thread's
    first copies, instead of holding up the commit of the first round that hands it files (started at the round's
    START_AT-th upload, it did).  A run that never hands it a file (one live event) ends with it killed, not
    waited for."""
    src, evs = _site(tmp_path, 1)
    dest = tmp_path / "dest"
    argv = [*fc("fc-transport"), "--to", f"file://{dest}", "--state", str(tmp_path / "t.db")]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(jsonl(evs))
        proc.stdin.flush()
        assert E.decode(proc.stdout.readline())["transported"] == "uploaded"
        assert copiers_of(proc.pid), "a copier runs after one file"
    finally:
        proc.stdin.close()
        err = proc.stderr.read().decode()
        proc.wait(30)
    assert proc.returncode == 0, err
    assert not copiers_of(proc.pid), "stopped with fc-transport"
    assert tree(dest) == tree(src)


def test_a_copier_that_answered_everything_is_killed_at_the_end_one_with_a_batch_in_hand_finishes_it(
    tmp_path: Path,
) -> None:
    """At fc-transport's end its copier has answered every batch (each round waits for its answers): it is killed,
    not waited for while it ends at its end of file (the interpreter's teardown: 8-10 ms at the end of every run,
    on the critical path of a pipeline).  A copier stopped with a batch unanswered (not fc-transport's way, but
    the class allows it) is not killed mid-copy: it finishes the batch, no temporary name is left."""
    (tmp_path / "src").mkdir()
    (tmp_path / "dest").mkdir()
    for i in range(20):
        (tmp_path / "src" / f"f{i}").write_bytes(b"x" * 100_000)
    busy = copier_process.CopierProcess()
    child = busy.proc
    assert child is not None
    dfd = os.open(tmp_path / "dest", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fields = [b"1"]
        fds = [dfd]
        for i in range(20):
            fd = os.open(tmp_path / "src" / f"f{i}", os.O_RDONLY)
            st = os.fstat(fd)
            fields += [b"0", b"%d" % st.st_size, b"%d" % st.st_mtime_ns, b".t%d" % i, b"f%d" % i]
            fds.append(fd)
        socket.send_fds(busy.sock, [b"\0".join(fields)], fds)
        busy.batches.append(20)
        for fd in fds[1:]:
            os.close(fd)
        busy.stop()
    finally:
        os.close(dfd)
    assert child.returncode == 0, "ended at its end of file, after the batch"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(f"f{i}" for i in range(20))


def test_an_idle_copier_is_killed_at_the_end() -> None:
    """(see above)"""
    proc = copier_process.CopierProcess()
    child = proc.proc
    assert child is not None
    proc.stop()
    assert child.returncode == -signal.SIGKILL


def test_a_copier_stopped_with_a_batch_being_filled_closes_its_descriptors(tmp_path: Path) -> None:
    """The batch being filled when the copier is stopped (it died, or the run ends cut short) is never sent: its
    descriptors, the source's and the duplicate of the destination directory's, are closed then, not left to the
    garbage collector (the duplicates, plain ints, stayed open to the end of the process)."""
    from fileconveyor.sourcefile import Source, SourceFd

    (tmp_path / "src").mkdir()
    (tmp_path / "dest").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    proc = copier_process.CopierProcess()
    dfd = os.open(tmp_path / "dest", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(tmp_path / "src" / "f", os.O_RDONLY)
        src = SourceFd(fd, os.fstat(fd), Source(os.fsencode(tmp_path / "src"), b"f"))
        proc.add(Prepared(src, dfd, b".t", b"f"), 64)
        held = set(os.listdir("/proc/self/fd"))
        dup = proc.dups[0]
        assert {str(fd), str(dup)} <= held
        proc.stop()
        left = set(os.listdir("/proc/self/fd"))
        assert str(fd) not in left and str(dup) not in left
        assert str(dfd) in left  # (the transporter's own: it closes it)
    finally:
        os.close(dfd)
    assert list((tmp_path / "dest").iterdir()) == []


SLOW = """
import socket, sys, time
sys.path.insert(0, {child_dir!r})
import copier_child

recv = socket.recv_fds

def slow(sock, bufsize, maxfds):
    msg, fds, flags, addr = recv(sock, bufsize, maxfds)
    if msg:
        with open({log!r}, "a") as f:
            f.write("%d\\n" % (len(msg.split(b"\\0")) // 5))
        time.sleep(0.5)  # a copier that gets no CPU for a while (the machine busy)
    return msg, fds, flags, addr

socket.recv_fds = slow
sys.argv[0] = copier_child.__file__
copier_child.main()
"""


def test_a_copier_that_lags_holds_at_most_two_batches_the_round_waits_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round's commit waits for every file handed to the copier.  A copier that gets no CPU for a while (a busy
    machine) held up to 192 files at the round's end; the main thread now copies the next ones itself once the
    copier has two batches (BACKLOG = 128) unanswered, so the wait is for at most those.  Side by side with 192
    on a loaded machine, the 3-stage pipeline of 10,000 files was faster in 17 of 24 runs (docs/benchmarks.md)."""
    log = tmp_path / "batches.log"
    child = tmp_path / "slow.py"
    child.write_text(SLOW.format(child_dir=str(Path(copier_process.CHILD).parent), log=str(log)))
    monkeypatch.setattr(copier_process, "CHILD", str(child))
    src, evs = _site(tmp_path)
    dest = tmp_path / "dest"
    stage = TransportStage(targets_from([("to", f"file://{dest}")]))
    status, _, err = run(stage, tmp_path / "t.db", jsonl(evs))
    assert status == 0, err
    assert tree(dest) == tree(src)
    handed = sum(int(n) for n in log.read_text().split())
    assert 0 < handed <= 128, f"the copier was handed {handed} files while it lagged"


def test_ctrl_c_stops_fc_transport_and_its_copier_without_a_traceback(tmp_path: Path, env: dict[str, str]) -> None:
    """Ctrl-C at a terminal sends SIGINT to the whole foreground process group: fc-transport and its copier.  The
    copier, a plain python, died of it with a KeyboardInterrupt traceback on the user's terminal, in the middle of
    fc-transport's own clean stop (exit 130, state committed).  It runs in a session of its own now; fc-transport
    ends it.  The signal comes once the copier has copied files, so it is past its start-up (a python killed by
    SIGINT before its start-up installs the handler dies without a word)."""
    src, evs = _site(tmp_path)
    dest = tmp_path / "dest"
    argv = [*fc("fc-transport"), "--to", f"file://{dest}", "--state", str(tmp_path / "t.db")]
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(jsonl(evs))
        proc.stdin.flush()
        for _ in evs:
            assert E.decode(proc.stdout.readline())["transported"] == "uploaded"
        assert copiers_of(proc.pid), "a copier runs"
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: every process of the group
        err = proc.stderr.read().decode()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdin.close()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    deadline = time.monotonic() + 10
    while copiers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not copiers_of(proc.pid), "the copier ended with fc-transport"
    assert tree(dest) == tree(src)
