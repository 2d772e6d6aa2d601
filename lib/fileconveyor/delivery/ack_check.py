"""Whether a stage may write acknowledgements into the state file an event's ``hop.from`` names.

An acknowledgement tells a writer what it may forget, so a forged ``hop`` (a third-party
stage may write anything) could make a stage write into another pipeline's state file
and suppress its replays.  A stage therefore acknowledges to a file only when both hold:

1. the file is a File Conveyor state file whose epoch is the hop's ``epoch``: a random
   value found only in that file and in that writer's own output lines, so a forger
   must have read one of those (state files are owner-only);
2. our input is a pipe or FIFO, or a regular file of ours no other user may write (``--input``
   of what an earlier run wrote with ``--output``, created 0600): a file anyone else could
   have written gets no acknowledgement at all (replaying a saved file needs none); and
   while a process still writes into the pipe, one of its writers has that state file open,
   itself or through pass-through processes that take lines from a pipe (fc-tee, tee, awk: their stdin, or a
   named FIFO; ``_takes``), found through /proc.  A pipe whose writers have all gone (a cron
   ``fc-watch --scan-once | awk | fc-filter`` whose writer ended before we read its first
   line, or before a pass-through process in between did) leaves rule 1 alone: refusing
   it would leave such a pipeline never acknowledged.  A writer's state file also says which pipe or FIFO its
   current run writes into (``run_out``, recorded before its first line: runs.current); when that is our
   input, the writer is ours whether it still runs or not (``writes_into``); so is it when our input is one of
   the pipes that the processes reading its output wrote into as it ended (``run_next``, recorded before it let
   go of its state file: ``downstream``), behind a pass-through that was then at its end too (tee, having closed
   its input at EOF, still holds its outputs: a process that makes lines without the state file, as a forger).
   Only processes of ours write into our pipe, and files holding the epoch are owner-only.
   (A library caller that hands the runner an in-memory stream, with no file descriptor,
   vouches for its lines as for its other arguments: the epoch decides there.)

Both are checked when a writer is first acknowledged to (at its first line read, while
it is still writing; again if its epoch changes), not per line: a scan of /proc costs a
few milliseconds.  A stage never acknowledges to its own state file, however its path
is spelled (compared by st_dev and st_ino).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Sequence
from typing import IO
from urllib.parse import quote

from .. import private
from ..state import keep_wal_at_close

Ident = tuple[int, int]  # st_dev, st_ino
MAX_HOPS = 4  # pass-through processes (fc-tee) followed between a writer and us
STARTING = 10.0  # seconds: a writer this young may not have opened its state file yet


def state_epoch(conn: sqlite3.Connection) -> str | None:
    """The epoch of a File Conveyor state file (a stage's, or fc-watch's), None for any other database."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"meta", "acks"} <= tables:
        return None
    cols = {row[1] for row in conn.execute("PRAGMA table_info(meta)")}
    if "k" in cols:  # a stage's state (delivery/durable.py)
        row = conn.execute("SELECT v FROM meta WHERE k='epoch'").fetchone()
        return str(row[0]) if row else None
    if "name" in cols:  # fc-watch's (stages/watch/state.py): an integer, shown in hex on its lines
        row = conn.execute("SELECT value FROM meta WHERE name='epoch'").fetchone()
        return format(row[0], "x") if row and isinstance(row[0], int) else None
    return None


def high_seq(conn: sqlite3.Connection) -> int | None:
    """The highest ``hop.seq`` the writer of this state file has committed (a writer commits a line before it
    writes it, so no genuine line has a higher one); None when the file does not say."""
    cols = {row[1] for row in conn.execute("PRAGMA table_info(meta)")}
    if "k" in cols:  # a stage's: what it wrote, and what its outbox holds
        row = conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM outbox), 0), (SELECT CAST(v AS INTEGER) FROM meta "
            "WHERE k='written'))"
        ).fetchone()
    elif "name" in cols:  # fc-watch's: the last seq (batch) given to a line
        row = conn.execute("SELECT value FROM meta WHERE name='last_batch'").fetchone()
    else:
        return None
    return row[0] if row and isinstance(row[0], int) else None


def run_info(conn: sqlite3.Connection) -> dict[str, object] | None:
    """When the writer of this state file began its current run, and its last seq before (delivery/runs.py)."""
    info = _meta(conn, ("run_boot", "run_at", "run_seq0"))
    return info if len(info) == 3 else None


def _meta(conn: sqlite3.Connection, names: tuple[str, ...]) -> dict[str, object]:
    """These entries of a state file's meta table: a stage's (k, v) or fc-watch's (name, value)."""
    cols = {row[1] for row in conn.execute("PRAGMA table_info(meta)")}
    key, value = ("k", "v") if "k" in cols else ("name", "value") if "name" in cols else (None, None)
    if key is None:
        return {}
    marks = ", ".join("?" * len(names))
    return dict(conn.execute(f"SELECT {key}, {value} FROM meta WHERE {key} IN ({marks})", names).fetchall())


def writes_into(conn: sqlite3.Connection, pipe: Ident, boot: str | None) -> bool:
    """Whether the writer of this state file said, in its current run on this boot (``boot``), that its lines
    go into ``pipe``: its own output (runs.current), or a pipe the processes reading it wrote into as it ended
    (runs.ending).  A pipe we still hold open is the only one with its st_ino, so a writer that ended before we
    looked (a cron ``fc-watch --scan-once`` of a small tree) is still known as ours.  Only on this boot: pipe
    inode numbers start again at each boot, so a run_out written before one may name the pipe we read now."""
    info = _meta(conn, ("run_out", "run_next", "run_boot"))
    if not boot or info.get("run_boot") != boot:
        return False
    name = f"{pipe[0]}:{pipe[1]}"
    return info.get("run_out") == name or name in str(info.get("run_next") or "").split()


def output_ident(path: str | None, stdout: IO[bytes] | None) -> Ident | None:
    """The pipe or FIFO a writer's lines go to: ``path`` (a FIFO) or ``stdout`` ("-" or None); None for
    anything else."""
    if path not in (None, "-"):
        return input_ident(path=path)
    try:
        return input_ident(fd=stdout.fileno()) if stdout is not None else None
    except (OSError, ValueError, AttributeError):  # an in-memory stream
        return None


def open_state(origin: str, timeout: float = 0.5) -> sqlite3.Connection:
    # Its -wal and -shm as its writer makes them (private.sqlite_side_files): with the writer gone SQLite opens
    # them by name, and a hard link planted at x.db-wal in /tmp had our acknowledgement's frames written over the
    # file it named.
    if problem := private.sqlite_side_problem(origin):
        raise sqlite3.DatabaseError(problem)
    # mode=rw: never create a database at a path taken from an event
    # (``timeout``: how long a statement waits for a lock, its first PRAGMA included: it loads the schema)
    conn = sqlite3.connect(f"file:{quote(origin)}?mode=rw", uri=True, timeout=timeout, isolation_level=None)
    # As the writer's own connection (state.py): in WAL mode a commit then needs no fsync.  SQLite's default,
    # FULL, made every acknowledgement an fdatasync of the writer's WAL (3-15 ms under load) in the reader's main
    # loop, holding the writer's lock meanwhile: live files waited behind it on both sides.  An acknowledgement
    # lost to a power cut costs a replay the reader drops.  Checkpoints are left to the writer's connection.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    # Nor at our close: the writer has often ended by then (fc-watch --scan-once), and the connection closing last
    # checkpointed its file, fsyncs on our exit's path (30 ms in fc-transport's end); its next run reads the WAL.
    keep_wal_at_close(conn)
    return conn


def input_ident(fd: int | None = None, path: str | None = None) -> Ident | None:
    """The pipe or FIFO a stage reads (by fd, or a FIFO's path); None for anything else."""
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st is not None and stat.S_ISFIFO(st.st_mode) else None


def others_may_write(fd: int | None = None, path: str | None = None) -> bool:
    """Whether a FIFO on a filesystem (by fd, or path) may be opened for writing by another user: not ours,
    world-writable, or writable by a group with other members.  Such a user could write lines, hops included,
    into our input, as into a file of saved events others may write; our writer's state saying it writes there
    (run_out) proves nothing then.  A pipe (pipefs) has no path to open: only the processes holding it write
    into it.  A group of our own (the user-private group that umask 002 makes FIFOs writable by) is no other
    user."""
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path) if path is not None else None
    except OSError:
        return False
    if st is None or not stat.S_ISFIFO(st.st_mode) or st.st_dev == _pipefs_dev():
        return False
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_IWOTH:
        return True
    return bool(st.st_mode & stat.S_IWGRP) and not _own_group(st.st_gid)


def others_reading(fifo: Ident) -> list[tuple[int, int]]:
    """(pid, uid) of the processes of other users that hold the named FIFO ``fifo`` open for reading: each can take
    lines out of it unseen, gaps we would take for a filter's.  Made owner-only (private.fifo_unreadable), nobody
    else opens it any more, but what was opened before stays open.  Only the processes we may look at are seen:
    all of them as root, ours only otherwise.  An anonymous pipe is held only by the pipeline that made it."""
    if fifo[0] == _pipefs_dev():
        return []
    found = []
    for pid, fd in _open_files().get(fifo, ()):
        with contextlib.suppress(OSError):
            uid = os.stat(f"/proc/{pid}").st_uid
            if uid != os.geteuid() and _reads(pid, fd):
                found.append((pid, uid))
    return found


def _own_group(gid: int) -> bool:
    """Whether group ``gid`` is our primary group and names no member (a user-private group)."""
    if gid != os.getegid():
        return False
    import grp  # only for a group-writable FIFO

    try:
        return not grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


_pipefs: list[int] = []


def _pipefs_dev() -> int:
    """The st_dev of pipes made by pipe(2): one pseudo-filesystem for all of them."""
    if not _pipefs:
        r, w = os.pipe()
        try:
            _pipefs.append(os.fstat(r).st_dev)
        finally:
            os.close(r)
            os.close(w)
    return _pipefs[0]


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (``/d/./own.db`` and ``/d/own.db``, a hard link, a symlink):
    compared by identity, since a string compare misses every other spelling."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def own_file(fd: int | None = None, path: str | None = None) -> bool:
    """Whether our input (by fd, or path) is a regular file of ours that no other user may write: lines in it,
    hops included, were written by us (fc-process --output FILE, read later with --input FILE)."""
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path) if path is not None else None
    except OSError:
        return False
    if st is None or not stat.S_ISREG(st.st_mode):
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def writer_holds(pipe: Ident, origin: str) -> bool | None:
    """Whether a process writing into ``pipe`` has ``origin`` open, directly or through pass-through readers of
    other pipes; None when nobody writes into it any more (nothing can be told)."""
    try:
        st = os.stat(origin)
    except OSError:
        return False
    target = (st.st_dev, st.st_ino)
    if _writer_on_stdio_holds(pipe, target):
        return True
    fds = _open_files()
    me = os.getpid()
    seen: set[int] = {me}
    pipes = [pipe]
    for _ in range(MAX_HOPS + 1):
        if not pipes:  # the writers read no pipe: they make the lines themselves, without the file
            return False
        holding = {pid for p in pipes for pid, fd in fds.get(p, ()) if _writes(pid, fd)}
        writers = holding - seen
        if not holding:
            # Nobody writes any more: into our pipe, or into the pipes the pass-through processes read (fc-watch
            # ended while `tee` still copies what it wrote). The same as a writer gone before we looked: refusing
            # here made a real reader behind tee refuse its writer at random, depending on when fc-watch ended.
            return None
        if not writers:  # only processes already looked at (ourselves, say) write there
            return False
        seen |= writers
        if any(pid for pid, _ in fds.get(target, ()) if pid in writers):
            return True
        # the writers may pass lines on (fc-tee, tee, awk): follow the pipes they take lines from
        pipes = [ident for ident, holders in fds.items() for pid, fd in holders if pid in writers and _takes(pid, fd)]
    return False


def _writer_on_stdio_holds(pipe: Ident, target: Ident) -> bool:
    """A quick True of ``writer_holds``: a process writing into ``pipe`` as its stdout has ``target`` open, itself
    or through pass-through processes that read the pipe of the one before as their stdin and write it as their
    stdout (a shell pipeline: `fc-watch | tee | fc-filter`).  Looked at in stdin and stdout alone (one stat each per
    process, ~1 ms for a hundred processes) and the fd tables of those writers, instead of every file of every
    process (7-20 ms).  Such a chain is one ``writer_holds`` walks as well (its writers of a level include ours,
    and the pipes it follows next those they take as stdin), within as many levels, so a True here is its True;
    False only says that no such chain was found: ``writer_holds`` then looks at every file, as it did."""
    stdio = _stdio_files(("0", "1"))
    seen: set[int] = {os.getpid()}
    pipes = [pipe]
    for _ in range(MAX_HOPS + 1):
        writers = {pid for p in pipes for pid, fd in stdio.get(p, ()) if fd == "1" and pid not in seen}
        writers = {pid for pid in writers if _writes(pid, "1")}
        if not writers:
            return False
        if any(_holds(pid, target) for pid in writers):
            return True
        seen |= writers
        pipes = []
        for pid in writers:
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{pid}/fd/0")
                if _takes(pid, "0"):
                    pipes.append((st.st_dev, st.st_ino))
    return False


def _holds(pid: int, target: Ident) -> bool:
    """Whether process ``pid`` has the file ``target`` open (one process's fd table)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return False
    for fd in names:
        with contextlib.suppress(OSError):
            st = os.stat(f"{base}/{fd}")
            if (st.st_dev, st.st_ino) == target:
                return True
    return False


def _takes(pid: int, fd: str) -> bool:
    """Whether process ``pid`` may take lines from the pipe or FIFO it reads on ``fd``, as a pass-through does:
    its stdin (`| tee |`, `| awk |`, fc-tee and fc-filter reading stdin), or a named FIFO (``--input FIFO``,
    ``< FIFO``, ``cat FIFO``).  An anonymous pipe held on another descriptor is some process's channel to its
    parent or children (a supervisor's log pipes, pytest-xdist's controller and workers): it carries no lines of
    ours, and followed, whatever held a state file at its other end vouched for a forger's lines."""
    if fd == "0":
        return _reads(pid, fd)
    try:
        st = os.stat(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return False
    return stat.S_ISFIFO(st.st_mode) and st.st_dev != _pipefs_dev() and _mode(pid, fd) in (os.O_RDONLY, os.O_RDWR)


def downstream(pipe: Ident) -> list[Ident]:
    """The pipes and FIFOs that the processes reading ``pipe`` write into, and those that the readers of these
    write into in turn (pass-through processes: tee, fc-tee, awk, a next stage), up to MAX_HOPS: where the lines
    of a writer into ``pipe`` go on, seen from its side.  It asks while it still holds ``pipe`` (runs.ending), so
    the readers cannot have seen its end and closed their input yet.  The same chain as ``writer_holds`` follows
    from a reader's side: a process on it could pass the writer's lines to that reader, or forge lines there."""
    return chain(pipe)[0]


def chain(pipe: Ident, holding: Sequence[str] = ()) -> tuple[list[Ident], dict[str, set[int]]]:
    """``downstream`` (the pipes after ``pipe``), and for each file of ``holding`` the processes that read
    ``pipe`` or one of those pipes and have that file open: a reader's state file, the process that owes a writer
    into ``pipe`` its acknowledgements (delivery/sending.py: ``close_early``)."""
    fds = _open_files()
    seen: set[int] = {os.getpid()}
    found: list[Ident] = []
    pipes = [pipe]
    for _ in range(MAX_HOPS):
        readers = {pid for p in pipes for pid, fd in fds.get(p, ()) if _reads(pid, fd)} - seen
        if not readers:
            break
        seen |= readers
        pipes = []
        for ident, holders in fds.items():
            if ident != pipe and ident not in found and any(p in readers and _writes_pipe(p, fd) for p, fd in holders):
                found.append(ident)
                pipes.append(ident)
    seen.discard(os.getpid())
    owners: dict[str, set[int]] = {}
    for path in holding:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            owners[path] = {pid for pid, _ in fds.get((st.st_dev, st.st_ino), ()) if pid in seen}
    return found, owners


def stdin_readers(pipe: Ident) -> list[int]:
    """The processes (other than ours) that have ``pipe`` as their stdin: the next command of a shell pipeline,
    and a wrapper it runs under (time, nice, env) with it."""
    return [pid for pid, _ in _stdio_files(("0",)).get(pipe, ()) if pid != os.getpid()]


def pipeline_after(pipe: Ident) -> list[int]:
    """The processes of a shell pipeline after a writer into ``pipe``: those reading it as their stdin, then those
    reading the stdout of these as theirs, up to MAX_HOPS (tee, grep or pv passing lines on to a next stage).  A
    process reading it on another descriptor (supervisord collecting a log, a test) ends the chain there."""
    fds = _stdio_files(("0",))
    found: list[int] = []
    pipes = [pipe]
    for _ in range(MAX_HOPS + 1):
        readers = [pid for p in pipes for pid, _ in fds.get(p, ()) if pid not in (os.getpid(), *found)]
        if not readers:
            break
        found.extend(readers)
        pipes = []
        for pid in readers:
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{pid}/fd/1")
                if stat.S_ISFIFO(st.st_mode):
                    pipes.append((st.st_dev, st.st_ino))
    return found


def writer_starting(pipe: Ident) -> bool:
    """Whether a process writing into ``pipe`` started less than STARTING seconds ago.  A pipeline restarted as
    a whole starts every stage at once: a reader that registers with a writer it knows from its state file
    (before any line) may look while that writer is still importing, its state file not open yet.  That is
    no forgery: the reader looks again a little later instead of refusing the writer for the run."""
    try:
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return False
    for pid, fd in _open_files().get(pipe, ()):
        if pid == os.getpid() or not _writes(pid, fd):
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                started = int(f.read().rpartition(")")[2].split()[19]) / ticks
        except (OSError, ValueError, IndexError):
            continue
        if uptime - started < STARTING:
            return True
    return False


def _open_files() -> dict[Ident, list[tuple[int, str]]]:
    """Every file open in every process we may look at: its identity -> (pid, fd) holding it."""
    out: dict[Ident, list[tuple[int, str]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            # each descriptor looked up from its process's fd directory, held open: a path from /proc on would
            # look up the process again each time (about a sixth of the scan's CPU)
            where = os.open(f"/proc/{name}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        pid = int(name)
        try:
            fds = os.listdir(where)
        except OSError:
            fds = []
        for fd in fds:
            try:
                st = os.stat(fd, dir_fd=where)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in out:
                out[ident].append((pid, fd))
            else:
                out[ident] = [(pid, fd)]
        os.close(where)
    return out


def _stdio_files(fds: tuple[str, ...]) -> dict[Ident, list[tuple[int, str]]]:
    """``_open_files`` for the descriptors ``fds`` alone ("0": stdin, "1": stdout): one stat each per process
    instead of one per open file, for the questions that are about a shell pipeline's links."""
    out: dict[Ident, list[tuple[int, str]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in out:
                out[ident].append((int(name), fd))
            else:
                out[ident] = [(int(name), fd)]
    return out


def _mode(pid: int, fd: str) -> int | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE
    except (OSError, ValueError, IndexError):
        pass
    return None


def _writes(pid: int, fd: str) -> bool:
    return _mode(pid, fd) in (os.O_WRONLY, os.O_RDWR)


def _reads(pid: int, fd: str) -> bool:
    return _fifo(pid, fd) and _mode(pid, fd) in (os.O_RDONLY, os.O_RDWR)


def _writes_pipe(pid: int, fd: str) -> bool:
    return _fifo(pid, fd) and _writes(pid, fd)


def _fifo(pid: int, fd: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(f"/proc/{pid}/fd/{fd}").st_mode)
    except OSError:
        return False
