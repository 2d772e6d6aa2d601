"""fc-filter: the conditions of a File Conveyor rule's <filter>, combined with AND.

The conditions and how they differ from the original daemon (filter.py):

- paths: directories relative to the source root (``rel``), matched as whole path
  components and recursively: ``css`` covers ``css/a.css`` and ``css/x/b.css``, not
  ``precss/a.css`` (the original's substring test matched that too).  An absolute
  entry is compared with the absolute ``path`` instead; one that lies outside the
  source root of the events seen (``--paths /img`` for ``img`` under the root) is
  named in a warning, since it can match none of that source's files.
- extensions: the end of the base name after a dot, so ``tar.gz`` works;
  case-insensitive unless asked (the original was case-sensitive and single-part).
- ignored dirs: no directory component of ``rel`` may be one of them.
- pattern: Python regex, ``re.match`` on the absolute path: anchored at the start,
  not at the end, exactly as the original (so ``.*/...720...\\.[a-zA-Z]{3}$`` works
  as written and ``foo`` does not match ``/a/foo.txt``).
- size: ``min_size <= size <= max_size`` (inclusive; the original's ``minimum`` and
  ``maximum`` were strict).  Events without a size (``deleted``) always pass, so a
  deletion is never lost because the file's size is unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ... import events as E
from ...delivery.stage import Done, Item, Stage, StageContext
from ...errors import UsageError

# characters the original refused in list items; kept so a config.xml valid there is valid here
_FORBIDDEN = set('*"[]:;|=,<>')


def split_list(flag: str, text: str, *, no_slash: bool = False, no_dot: bool = False) -> list[str]:
    items = text.split(":")
    for item in items:
        if not item:
            raise UsageError(f"{flag} {text!r}: empty item (separate items with single colons)")
        bad = sorted(set(item) & (_FORBIDDEN | ({"/", "\\"} if no_slash else set())))
        if bad:
            raise UsageError(f"{flag} {text!r}: item {item!r} contains {''.join(bad)!r}")
        if no_dot and item.startswith("."):
            raise UsageError(f"{flag} {text!r}: write extensions without the dot ({item[1:]!r}, not {item!r})")
    return items


class Conditions:
    def __init__(
        self,
        paths: Sequence[str] = (),
        extensions: Sequence[str] = (),
        case_sensitive: bool = False,
        ignore_dirs: Sequence[str] = (),
        pattern: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
    ):
        self.paths = paths
        self.extensions = extensions
        self.case_sensitive = case_sensitive
        self.ignore_dirs = ignore_dirs
        self.pattern = pattern
        self.min_size = min_size
        self.max_size = max_size
        self._post_init()

    def _post_init(self) -> None:
        rel, absolute = [], []
        for p in self.paths:
            p = p.rstrip("/")
            (absolute if p.startswith("/") else rel).append(p.encode() if p else b"")
        self._rel_prefixes = tuple(p + b"/" for p in rel)
        self._abs_prefixes = tuple(p + b"/" for p in absolute)
        exts = [e if self.case_sensitive else e.lower() for e in self.extensions]
        self._suffixes = tuple("." + e for e in exts)
        self._ignored = frozenset(d.encode() for d in self.ignore_dirs)
        self._regex = None
        if self.pattern is not None:
            if not self.pattern:
                raise UsageError("--pattern: empty regular expression")
            try:
                self._regex = re.compile(self.pattern)
            except re.error as exc:
                raise UsageError(f"--pattern {self.pattern!r}: not a valid regular expression: {exc}") from None
        # the conditions after the extension look at the path's bytes (or rel's): without them, none is made
        self._needs_bytes = bool(self._rel_prefixes or self._abs_prefixes or self._ignored or self._regex)
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise UsageError(
                f"--min-size {self.min_size} is larger than --max-size {self.max_size}: nothing would pass"
            )

    @property
    def has_absolute(self) -> bool:
        return bool(self._abs_prefixes)

    def outside(self, root: bytes) -> list[str]:
        """The absolute entries that cannot match any file under ``root``."""
        base = root.rstrip(b"/") + b"/"
        return [p[:-1].decode("utf-8", "surrogateescape") for p in self._abs_prefixes if not p.startswith(base)]

    def matches(self, ev: dict) -> bool:
        text = ev.get("path") if "path_b64" not in ev else None  # a plain string, as most are
        path = E.get_path(ev, "path") if type(text) is not str or self._needs_bytes else b""
        if self._suffixes:
            # the base name's text: of a plain string path, itself (events.decode refused what UTF-8 cannot carry)
            if type(text) is str:
                name = text[text.rfind("/") + 1 :]
            else:
                name = path[path.rfind(b"/") + 1 :].decode("utf-8", "surrogateescape")
            if not self.case_sensitive:
                name = name.lower()
            # the dot must not be the name's first character: ".css" is a hidden file, not a CSS file (so the
            # name without its first character must end with the suffix)
            if not name[1:].endswith(self._suffixes):
                return False
        if not self._needs_bytes:
            if "rel_b64" in ev:
                E.get_path(ev, "rel")  # raises for bad base64, as when rel is looked at
            return self._size_ok(ev)
        rel = E.get_path(ev, "rel") if ("rel" in ev or "rel_b64" in ev) else None
        if self._rel_prefixes or self._abs_prefixes:
            ok = (rel is not None and rel.startswith(self._rel_prefixes)) or path.startswith(self._abs_prefixes)
            if not ok:
                return False
        if self._ignored:
            dirs = (rel if rel is not None else path).split(b"/")[:-1]
            if any(d in self._ignored for d in dirs):
                return False
        if self._regex is not None and not self._regex.match(path.decode("utf-8", "surrogateescape")):
            return False
        return self._size_ok(ev)

    def _size_ok(self, ev: dict) -> bool:
        size = ev.get("size")
        if ev.get("kind") != "deleted" and isinstance(size, int):
            if self.min_size is not None and size < self.min_size:
                return False
            if self.max_size is not None and size > self.max_size:
                return False
        return True


class FilterStage(Stage):
    name = "fc-filter"

    def __init__(self, conditions: Conditions, invert: bool = False):
        self.conditions = conditions
        self.invert = invert
        self.passed = 0
        self.dropped = 0
        self.roots: dict[bytes, list[str]] = {}  # source root -> the absolute --paths entries outside it
        self.warn: Callable[[str], None] = lambda text: None

    def start(self, ctx: StageContext) -> None:
        self.warn = ctx.rep.warn

    def _check_root(self, ev: dict) -> None:
        """Warn once per source root about absolute --paths entries outside it: they silently matched nothing."""
        try:
            root = E.get_path(ev, "root")
        except E.EventError:  # no root (an event not from fc-watch): nothing to compare with
            return
        if root in self.roots:
            return
        self.roots[root] = outside = self.conditions.outside(root)
        for entry in outside:
            rel = entry.lstrip("/")
            self.warn(
                f"--paths {entry}: an absolute entry is compared with the absolute path, and {entry} is not under "
                f"this source's root {E.display(root)}: it matches none of its files (did you mean {rel}, "
                f"relative to the root, i.e. {E.display(root.rstrip(b'/'))}/{rel}?)"
            )

    def passes(self, ev: dict) -> bool:
        """Whether ``ev`` goes on (counted); raises EventError for a path field that is bad base64."""
        if self.conditions.has_absolute:
            self._check_root(ev)
        if self.conditions.matches(ev) != self.invert:
            self.passed += 1
            return True
        self.dropped += 1
        return False

    def work(self, item: Item) -> Done:
        # the durable form: only for a state file of an earlier version with lines unfinished (stages/filter/run.py)
        return Done([item.event], unchanged=True) if self.passes(item.event) else Done([])

    def progress(self) -> str:
        return f"{self.passed} passed, {self.dropped} dropped"


_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*$")


def parse_size(text: str) -> int:
    """Bytes from ``1500``, ``10k``, ``2M``, ``1G`` (powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 1500, 10k, 2M, 1G)")
    return int(m.group(1)) * 1024 ** "_kmgt".index((m.group(2) or "_").lower())
