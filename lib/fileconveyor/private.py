"""What only its owner may read: state files, work directories, logs, config files holding secrets.

State files hold every path and event of a tree (file names of a site not yet published, a stage's queue), work
directories hold processed files before they are public, the log names them all, and a config file may hold
passwords.  So File Conveyor creates them owner-only (files 0600, directories 0700) whatever the umask, and
tightens files of its own that an older version (or a umask of 022) left readable by others, saying so at -v;
and a named FIFO of ours that lines go through is made unreadable by others (``fifo_unreadable``).
Directories are only tightened when they are File Conveyor's own (its state directory and what is beneath it,
fc-process's ``*.work``): a directory a user named may be shared (``/tmp``) and is only ever created 0700.

The synced-files database is not private: web servers read it (README, fc-record), so records.py keeps the
umask's mode for it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from .report import log_info

FILE_MODE = 0o600
DIR_MODE = 0o700
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def secret_problem(path: str | os.PathLike[str], st: os.stat_result) -> str | None:
    """Why a file holding a secret (a password, a key) with status ``st`` may not be used, or None.

    fc-transport's ``--config``, fc-conveyor's config.xml and the broker's key and credential files all refuse such
    a file (exit 3).  Two ways a secret is not ours alone: a file other users can read is everyone's, and a file
    another user owns is theirs to rewrite (as root, a config owned by www-data would let whoever runs the web
    server choose what root deletes and where it logs in; OpenSSH's StrictModes refuses such files alike).  The
    owner must be the user running File Conveyor, or root."""
    shown = os.fspath(path)
    if st.st_mode & _OTHERS:
        return (
            f"{shown} holds a password or key and other users can access it (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {shown}"
        )
    if st.st_uid not in (os.geteuid(), 0):
        return (
            f"{shown} holds a password or key and belongs to another user (uid {st.st_uid}), who could rewrite it; "
            f"run: chown {_user_name(os.geteuid())} {shown}"
        )
    return None


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def tighten(path: str | os.PathLike[str], mode: int = FILE_MODE) -> None:
    """Take group and other access away from ``path`` when it is ours (an older version made it 0644/0755)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not st.st_mode & _OTHERS or st.st_uid != os.geteuid() or stat.S_ISLNK(st.st_mode):
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return  # a device named as an output (/dev/null, owned by root): never ours to change
    with contextlib.suppress(OSError):  # a read-only mount: it stays as it is, as before
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
        log_info(
            __name__,
            "made %s owner-only (mode %o, was %o): it holds File Conveyor's private data",
            os.fspath(path),
            stat.S_IMODE(st.st_mode) & mode,
            stat.S_IMODE(st.st_mode),
        )


def foreign_problem(
    path: str | os.PathLike[str], st: os.stat_result | None = None, *, root_ok: bool = False
) -> str | None:
    """Why an existing file meant to hold our private data (a state file, its -wal or -shm; fc-conveyor's log,
    whose status ``st`` it has opened, with ``root_ok``) may not be used, or None (ours, or not there).  In a
    directory others may write (``--state /tmp/x.db``) another user can make it first, and it stays theirs: they
    could then write its ``acks`` table (a reader's acknowledgement: the writer forgets lines no reader has, and
    fc-consume acknowledges to the broker messages nobody applied), its outbox or its queue, and read every path
    in it."""
    if st is None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
    if st.st_uid != os.geteuid() and not (root_ok and st.st_uid == 0):
        shown = os.fspath(path)
        return (
            f"{shown} belongs to another user (uid {st.st_uid}), who could rewrite it; remove it, or keep File "
            "Conveyor's files in a directory only you can write"
        )
    return None


def replace_file(path: str | os.PathLike[str], data: bytes, tmp: str | os.PathLike[str] | None = None) -> None:
    """Put ``data`` at ``path`` whole (mode 0600, a temporary file renamed over it), never writing through what
    is already there: in a directory others may write (/tmp, a shared state or run directory) the temporary name
    (``tmp``, default ``path`` + ".tmp": guessable) could be a symlink planted to make us truncate and overwrite
    another file (as root: any).  A leftover entry there is removed (the link itself) and the name made afresh."""
    tmp = tmp if tmp is not None else f"{os.fspath(path)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


class NotOurs(Exception):
    """What open_own found at a path: a symlink, another user's file, or no regular file (the message says)."""


def open_own(path: str | os.PathLike[str], flags: int) -> int:
    """Open (creating it 0600) a file of ours that we write into, such as a lock file that gets our pid: never
    through a symlink, and NotOurs when what is there belongs to another user or is no regular file.  In a
    directory others may write (``--state /tmp/x.db``), another user's link planted at its name made us truncate
    and overwrite the file it named (as root: any file), and a file of theirs could be locked by them for ever."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError:
        if os.path.islink(path):  # ELOOP, or EACCES for another user's link in a sticky directory
            raise NotOurs(f"{os.fspath(path)} is a symlink; remove it") from None
        raise
    st = os.fstat(fd)
    problem = foreign_problem(path, st)
    if problem is None and not stat.S_ISREG(st.st_mode):
        problem = f"{os.fspath(path)} is not a regular file; remove it"
    if problem:
        os.close(fd)
        raise NotOurs(problem)
    return fd


def sqlite_side_files(path: str | os.PathLike[str]) -> None:
    """Make the ``-wal`` and ``-shm`` of the SQLite database at ``path`` ours before SQLite opens them: created
    0600 here (never through a symlink), or, left by an earlier run (a -wal after a kill holds committed
    transactions: kept as it is), checked to be ours, regular and of one name; NotOurs says what is wrong.
    SQLite opens them by name when it opens the database, creating them if missing.  In a sticky directory others
    may write (``--state /tmp/x.db``), another user could make them in between a check and that open, or plant a
    hard link there: SQLite then took their WAL (frames they write become our state: an ``acks`` row that makes
    the writer forget lines) or wrote its frames into the linked file (as root: any file on that filesystem).
    Once they are ours, the sticky bit keeps others from replacing them; a stage's close leaves them
    (state.keep_wal_at_close), and where another connection closing last removes them the next State makes them
    again."""
    for side in _sides(path):
        fd = open_own(side, os.O_RDWR)
        try:
            st = os.fstat(fd)
            if problem := _side_problem(side, st, os.geteuid()):
                raise NotOurs(problem)
            if st.st_mode & _OTHERS:  # an older version's, made with the database's mode
                os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)


def sqlite_side_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the ``-wal`` or ``-shm`` already next to another process's SQLite database at ``path`` (a writer's
    state file, which a reader acknowledges to) may not be opened, or None: not a regular file of the database's
    owner with one name.  Only looked at, never made: ``path`` comes from a line's ``hop``."""
    try:
        owner = os.stat(path).st_uid
    except OSError:
        return None  # the open says what it finds
    for side in _sides(path):
        try:
            st = os.lstat(side)
        except OSError:
            continue
        if problem := _side_problem(side, st, owner):
            return problem
    return None


def _sides(path: str | os.PathLike[str]) -> tuple[str, str]:
    base = os.path.realpath(path)  # where SQLite puts them: next to the database a symlink names
    return f"{base}-wal", f"{base}-shm"


def _side_problem(side: str, st: os.stat_result, owner: int) -> str | None:
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        return f"{side} is a symlink or not a regular file; remove it"
    if st.st_uid != owner:
        return f"{side} belongs to another user (uid {st.st_uid}) than its database, who could rewrite it; remove it"
    if st.st_nlink != 1:
        return (
            f"{side} has {st.st_nlink} names (a hard link to it was made): SQLite would write into that other file "
            f"too; remove the other names (find / -xdev -samefile {side})"
        )
    return None


def read_own(path: str | os.PathLike[str], limit: int = 1 << 20) -> bytes:
    """The bytes (at most ``limit``) of a small file File Conveyor wrote for itself and reads back, such as a
    state directory's ``config.json``: only a regular file, not through a symlink, ours or root's, that no other
    user may write; NotOurs says what is wrong, FileNotFoundError when there is none.  Its content decides what
    we do (config.json: which state directory fc-conveyor takes over and renames), and a link there could name
    any file: another user's (their choice of content), a FIFO (the read waited for ever: fc-conveyor never
    started), /dev/zero (read to the end of memory)."""
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        if os.path.islink(path):  # ELOOP, or EACCES for another user's link in a sticky directory
            raise NotOurs(f"{shown} is a symlink; remove it (File Conveyor writes it itself)") from None
        raise
    try:
        st = os.fstat(fd)
        problem = foreign_problem(path, st, root_ok=True)
        if problem is None and not stat.S_ISREG(st.st_mode):
            problem = f"{shown} is not a regular file; remove it (File Conveyor writes it itself)"
        elif problem is None and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = (
                f"{shown} can be written by other users (mode {stat.S_IMODE(st.st_mode):o}), who could choose "
                f"what it says; run: chmod go-w {shown}"
            )
        if problem:
            raise NotOurs(problem)
        chunks, left = [], limit
        while left and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_append(path: str | os.PathLike[str]) -> int:
    """Open (creating it 0600) a file we append to at a path the user named: fc-conveyor's log, a stage's
    ``--output FILE``.  Symlinks on its way are followed only as the kernel's fs.protected_symlinks would
    (link_problem), and a file another user owns (root aside: /dev/null) is refused: NotOurs.  In /tmp another
    user's link made us append to whatever it named (as root: any file)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    for follow in (False, True):
        if problem := link_problem(path):
            raise NotOurs(problem)
        try:
            fd = os.open(path, flags | (0 if follow else os.O_NOFOLLOW), FILE_MODE)
            break
        except OSError:
            if follow or not os.path.islink(path):  # ELOOP, or EACCES for another user's link in a sticky dir
                raise
            # a symlink (planted since the check, maybe): checked again, then followed; once it passed the check
            # nobody else may replace it
    problem = foreign_problem(path, os.fstat(fd), root_ok=True)
    if problem:
        os.close(fd)
        raise NotOurs(problem)
    return fd


def link_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a file of ours at ``path`` (fc-conveyor's log, appended to as root) may not be opened through the
    symlinks on its way, or None.  The kernel's fs.protected_symlinks, for every directory: a symlink is followed
    only when its directory is not writable by others (group or other write bits, or another owner than us or
    root), or is sticky (``/tmp``) and the link belongs to us or to the directory's owner.  Otherwise anyone who
    can write there could plant a link, and we would append to whatever it points at (``/etc/shadow``).
    Links that vanish meanwhile are no problem of this check: the open that follows says what it finds."""
    todo = list(reversed(Path(os.getcwd(), path).parts[1:]))
    here, followed = "/", 0
    while todo:
        name = todo.pop()
        if name == "..":
            here = os.path.dirname(here)  # ``here`` has no symlinks: its parent is the real one
            continue
        step = os.path.join(here, name)
        try:
            st = os.lstat(step)
        except OSError:
            return None  # missing: made by us (private_dir, O_CREAT), not followed
        if not stat.S_ISLNK(st.st_mode):
            here = step
            continue
        try:
            dir_st, target = os.stat(here), os.readlink(step)
        except OSError:
            return None
        others = bool(dir_st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or dir_st.st_uid not in (os.geteuid(), 0)
        sticky_ok = bool(dir_st.st_mode & stat.S_ISVTX) and st.st_uid in (dir_st.st_uid, os.geteuid())
        if others and not sticky_ok:
            return (
                f"{os.fspath(path)}: will not follow symlink {step} (owner uid {st.st_uid}): its directory {here} "
                f"can be written by others (mode {stat.S_IMODE(dir_st.st_mode):o}, owner uid {dir_st.st_uid}), "
                "who could point it anywhere; name the link's target instead, or keep the link in a directory "
                "only you can write"
            )
        followed += 1
        if followed > 40:
            return None  # a loop: the open fails with ELOOP
        if target.startswith("/"):
            here = "/"
        todo.extend(reversed([part for part in Path(target).parts if part != "/"]))
    return None


def dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why directory ``path`` may not hold our state files (and fc-conveyor's FIFOs), or None.  Whoever may rename
    and create entries there can swap a state file, its -wal or lock for their own between two opens (the file
    checks, foreign_problem and open_own, see one moment): another user owning the directory, or anyone when it
    is world-writable without the sticky bit.  /tmp (sticky) and a group-writable directory (shared on purpose)
    are left to those file checks."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    shown = os.fspath(path)
    if st.st_uid not in (os.geteuid(), 0):
        return (
            f"directory {shown} belongs to another user (uid {st.st_uid}), who could replace what File Conveyor "
            "keeps there; use a directory of yours"
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return (
            f"directory {shown} can be written by anyone (mode {stat.S_IMODE(st.st_mode):o}) and is not sticky: "
            f"anyone could replace what File Conveyor keeps there; run: chmod o-w {shown}"
        )
    return None


def fifo_unreadable(path: str | os.PathLike[str] | None = None, fd: int | None = None) -> None:
    """Take read access away from group and others on a named FIFO of ours (by ``path`` or ``fd``) that our
    lines go through.  Another user's process reading it takes lines out unseen, and our reader, finding a gap in
    its writer's seqs, takes them for lines a filter in between dropped and acknowledges past them: those files
    are never sent.  Write access is left as it is: a reader refuses to acknowledge through a FIFO others may
    write (ack_check.others_may_write), which a process of theirs may have opened already, so it must still see
    it.  Anything else (a pipe, 0600 already; a file, a terminal, another user's FIFO) is left alone."""
    if fd is not None:
        _fifo_unreadable(fd, f"fd {fd}")
        return
    if path is None:
        return
    # The inode checked is the inode changed: by path, a file swapped in after the check (in a directory others
    # may write) had its mode changed, as root any file.  O_PATH opens no end of the FIFO (an O_RDONLY open would
    # be a reader: a writer blocked in its open would start writing to us); its descriptor cannot be fchmod-ed,
    # so the change goes through /proc/self/fd, which names that very inode.  A symlink is followed as the open
    # of the FIFO that comes next follows it: the FIFO changed is the one our lines go through.
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _fifo_unreadable(pfd, os.fspath(path), by_proc=True)
    finally:
        os.close(pfd)


def _fifo_unreadable(fd: int, shown: str, by_proc: bool = False) -> None:
    try:
        st = os.fstat(fd)
    except OSError:
        return
    readable = stat.S_IRGRP | stat.S_IROTH
    if not stat.S_ISFIFO(st.st_mode) or not st.st_mode & readable or st.st_uid != os.geteuid():
        return
    mode = stat.S_IMODE(st.st_mode) & ~readable
    with contextlib.suppress(OSError):  # a read-only mount, no /proc: as before (the reader checks: others_reading)
        if by_proc:
            os.chmod(f"/proc/self/fd/{fd}", mode)
        else:
            os.fchmod(fd, mode)
        log_info(__name__, "made FIFO %s unreadable by others (mode %o, was %o)", shown, mode, st.st_mode & 0o777)


def private_file(path: str | os.PathLike[str]) -> None:
    """Make sure ``path`` exists with mode 0600 (created so, never through a symlink), or is tightened to it (a
    SQLite database's ``-wal`` and ``-shm``: sqlite_side_files)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return
    except OSError:
        return  # the caller's own open reports it, with its own words
    os.close(fd)


def private_dir(path: str | os.PathLike[str], *, ours: bool | None = None) -> None:
    """Create directory ``path`` (and missing parents) with mode 0700; an existing one is tightened when it is
    File Conveyor's own: ``ours``, or by default when it is its state directory or beneath it."""
    p = Path(path)
    missing = []
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another stage
            d.mkdir(DIR_MODE)
    if not missing and (ours if ours is not None else _in_state_dir(Path(path))):
        tighten(path, DIR_MODE)


def _in_state_dir(path: Path) -> bool:
    from .state import default_state_dir  # state.py uses this module

    top = default_state_dir().absolute()
    return path.absolute() == top or path.absolute().is_relative_to(top)
