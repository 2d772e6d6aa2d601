"""Load and check an original File Conveyor config.xml: <sources>, <servers>, <rules> and an optional <settings>.

``load(path)`` reads the whole file and reports every problem at once, each with its line, in one ConfigError:
nothing is started from a file with errors, as the original refused to start.  The rules are the original's
(config.py, filter.py), stricter where it crashed or silently did something else: duplicate source or server
names, a rule for a source that does not exist, a server listed twice in one rule, unknown elements and
attributes, unknown processors and transporters, and processors whose tools are not installed are all errors.

Relative paths (scanPath, documentRoot, a symlink_or_copy <location>, an sftp <key>, the <settings> files) are
relative to the directory config.xml is in (or ``base_dir``), not to the current directory, so the same file
works whoever starts it from wherever.

A filter's size conditions are strict in the original (``minimum N`` matches only files larger than N bytes,
``maximum N`` only smaller ones); Conditions holds inclusive bounds, so they become N+1 and N-1.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from .. import private
from . import servers as srv
from .config_rules import rules as parse_rules
from .config_scale import holds_secret, split_broker
from .config_settings import Settings, parse_settings
from .config_types import Check, Conditions, Config, ConfigError, Destination, Rule, Server, Source
from .xmltree import Node, XMLSyntaxError, parse

__all__ = ["Conditions", "Config", "ConfigError", "Destination", "Rule", "Server", "Settings", "Source", "load"]

SOURCE_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


def _no_folder_inside_its_source(
    c: Check, ignored_dirs: tuple[str, ...], sources: list[Source], servers: dict[str, Server], rules: list[Rule]
) -> None:
    """A symlink_or_copy destination (location + path) that is a rule's source folder, or a folder inside it whose
    files the rule would take, is an error: each copy would be a new file of the source, sent again a level
    deeper (static/static/...) for ever, and with symlink_within (set for every source) a destination that is the
    source would replace each file with a link to itself.  Inside the source but in an ignoredDirs directory, or
    outside the rule's <paths>, it is fine: fc-watch or fc-filter leaves the copies out."""
    by_name = {s.name: s for s in sources}
    for rule in rules:
        source = by_name.get(rule.source)
        if source is None:
            continue
        root = os.path.realpath(source.scan_path)
        ignored = set(ignored_dirs) | set(rule.conditions.ignored_dirs if rule.conditions else ())
        paths = rule.conditions.paths if rule.conditions else ()
        for dest in rule.destinations:
            server = servers.get(dest.server)
            if server is None or srv.canonical(server.transporter) != "symlink_or_copy":
                continue
            folder = os.path.realpath(os.path.join(server.settings.get("location", "/"), dest.path))
            if folder == root:
                c.error(
                    dest.line,
                    f"destination server {dest.server!r} with path {dest.path!r} is {folder}, the folder of source "
                    f"{source.name!r} itself: its files would be written over themselves; choose a folder outside it",
                )
                continue
            if not folder.startswith(root.rstrip("/") + "/"):
                continue
            rel = folder[len(root.rstrip("/")) + 1 :]
            if ignored.intersection(rel.split("/")):
                continue
            if paths and not any(rel == p or rel.startswith(p + "/") or p.startswith(rel + "/") for p in paths):
                continue
            c.error(
                dest.line,
                f"destination server {dest.server!r} with path {dest.path!r} is {folder}, inside source "
                f"{source.name!r} ({root}): each file sent there would be a new file of the source, sent again into "
                f"{rel}/{rel}/... for ever; choose a folder outside {root}, or add {rel.split('/')[-1]!r} to "
                "<sources ignoredDirs>",
            )


def load(path: Path, *, base_dir: Path | None = None) -> Config:
    """The configuration in ``path``; ConfigError listing every problem (with its line) when there are any.

    Relative paths in the file are relative to ``base_dir``, by default the file's own directory."""
    path = Path(path)
    c = Check(path, Path(base_dir if base_dir is not None else path.parent).resolve())
    try:
        root = parse(path)
    except XMLSyntaxError as exc:
        raise ConfigError(path, [(exc.line, exc.message)]) from None
    except OSError as exc:
        raise ConfigError(path, [(0, f"cannot read it: {exc.strerror}")]) from None
    if root.tag != "config":
        c.error(root.line, f"the root element must be <config>, not <{root.tag}>")
    c.children(root, ("sources", "servers", "rules", "settings"))
    sections: dict[str, Node | None] = {}
    for tag in ("sources", "servers", "rules", "settings"):
        found = root.findall(tag)
        for extra in found[1:]:
            c.error(extra.line, f"a second <{tag}> (the first is on line {found[0].line})")
        sections[tag] = found[0] if found else None
        if not found and tag != "settings":
            c.error(root.line, f"<config> has no <{tag}>")
    ignored_dirs, sources = _sources(c, sections["sources"])
    servers = _servers(c, sections["servers"], sources)
    rules = parse_rules(c, sections["rules"], sources, servers)
    _no_folder_inside_its_source(c, ignored_dirs, sources, servers, rules)
    settings = parse_settings(sections["settings"], path, c.base, c.error, c.warn)
    settings_node = sections["settings"]
    _private_if_secret(c, path, servers, settings, settings_node.line if settings_node is not None else 0)
    used = {r.source for r in rules}
    for s in sources:
        if s.name not in used:
            c.warn(s.line, f"no rule is for source {s.name!r}: it is not watched")
    if c.errors:
        raise ConfigError(path, c.errors)
    return Config(
        path=path,
        ignored_dirs=ignored_dirs,
        sources=tuple(sources),
        servers=servers,
        rules=tuple(rules),
        settings=settings,
        warnings=tuple(f"{path}:{line}: {msg}" for line, msg in sorted(c.warnings, key=lambda w: w[0])),
    )


def _sources(c: Check, node: Node | None) -> tuple[tuple[str, ...], list[Source]]:
    if node is None:
        return (), []
    attrs = c.attrs(node, ("ignoredDirs",))
    ignored = (
        c.colon_list(node.line, "ignoredDirs", attrs["ignoredDirs"], no_slash=True) if "ignoredDirs" in attrs else ()
    )
    c.children(node, ("source",))
    sources: dict[str, Source] = {}
    for n in node.findall("source"):
        a = c.attrs(n, ("name", "scanPath", "documentRoot", "basePath"), ("name", "scanPath"))
        name = a.get("name", "")
        if name and not SOURCE_NAME.match(name):
            c.error(n.line, f"source name {name!r} may hold only letters, digits, - and _")
        elif name in sources:
            c.error(n.line, f"a second source named {name!r} (the first is on line {sources[name].line})")
        scan = c.local_path(a["scanPath"]) if a.get("scanPath") else None
        if scan is not None and not scan.is_dir():
            c.error(n.line, _not_a_dir("scanPath", a["scanPath"], scan))
        root = c.local_path(a["documentRoot"]) if "documentRoot" in a else None
        if root is not None and not root.is_dir():
            c.error(n.line, _not_a_dir("documentRoot", a["documentRoot"], root))
        base_path = a.get("basePath")
        if base_path is not None:
            if not (base_path.startswith("/") and base_path.endswith("/")):
                c.error(n.line, f"basePath {base_path!r} must start and end with / (e.g. /drupal/)")
            elif root is not None and root.is_dir() and not (root / base_path.strip("/")).is_dir():
                c.warn(
                    n.line,
                    f"documentRoot + basePath ({root}{base_path}) does not exist: assuming {base_path} is a "
                    f"logical base path (made with symlinks)",
                )
        if name:
            c.declared_sources.add(name)  # a rule for a source with errors is not reported as for no source
        if name and scan is not None and name not in sources:
            sources[name] = Source(name, scan, root, base_path, n.line)
    return ignored, list(sources.values())


def _servers(c: Check, node: Node | None, sources: list[Source]) -> dict[str, Server]:
    if node is None:
        return {}
    c.attrs(node, ())
    c.children(node, ("server",))
    servers: dict[str, Server] = {}
    for n in node.findall("server"):
        a = c.attrs(n, ("name", "transporter", "maxConnections"), ("name", "transporter"))
        name, transporter = a.get("name", ""), a.get("transporter", "").strip()
        if name in servers:
            c.error(n.line, f"a second server named {name!r} (the first is on line {servers[name].line})")
            continue
        connections = c.whole_number(n.line, "maxConnections", a.get("maxConnections"))
        settings: dict[str, str] = {}
        for child in n.children:
            if child.children:
                c.error(child.line, f"<{child.tag}> holds a value, not elements")
            elif child.tag in settings:
                c.error(child.line, f"<{child.tag}> given twice in server {name!r}")
            else:
                value = child.text.strip()
                settings[child.tag] = str(c.local_path(value)) if child.tag in srv.PATH_SETTINGS and value else value
        if srv.canonical(transporter) == "symlink_or_copy":
            # as the original: files straight from a source are symlinked, processed ones copied
            settings["symlink_within"] = ":".join(str(s.scan_path) for s in sources)
        if not name or not transporter:
            continue
        server = Server(name, transporter, settings, connections or 0, n.line)
        try:
            srv.check(server)
        except srv.ServerSettingsError as exc:
            c.bad_servers.add(name)
            for problem in exc.problems:
                c.error(n.line, f"server {name!r}: {problem}")
        servers[name] = server
    return servers


def _private_if_secret(
    c: Check, path: Path, servers: dict[str, Server], settings: Settings, settings_line: int
) -> None:
    """A password in a file every user can read is everyone's: refused, as fc-transport refuses such a --config
    (the original's config.xml always held its passwords: migrating users are told the one command to run)."""
    holders = [s.line for s in servers.values() if any(s.settings.get(k) for k in srv.SECRET_SETTINGS)]
    if holds_secret(settings.synced_files_db) or (settings.broker and split_broker(settings.broker)[1]):
        holders.append(settings_line)
    try:
        st = path.stat()
    except OSError:
        return
    problem = private.secret_problem(path, st) if holders else None
    if problem:
        c.error(holders[0], problem)


def with_settings(config: Config, **changes: object) -> Config:
    """``config`` with some settings replaced (fc-conveyor's command-line options win over the file)."""
    return replace(config, settings=replace(config.settings, **changes))


def _not_a_dir(what: str, given: str, path: Path) -> str:
    """Why ``given`` is no directory; for a relative one, the folder it was taken in, which is not the one
    fc-conveyor is started in (a newcomer's `fc-conveyor ~/fc/config.xml` with scanPath="site")."""
    why = "not a directory" if path.exists() else "does not exist"
    if os.path.isabs(os.path.expanduser(given)):
        return f"{what} {given!r}: {why}"
    return f"{what} {given!r}: {why} (that is {path}: a relative path starts at the config file's folder)"
