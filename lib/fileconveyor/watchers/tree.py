"""Walking a source tree in the order its state rows are kept.

State rows are keyed by the path relative to the root with "/" replaced by NUL
(see ``to_key``).  NUL sorts before every byte a name can hold, so a depth-first
walk that visits each directory's entries sorted by name produces keys in the
same order as ``ORDER BY key``: the scan can then compare the tree with the
state in one merge pass, holding neither in memory.
"""

from __future__ import annotations

import errno
import fnmatch
import operator
import os
import re
import stat as stat_mod
import sys
from collections.abc import Callable, Iterator, Sequence

from ..plain import Value
from .links import link_inside, refused_dir, refused_message, within


def to_key(rel: bytes) -> bytes:
    return rel.replace(b"/", b"\0")


def to_rel(key: bytes) -> bytes:
    return key.replace(b"\0", b"/")


def subtree_range(rel_dir: bytes) -> tuple[bytes, bytes | None]:
    """The [low, high) key range holding every file below directory ``rel_dir``
    (high None: no upper bound)."""
    if not rel_dir:
        return b"", None
    k = to_key(rel_dir)
    return k + b"\0", k + b"\x01"


class Filters(Value):
    """What discovery leaves out: ignored directory names and exclude globs.

    A glob without "/" is matched against the base name of every file and
    directory (``*.tmp``, ``.#*``); a glob with "/" against the whole path relative
    to the root (``cache/*``; ``*`` there also crosses "/").  An excluded directory
    is not walked and not watched, so it costs nothing.
    """

    _fields = ("ignore_dirs", "name_globs", "path_globs")

    def __init__(
        self,
        ignore_dirs: frozenset[bytes] = frozenset(),
        name_globs: Sequence[str] = (),
        path_globs: Sequence[str] = (),
    ):
        self.ignore_dirs = ignore_dirs
        self.name_globs = name_globs
        self.path_globs = path_globs
        self._name_re: re.Pattern[bytes] | None = None
        self._path_re: re.Pattern[bytes] | None = None

    @classmethod
    def build(cls, ignore_dirs: Sequence[str], excludes: Sequence[str]) -> Filters:
        f = cls(
            ignore_dirs=frozenset(os.fsencode(d) for d in ignore_dirs if d),
            name_globs=[g for g in excludes if "/" not in g],
            path_globs=[g.strip("/") for g in excludes if "/" in g],
        )
        f._name_re = _compile(f.name_globs)
        f._path_re = _compile(f.path_globs)
        return f

    @property
    def empty(self) -> bool:
        return not (self.ignore_dirs or self._name_re or self._path_re)

    def skip_dir(self, name: bytes, rel: bytes) -> bool:
        return name in self.ignore_dirs or self.skip_file(name, rel)

    def skip_file(self, name: bytes, rel: bytes) -> bool:
        if self._name_re is not None and self._name_re.match(name):
            return True
        return self._path_re is not None and self._path_re.match(rel) is not None

    def skip_path(self, rel: bytes) -> bool:
        """True when ``rel`` or any directory above it is left out."""
        parts = rel.split(b"/")
        for i, name in enumerate(parts[:-1]):
            if self.skip_dir(name, b"/".join(parts[: i + 1])):
                return True
        return self.skip_file(parts[-1], rel)


def _compile(globs: Sequence[str]) -> re.Pattern[bytes] | None:
    if not globs:
        return None
    pattern = "|".join(f"(?:{fnmatch.translate(g)})" for g in globs)
    return re.compile(os.fsencode(pattern), re.DOTALL)


class WalkHooks:
    """Callbacks a walk makes: on_dir for each directory entered (live backends add
    their watch there, before listing it, so nothing created meanwhile is missed),
    on_error once per unreadable directory."""

    __slots__ = ("on_dir", "on_error", "on_progress")

    def __init__(
        self,
        on_dir: Callable[[bytes, bytes], object] | None = None,
        on_error: Callable[[bytes, OSError], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ):
        self.on_dir = on_dir
        self.on_error = on_error
        self.on_progress = on_progress


def walk(
    root: bytes,
    start: bytes,
    filters: Filters,
    follow_symlinks: bool = False,
    hooks: WalkHooks | None = None,
    lo: bytes = b"",
    hi: bytes | None = None,
) -> Iterator[tuple[bytes, int, int, int, int]]:
    """Yield ``(key, size, mtime_ns, ino, skipped)`` for every regular file below
    ``root/start`` whose key is in [lo, hi), in key order.

    Symlinks follow the rule of watchers/links.py: a link to a file inside counts as
    that file (its target's metadata, ``skipped`` 0); a link to a file outside is
    yielded with ``skipped`` 1 and the link's own metadata, to be reported as not
    published.  Symlinked directories are entered only with ``follow_symlinks``, never
    into one of their ancestors (no loops), nor into a directory that contains the root
    or /proc and its kind (links.refused_dir: reported through on_error).  Directories are opened relative to their
    parent's descriptor without following links, so a directory swapped for a symlink
    while the walk runs is not entered.  Directories whose whole subtree lies outside
    [lo, hi) are not listed, which lets several walkers share one tree by key range.
    """
    hooks = hooks or WalkHooks()
    on_dir, on_error, on_progress = hooks.on_dir, hooks.on_error, hooks.on_progress
    check = not filters.empty
    skip_dir, skip_file = filters.skip_dir, filters.skip_file
    S_ISREG, S_ISDIR, S_ISLNK = stat_mod.S_ISREG, stat_mod.S_ISDIR, stat_mod.S_ISLNK
    base = root.rstrip(b"/") + b"/" if root != b"/" else b"/"

    def listing(parent: int | None, name: bytes, rel_dir: bytes, ident: tuple[int, int] | None) -> Frame | None:
        """Open and list a directory (``ident``: a followed symlink's target, checked on
        the open directory); None when it is gone, unreadable or no longer the same."""
        path = base + rel_dir if rel_dir else root
        if on_dir is not None:
            on_dir(rel_dir, path)
        fd = -1
        try:
            flags = _DIR_FLAGS if ident is not None else _DIR_FLAGS | os.O_NOFOLLOW
            fd = os.open(name, flags, dir_fd=parent) if parent is not None else os.open(path, _DIR_FLAGS)
            if ident is not None and _ident(os.fstat(fd)) != ident:
                os.close(fd)
                return None  # the link changed since it was looked at: its own hint follows
            # entries keep the descriptor for their stat(): it stays open while they are used.
            # Listed by descriptor, names come as str: keys are the bytes.
            with os.scandir(fd) as it:
                entries = [(e.name.encode(_FS, "surrogateescape"), e) for e in it]
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            if exc.errno not in _GONE and on_error is not None:
                on_error(rel_dir, exc)
            return None
        entries.sort(key=_first)
        return fd, entries

    start = start.strip(b"/")
    opened = _open_start(root, start, follow_symlinks)
    if opened is None:
        return
    parent, start_name, top_ident, ancestors, bases = opened
    try:
        first = listing(parent, start_name, start, top_ident)
    finally:
        if parent is not None:
            os.close(parent)
    if first is None:
        return
    pre = start + b"/" if start else b""
    # Each frame: (descriptor, entries iterator, rel prefix ending in "/" or b"", key prefix,
    # ancestors, bases: the real paths a link may point beneath).
    stack = [(first[0], iter(first[1]), pre, to_key(pre), ancestors, bases)]
    dirs = files = 0
    try:
        while stack:
            fd, it, rel_pre, key_pre, anc, bases = stack[-1]
            for name, entry in it:
                key = key_pre + name
                if hi is not None and key >= hi:
                    for frame in stack:  # entries come in key order: everything after is out of range too
                        os.close(frame[0])
                    stack.clear()
                    break
                skipped = 0
                try:
                    if entry.is_file(follow_symlinks=False):  # the common case first: one stat
                        if key < lo or (check and skip_file(name, rel_pre + name)):
                            continue
                        st = entry.stat(follow_symlinks=False)
                        if not S_ISREG(st.st_mode):
                            # Replaced since it was listed (a link swapped in: its own lstat is no file's): left to
                            # the next look, which sees what it is.  Yielded, a link leading outside was reported a
                            # modified file, with the link's metadata.
                            continue
                    elif entry.is_dir(follow_symlinks=False):
                        rel = rel_pre + name
                        if key + b"\x01" <= lo or (check and skip_dir(name, rel)):
                            continue
                        sub = listing(fd, name, rel, None)
                        if sub is not None:
                            dirs += 1
                            sub_anc = anc | {_ident(os.fstat(sub[0]))} if follow_symlinks else anc
                            stack.append((sub[0], iter(sub[1]), rel + b"/", key + b"\0", sub_anc, bases))
                            break
                        continue
                    elif entry.is_symlink():
                        st = os.stat(entry.name, dir_fd=fd)  # follows; a dangling link raises and is skipped
                        if S_ISDIR(st.st_mode):
                            rel = rel_pre + name
                            ident = (st.st_dev, st.st_ino)
                            if (
                                not follow_symlinks
                                or ident in anc
                                or key + b"\x01" <= lo
                                or (check and skip_dir(name, rel))
                            ):
                                continue
                            real = os.path.realpath(base + rel)
                            why = refused_dir(real, bases)
                            if why is not None:
                                if on_error is not None:  # the one warning naming it
                                    on_error(rel, OSError(errno.ELOOP, refused_message(real, why)))
                                continue
                            sub = listing(fd, name, rel, ident)
                            if sub is not None:
                                sub_bases = bases if within(real, bases) else (*bases, real)
                                stack.append((sub[0], iter(sub[1]), rel + b"/", key + b"\0", anc | {ident}, sub_bases))
                                break
                            continue
                        if key < lo or not S_ISREG(st.st_mode) or (check and skip_file(name, rel_pre + name)):
                            continue
                        if not link_inside(base + rel_pre + name, bases):
                            st = entry.stat(follow_symlinks=False)  # the link's own: never the target's
                            if not S_ISLNK(st.st_mode):
                                # No link any more: the name was replaced since it was listed (a deploy putting
                                # a real file back); this lstat is of what is there now.  Taken as a skipped link,
                                # a real file was reported "symlink-outside-root" once, with its own metadata.
                                if not S_ISREG(st.st_mode):
                                    continue
                            else:
                                skipped = 1
                    else:
                        continue  # sockets, FIFOs, devices: not files to sync
                except OSError:
                    continue  # vanished between listing and stat: not a file any more
                files += 1
                yield key, st.st_size, st.st_mtime_ns, st.st_ino, skipped
                if on_progress is not None and not files & 1023:
                    on_progress(files, dirs)
            else:
                stack.pop()
                os.close(fd)
    finally:
        for frame in stack:
            os.close(frame[0])
    if on_progress is not None:
        on_progress(files, dirs)


Frame = tuple[int, list[tuple[bytes, os.DirEntry[str]]]]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _open_start(
    root: bytes, start: bytes, follow_symlinks: bool
) -> tuple[int | None, bytes, tuple[int, int] | None, frozenset[tuple[int, int]], tuple[bytes, ...]] | None:
    """Where a walk of ``root/start`` begins: the descriptor of start's parent (None for
    the root itself), start's name, the identity to check when it is a followed link,
    its ancestors and bases (see walk).  None when ``start`` is not a directory of the
    tree: gone, or reached through a symlink the rule does not follow."""
    try:
        top = os.stat(root)  # the root itself may be a symlink: the user named it
        if not stat_mod.S_ISDIR(top.st_mode):
            return None
        bases: tuple[bytes, ...] = (os.path.realpath(root),)
        ancestors = frozenset({(top.st_dev, top.st_ino)})
        if not start:
            return None, root, None, ancestors, bases
        parts = start.split(b"/")
        fd = os.open(root, _DIR_FLAGS)
    except (OSError, ValueError):
        return None
    path = root.rstrip(b"/")
    try:
        for i, name in enumerate(parts):
            path += b"/" + name
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            ident: tuple[int, int] | None = None
            if stat_mod.S_ISLNK(st.st_mode):
                st = os.stat(name, dir_fd=fd)
                ident = _ident(st)
                if not follow_symlinks or not stat_mod.S_ISDIR(st.st_mode) or ident in ancestors:
                    break
                real = os.path.realpath(path)
                if refused_dir(real, bases) is not None:
                    break  # the walk of the whole tree said why, once
                if not within(real, bases):
                    bases += (real,)
            elif not stat_mod.S_ISDIR(st.st_mode):
                break
            if follow_symlinks:
                ancestors |= {(st.st_dev, st.st_ino)}
            if i == len(parts) - 1:
                return fd, name, ident, ancestors, bases
            flags = _DIR_FLAGS if ident is not None else _DIR_FLAGS | os.O_NOFOLLOW
            nxt = os.open(name, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
            if ident is not None and _ident(os.fstat(fd)) != ident:
                break
    except (OSError, ValueError):
        pass
    os.close(fd)
    return None


_first = operator.itemgetter(0)
_FS = sys.getfilesystemencoding()  # what os.fsencode() does, without its call per name


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
