"""Walking a source tree in the order its state rows are kept.

State rows are keyed by the path relative to the root with "/" replaced by NUL
(see ``to_key``).  NUL sorts before every byte a name can hold, so a depth-first
walk that visits each directory's entries sorted by name produces keys in the
same order as ``ORDER BY key``: the scan can then compare the tree with the
state in one merge pass, holding neither in memory.
"""

from __future__ import annotations

import fnmatch
import operator
import os
import re
import stat as stat_mod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field


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


@dataclass
class Filters:
    """What discovery leaves out: ignored directory names and exclude globs.

    A glob without "/" is matched against the base name of every file and
    directory (``*.tmp``, ``.#*``); a glob with "/" against the whole path relative
    to the root (``cache/*``; ``*`` there also crosses "/").  An excluded directory
    is not walked and not watched, so it costs nothing.
    """

    ignore_dirs: frozenset[bytes] = frozenset()
    name_globs: Sequence[str] = ()
    path_globs: Sequence[str] = ()
    _name_re: re.Pattern[bytes] | None = field(default=None, init=False, repr=False)
    _path_re: re.Pattern[bytes] | None = field(default=None, init=False, repr=False)

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


@dataclass(slots=True)
class WalkHooks:
    """Callbacks a walk makes: on_dir for each directory entered (live backends add
    their watch there, before listing it, so nothing created meanwhile is missed),
    on_error once per unreadable directory."""

    on_dir: Callable[[bytes, bytes], object] | None = None
    on_error: Callable[[bytes, OSError], None] | None = None
    on_progress: Callable[[int, int], None] | None = None


def walk(
    root: bytes,
    start: bytes,
    filters: Filters,
    follow_symlinks: bool = False,
    hooks: WalkHooks | None = None,
    lo: bytes = b"",
    hi: bytes | None = None,
) -> Iterator[tuple[bytes, int, int, int]]:
    """Yield ``(key, size, mtime_ns, ino)`` for every regular file below ``root/start``
    whose key is in [lo, hi), in key order.

    Symlinks to files count as files (their target's metadata); symlinks to
    directories are followed only with ``follow_symlinks``, and never into a
    directory that is already one of their ancestors (no loops).  Directories
    whose whole subtree lies outside [lo, hi) are not listed, which lets several
    walkers share one tree by key range.
    """
    hooks = hooks or WalkHooks()
    on_dir, on_error, on_progress = hooks.on_dir, hooks.on_error, hooks.on_progress
    check = not filters.empty
    skip_dir, skip_file = filters.skip_dir, filters.skip_file
    S_ISREG, S_ISDIR = stat_mod.S_ISREG, stat_mod.S_ISDIR
    base = root.rstrip(b"/") + b"/" if root != b"/" else b"/"

    def listing(rel_dir: bytes) -> list[os.DirEntry[bytes]] | None:
        path = base + rel_dir if rel_dir else root
        if on_dir is not None:
            on_dir(rel_dir, path)
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            if on_error is not None:
                on_error(rel_dir, exc)
            return None
        entries.sort(key=_name)
        return entries

    start = start.strip(b"/")
    try:
        top_st = os.stat(base + start if start else root)
    except OSError:
        return
    if not S_ISDIR(top_st.st_mode):
        return
    first = listing(start)
    if first is None:
        return
    dev = top_st.st_dev
    # Each frame: (entries iterator, rel prefix ending in "/" or b"", key prefix, ancestors).
    ancestors: frozenset[tuple[int, int]] = frozenset({(dev, top_st.st_ino)})
    pre = start + b"/" if start else b""
    stack = [(iter(first), pre, to_key(pre), ancestors)]
    dirs = files = 0
    while stack:
        it, rel_pre, key_pre, anc = stack[-1]
        for entry in it:
            name = entry.name
            key = key_pre + name
            if hi is not None and key >= hi:
                stack.clear()  # entries come in key order: everything after is out of range too
                break
            try:
                if entry.is_file(follow_symlinks=False):  # the common case first: one stat
                    if key < lo or (check and skip_file(name, rel_pre + name)):
                        continue
                    st = entry.stat(follow_symlinks=False)
                elif entry.is_dir(follow_symlinks=False):
                    rel = rel_pre + name
                    if key + b"\x01" <= lo or (check and skip_dir(name, rel)):
                        continue
                    sub = listing(rel)
                    if sub is not None:
                        dirs += 1
                        sub_anc = anc | {(dev, entry.inode())} if follow_symlinks else anc
                        stack.append((iter(sub), rel + b"/", key + b"\0", sub_anc))
                        break
                    continue
                elif entry.is_symlink():
                    st = os.stat(entry.path)  # follows; a dangling link raises and is skipped
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
                        sub = listing(rel)
                        if sub is not None:
                            stack.append((iter(sub), rel + b"/", key + b"\0", anc | {ident}))
                            break
                        continue
                    if key < lo or not S_ISREG(st.st_mode) or (check and skip_file(name, rel_pre + name)):
                        continue
                else:
                    continue  # sockets, FIFOs, devices: not files to sync
            except OSError:
                continue  # vanished between listing and stat: not a file any more
            files += 1
            yield key, st.st_size, st.st_mtime_ns, st.st_ino
            if on_progress is not None and not files & 1023:
                on_progress(files, dirs)
        else:
            stack.pop()
    if on_progress is not None:
        on_progress(files, dirs)


_name = operator.attrgetter("name")
