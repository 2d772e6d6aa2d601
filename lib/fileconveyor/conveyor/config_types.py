"""What config.xml holds, once checked (config.py loads it), and the collector of its problems."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import errors
from ..stages.filter.stage import split_list
from .config_settings import Settings
from .xmltree import Node


@dataclass(frozen=True)
class Source:
    name: str
    scan_path: Path
    document_root: Path | None
    base_path: str | None
    line: int


@dataclass(frozen=True)
class Server:
    name: str
    transporter: str
    settings: dict[str, str]
    max_connections: int  # 0: fc-transport's default for the transporter
    line: int


@dataclass(frozen=True)
class Destination:
    server: str
    path: str  # under the server's root, without leading or trailing "/"; "" = the root
    line: int


@dataclass(frozen=True)
class Conditions:
    paths: tuple[str, ...]
    extensions: tuple[str, ...]
    ignored_dirs: tuple[str, ...]
    pattern: str | None
    min_size: int | None  # inclusive, in bytes
    max_size: int | None  # inclusive, in bytes


@dataclass(frozen=True)
class Rule:
    source: str
    label: str
    conditions: Conditions | None  # None: every file of the source
    processors: tuple[str, ...]
    destinations: tuple[Destination, ...]
    deletion_delay: int | None  # fileDeletionDelayAfterSync, seconds
    line: int


@dataclass(frozen=True)
class Config:
    path: Path
    ignored_dirs: tuple[str, ...]
    sources: tuple[Source, ...]
    servers: dict[str, Server]
    rules: tuple[Rule, ...]
    settings: Settings
    warnings: tuple[str, ...]  # "PATH:LINE: message", for the log


class ConfigError(errors.ConfigError):
    """Every problem found in one config.xml; str() has one ``PATH:LINE: message`` per line."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]):
        self.path = path
        self.errors = sorted(problems, key=lambda p: p[0])
        super().__init__("\n".join(f"{path}:{line}: {msg}" for line, msg in self.errors))


class Check:
    """Collects errors and warnings while the file is walked."""

    def __init__(self, path: Path, base: Path):
        self.path, self.base = path, base
        self.errors: list[tuple[int, str]] = []
        self.warnings: list[tuple[int, str]] = []
        self.declared_sources: set[str] = set()
        self.warned_servers: set[str] = set()
        self.bad_servers: set[str] = set()  # servers whose settings are wrong: not reported again per destination

    def error(self, line: int, msg: str) -> None:
        self.errors.append((line, msg))

    def warn(self, line: int, msg: str) -> None:
        self.warnings.append((line, msg))

    def attrs(self, node: Node, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, str]:
        for name in node.attrib:
            if name not in allowed:
                self.error(node.line, f"<{node.tag}> has no attribute {name!r}; it takes {', '.join(allowed)}")
        for name in required:
            if not node.attrib.get(name, "").strip():
                self.error(node.line, f"<{node.tag}> needs the attribute {name}")
        return node.attrib

    def children(self, node: Node, allowed: tuple[str, ...]) -> None:
        for child in node.children:
            if child.tag not in allowed:
                self.error(child.line, f"unexpected <{child.tag}> in <{node.tag}>; expected {', '.join(allowed)}")

    def local_path(self, text: str) -> Path:
        return (self.base / os.path.expanduser(text)).resolve()

    def colon_list(self, line: int, what: str, text: str, **kw: bool) -> tuple[str, ...]:
        """A colon-separated list checked as fc-filter checks it (the original's forbidden characters)."""
        try:
            return tuple(split_list(what, text.strip(), **kw))
        except errors.UsageError as exc:
            self.error(line, str(exc))
            return ()

    def whole_number(self, line: int, what: str, text: str | None) -> int | None:
        """A non-negative whole number attribute, or None when absent (or wrong: then an error is recorded)."""
        if text is None:
            return None
        if not text.strip().isdigit():
            self.error(line, f"{what} must be a whole number of 0 or more, not {text!r}")
            return None
        return int(text)
