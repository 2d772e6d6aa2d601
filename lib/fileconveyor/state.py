"""A stage's state file: one SQLite database per running stage.

- WAL journal: readers (fc-record's consumers, --status) never block the writer,
  and a kill -9 at any moment leaves the last committed transaction intact.
- synchronous=NORMAL: in WAL mode a process crash loses nothing that was
  committed; only a power cut may lose the last transactions.  FC_SYNC=FULL
  trades speed for that too.
- Migrations are an append-only list per state file (``migrate``, the one
  mechanism every database of File Conveyor uses): each an SQL script, or a
  function for a step that depends on what an older file holds.  PRAGMA
  user_version records how many have run; a stage's own tables in a shared
  file (a *part*) count in ``schema_versions`` instead.  Never change what a
  released migration does to a file: append a new one.
- An exclusive lock file next to the database keeps a second instance of the
  same stage from working on the same state.
- A page cache of CACHE_KIB per connection, not SQLite's 2 MB (``small_cache``).
- Closed without a checkpoint (``keep_wal_at_close``): what the WAL holds at the
  end stays there, as after a kill -9, for the next run to read; the end of a
  run, on a pipeline's critical path, spends no fsync on it.
- Owner-only (private.py): the file, its -wal/-shm, the lock and a directory
  made for them.  The -wal and -shm are made (or checked) by us before SQLite
  opens them by name (private.sqlite_side_files): in /tmp another user's file
  or hard link there was used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import private
from .errors import RetryableError, StateBusy, StateError

# bytes go into SQLite as BLOBs as they are, yet the sqlite3 module treats each bytes parameter as a type to adapt:
# two failed attribute look-ups and an exception raised and dropped, per parameter (fc-transport binds about three
# per file, every stage its outbox blob, paths, lines).  An adapter registered for bytes (bytes(b) is b itself) is
# found at once: 1.56 -> 1.17 us per row of three bytes parameters (issue 18).  It applies to the whole process, to
# exact bytes only, and stores the same BLOB.
sqlite3.register_adapter(bytes, bytes)

# An SQL script, or a function that runs statements (never executescript: it commits) in the migration's transaction.
Migration = str | Callable[[sqlite3.Connection], None]

# SQLite's page cache per connection, in KiB.  Its default, 2,000 KiB, fills up as a stage runs (state files of
# 1-7 MB after 10,000 files) and is never given back: 2 MB of RSS per connection, in each of the five stages of a
# rule (issue 18: 150 MB for them all).  A page not cached is a pread from the OS's page cache, which holds these
# small files anyway: 10,000 files cost fc-transport 760 more preads with 512 KiB, fc-record 1,460 (strace -c).
CACHE_KIB = 512


def small_cache(db: sqlite3.Connection) -> None:
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")


# sqlite3.h's SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE (SQLite 3.16.2 on): the connection that closes last checkpoints
# the WAL into the database and deletes it, with an fsync of each (and of the directory when the WAL was new).
_NO_CKPT_ON_CLOSE = 1006
_db_config: Any = False  # sqlite3_db_config of the library sqlite3 uses, None: not to be had (False: not looked up)


def _sqlite3_db_config() -> Callable[..., int] | None:
    """sqlite3_db_config from the SQLite library the sqlite3 module itself uses (looked up through its extension
    module, whose dependencies dlsym searches: never another copy of the library), for Pythons before 3.12, which
    lack Connection.setconfig; None where it cannot be had safely, or would cost ctypes' import: only a stage that
    has it already (fc-transport, fc-record and fc-process, for openat2) uses it.  The others (fc-watch, fc-filter)
    end before the stages after them, off a pipeline's critical path, and keep SQLite's checkpoint at close."""
    global _db_config
    if _db_config is False:
        ctypes = sys.modules.get("ctypes")
        if ctypes is None:
            return None  # (not remembered: a later close may find it imported)
        _db_config = None
        # the handle is read from the connection object (CPython 3.10 and 3.11: its first field after the object
        # header), so only there; and only on Linux, where a variadic C function takes its arguments as ctypes
        # passes them (no argtypes) on x86-64 and arm64 alike: Apple's arm64 passes them on the stack instead
        if sys.platform == "linux" and sys.implementation.name == "cpython" and (3, 10) <= sys.version_info < (3, 12):
            import _sqlite3

            with contextlib.suppress(OSError, AttributeError):
                fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_db_config
                fn.restype = ctypes.c_int
                _db_config = fn
    return _db_config  # type: ignore[return-value]


def keep_wal_at_close(db: sqlite3.Connection) -> bool:
    """Have ``db`` close without checkpointing (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE): what its WAL holds then stays in
    it, committed, as after a kill -9 at that moment, which every state file already survives; the next connection
    reads it from there (recovery: the WAL read once, no fsync) and a later checkpoint moves it.  A state file's
    close at the end of a run spent two or three fsyncs and an unlink of a WAL of megabytes on it, on the critical
    path of a pipeline (fc-transport: 40-90 ms, plus 30 ms for its writer's file, which its acknowledgements had
    written to last).  The promise of synchronous=NORMAL is unchanged: a commit survives a killed process, and only
    a power cut may lose the last ones (then after the end of a run too, not only during it).  False (the usual
    checkpoint at close, as before) where it cannot be asked."""
    if not isinstance(db, sqlite3.Connection):
        return False
    setconfig = getattr(db, "setconfig", None)
    try:
        if setconfig is not None:  # Python 3.12 on
            setconfig(_NO_CKPT_ON_CLOSE, True)
            return True
        fn = _sqlite3_db_config()
        if fn is None:
            return False
        ctypes = sys.modules["ctypes"]
        handle = ctypes.c_void_p.from_address(id(db) + object.__basicsize__).value  # pysqlite_Connection.db
        if not handle:
            return False  # closed
        now = ctypes.c_int(-1)
        ok = fn(ctypes.c_void_p(handle), ctypes.c_int(_NO_CKPT_ON_CLOSE), ctypes.c_int(1), ctypes.byref(now))
        return ok == 0 and now.value == 1
    except sqlite3.Error:
        return False


# The lock is on the open file, which a forked child shares: a scan worker that
# outlived a killed fc-watch would keep the state file locked.  Children drop it.
_LOCK_FDS: set[int] = set()


def _drop_locks_in_child() -> None:
    for fd in _LOCK_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


def default_state_dir() -> Path:
    """Where state files live unless --state says otherwise."""
    env = os.environ.get("FC_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "fileconveyor"


def _command(pid: str) -> str:
    """``: fc-transport --to ...``, what process ``pid`` runs, when /proc tells (else "")."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (OSError, ValueError):
        return ""
    from .delivery.nats_hop import hide_secrets as broker_secrets
    from .records.pg_connect import hide_secrets  # not at the top: records imports this module

    # another's --db postgresql://user:password@... or nats://user:password@... (or token@) never shown
    argv = [broker_secrets(hide_secrets(a)) for a in argv]
    # the interpreter and the launcher's path say little: from the fc-* command on
    start = next((i for i, a in enumerate(argv) if os.path.basename(a).startswith("fc-")), 0)
    text = " ".join([os.path.basename(argv[start]), *argv[start + 1 :]]) if argv else ""
    return f": {text[:200]}" if text else ""


def lock_holder(path: Path) -> int | None:
    """The pid of the process that has the state file at ``path`` open, else None.
    For supervisors: a stage cannot start while another process holds its state."""
    lock_path = str(path) + ".lock"
    try:
        # a FIFO planted there must not hang us, nor a symlink lead elsewhere: a stage never locks through either
        # (State._lock); the path may come from a writer's acks table (delivery/acks_admin.py)
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # never opened, or not readable: nobody we can see holds it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            # the file is the holder's to write, and may be anyone's (a reader's path from an acks table):
            # str.isdigit() takes '²', which int() refuses
            return int(text) if text.isascii() and text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# Commits between two checkpoints of a stage's state file (Checkpointer).  Not more: what was not checkpointed at
# the end stays in the WAL (keep_wal_at_close), which the next run reads whole when it opens the file; at 100,
# fc-transport's ~40 commits of 10,000 small files were all left to the end (then checkpointed by the close: 40-90 ms
# on the critical path of a pipeline).
CHECKPOINT_COMMITS = 10
CHECKPOINT_LOOK = 0.5  # seconds between the checkpointing thread's looks


class Checkpointer:
    """Checkpoints a state file's WAL on a thread of its own.  By default SQLite does it inside the commit that
    crosses 1,000 pages, with two or three fsyncs (10-35 ms on a loaded disk): in the main loop of a stage, so the
    live file committed then waited that long (fc-transport: about every 130 files).  A passive checkpoint on
    another connection lets commits go on meanwhile; durability is the same (synchronous=NORMAL: the WAL is
    synced before a checkpoint, the database after)."""

    def __init__(self, path: Path, sync: str):
        self.commits = 0
        self._done = 0
        self._stop = threading.Event()
        self._conn = sqlite3.connect(path, timeout=0.5, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA synchronous={sync}")
        self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(CHECKPOINT_LOOK):
            if self.commits - self._done >= CHECKPOINT_COMMITS:
                self._done = self.commits
                with contextlib.suppress(sqlite3.Error):  # busy, or the disk: the next look tries again
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        keep_wal_at_close(self._conn)  # (the stage's own connection is open still: no checkpoint anyway)
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()


class State:
    """An open state file.  Use as a context manager; ``db`` is the connection.  ``checkpoints``: a thread
    checkpoints the WAL (Checkpointer) instead of the commits themselves; not for a process that forks (fc-watch's
    scan workers: a thread holding SQLite's locks at a fork would leave them held in the child)."""

    def __init__(
        self,
        path: Path,
        migrations: Sequence[Migration],
        *,
        lock: bool = True,
        parts: Mapping[str, Sequence[Migration]] | None = None,
        checkpoints: bool = False,
    ):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._checkpointer: Checkpointer | None = None
        try:
            private.private_dir(self.path.parent)  # owner-only: a state file names every file of the tree
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.path.parent}: {exc.strerror}") from None
        if problem := private.dir_problem(self.path.parent):
            raise StateError(f"state file {self.path}: {problem}")
        if lock:
            self._lock()
        private.private_file(self.path)  # before SQLite makes it 0644
        try:
            # another user made it first (in a directory others may write)
            if problem := private.foreign_problem(self.path):
                raise private.NotOurs(problem)
            private.sqlite_side_files(self.path)  # -wal and -shm ours before SQLite opens them
        except (private.NotOurs, OSError) as exc:
            State.close(self)  # the lock only (a subclass's close expects an open file)
            why = f"cannot open {exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else exc
            raise StateError(f"state file {why}") from None
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if os.environ.get("FC_SYNC", "").upper() == "FULL" else "NORMAL"
            self.db.execute(f"PRAGMA synchronous={sync}")
            self.db.execute("PRAGMA busy_timeout=30000")
            small_cache(self.db)
            migrate(self.db, migrations, f"state file {self.path}")
            for name, part in (parts or {}).items():
                migrate(self.db, part, f"state file {self.path}", part=name)
            if checkpoints:
                self.db.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = Checkpointer(self.path, sync)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise translate(exc, self.path) from None

    def _lock(self) -> None:
        lock_path = str(self.path) + ".lock"
        try:
            fd = private.open_own(lock_path, os.O_RDWR)  # truncated and written below: never through a symlink
        except private.NotOurs as exc:
            raise StateError(f"lock file {exc}") from None
        except OSError as exc:
            raise StateError(f"cannot open lock file {lock_path}: {exc.strerror}") from None
        private.tighten(lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                # Most often the same pipeline started twice.  A --state of its own would make the second copy
                # send everything again: the fix is to stop one of them.
                raise StateBusy(
                    f"state file {self.path} is in use by another process (pid {holder}{_command(holder)}): this "
                    f"stage is already running with these settings; stop that one first (kill {holder}) or let "
                    "it finish"
                ) from None
            raise StateError(f"cannot lock {lock_path}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        _LOCK_FDS.add(fd)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on error, SQLite errors translated."""
        with transaction(self.db, self.path) as db:
            yield db
        if self._checkpointer is not None:
            self._checkpointer.commits += 1

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        db = getattr(self, "db", None)
        if db is not None:
            keep_wal_at_close(db)  # the end of a run waits for no checkpoint: the next run reads the WAL
            with contextlib.suppress(sqlite3.DatabaseError):
                db.close()
            self.db = None  # type: ignore[assignment]
        if self._lock_fd is not None:
            _LOCK_FDS.discard(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration], what: str, part: str | None = None) -> None:
    """Run the migrations ``db`` has not had yet, each in its own transaction: a crash midway leaves the previous
    version, never half of the next.  PRAGMA user_version counts them, or, for a ``part`` (the tables of one stage
    in a state file whose main list is the delivery tables'), its row in ``schema_versions``."""
    if part is not None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_versions(name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_versions WHERE name=?", (part,)).fetchone()
        version = row[0] if row else 0
    else:
        (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(migrations):
        schema = f"{part} schema" if part is not None else "schema"
        raise StateError(
            f"{what} was written by a newer File Conveyor "
            f"({schema} {version}, this one knows {len(migrations)}); upgrade, or use another file"
        )
    for number in range(version, len(migrations)):
        step = migrations[number]
        if part is not None:
            done = (
                f"INSERT INTO schema_versions(name, version) VALUES ({_sql_text(part)}, {number + 1}) "
                "ON CONFLICT(name) DO UPDATE SET version=excluded.version"
            )
        else:
            done = f"PRAGMA user_version={number + 1}"
        try:
            if isinstance(step, str):
                # executescript commits first, so the transaction is part of the script
                db.executescript(f"BEGIN IMMEDIATE;{step};{done};COMMIT;")
            else:
                db.execute("BEGIN IMMEDIATE")
                step(db)
                db.execute(done)
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, path: Path, what: str = "state file") -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error, SQLite errors translated."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        raise translate(exc, path, what) from None
    try:
        yield db
    except BaseException:
        with contextlib.suppress(sqlite3.DatabaseError):
            db.execute("ROLLBACK")
        raise
    try:
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        with contextlib.suppress(sqlite3.DatabaseError):
            db.execute("ROLLBACK")
        raise translate(exc, path, what) from None


def translate(exc: sqlite3.DatabaseError, path: Path | str, what: str = "state file") -> Exception:
    """Turn an SQLite error into one of ours, keeping "retry later" apart from "fix it"."""
    msg = str(exc)
    if "disk is full" in msg or "disk I/O error" in msg:
        return RetryableError(f"{what} {path}: {msg} (free some space; nothing committed was lost)")
    if "locked" in msg or "busy" in msg:
        return RetryableError(f"{what} {path}: {msg}")
    return StateError(f"{what} {path}: {msg}")
