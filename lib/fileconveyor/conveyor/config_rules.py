"""config.xml's <rules>: each rule's filter, processor chain and destinations, checked (config.py loads)."""

from __future__ import annotations

import re

from .. import errors
from . import servers as srv
from .config_types import Check, Conditions, Destination, Rule, Server, Source
from .xmltree import Node

CONDITIONS = ("paths", "extensions", "ignoredDirs", "pattern", "size")


def rules(c: Check, node: Node | None, sources: list[Source], servers: dict[str, Server]) -> list[Rule]:
    if node is None:
        return []
    c.attrs(node, ())
    c.children(node, ("rule",))
    names = c.declared_sources
    rules: list[Rule] = []
    for n in node.findall("rule"):
        a = c.attrs(n, ("for", "label", "fileDeletionDelayAfterSync"), ("for", "label"))
        source = a.get("for", "")
        if source and source not in names:
            known = ", ".join(sorted(names)) or "none"
            c.error(
                n.line, f"rule {a.get('label', '')!r} is for source {source!r}, which does not exist (sources: {known})"
            )
        delay = c.whole_number(n.line, "fileDeletionDelayAfterSync", a.get("fileDeletionDelayAfterSync"))
        c.children(n, ("filter", "processorChain", "destinations"))
        for tag in ("filter", "processorChain", "destinations"):
            for extra in n.findall(tag)[1:]:
                c.error(extra.line, f"a second <{tag}> in one rule")
        f = n.find("filter")
        conditions = _conditions(c, f) if f is not None else None
        chain = n.find("processorChain")
        processors = _processors(c, chain) if chain is not None else ()
        if chain is not None:
            _renames_without_css_update(c, chain.line, a.get("label", ""), conditions, processors)
        dests = n.find("destinations")
        if dests is None:
            c.error(n.line, "a rule needs <destinations> with at least one <destination>")
            destinations: tuple[Destination, ...] = ()
        else:
            destinations = _destinations(c, dests, servers)
        _shared_environment(c, n.line, destinations, servers)
        rules.append(Rule(source, a.get("label", ""), conditions, processors, destinations, delay, n.line))
    _shared_servers(c, rules)
    return rules


def _renames_without_css_update(
    c: Check, line: int, label: str, conditions: Conditions | None, processors: tuple[str, ...]
) -> None:
    """A warning for a chain that gives files new names (unique_filename) with no link_updater.CSSURLUpdater to
    point the stylesheets it may take at them: the published CSS would name files the servers do not have (a
    newcomer's first chain, minify then unique names, broke every image of the demo site's stylesheet)."""
    rename = next((p for p in processors if p.startswith("unique_filename.")), None)
    if rename is None or "link_updater.CSSURLUpdater" in processors:
        return
    if conditions is not None and conditions.extensions and "css" not in {x.lower() for x in conditions.extensions}:
        return
    c.warn(
        line,
        f"rule {label!r}: {rename} gives files new names, and no link_updater.CSSURLUpdater points the stylesheets "
        f"at them: their url() references would name files the servers do not have; add link_updater.CSSURLUpdater "
        f"before {rename}, as the original's sample and make demo do",
    )


def _shared_servers(c: Check, rules: list[Rule]) -> None:
    """A warning for two rules of one source that send to one server unless no file can pass both filters.  The
    original applied every matching rule on its own, and so does fc-conveyor; but synced_files keeps one row per
    file and server (its unique index, which the web applications' lookups rely on), so for a file both rules
    send the record ends up holding whichever rule synced it last, and where both send it to the same path, so
    does the server: a stylesheet processed by one rule and sent as it is by the other flips between the two."""
    for i, b in enumerate(rules):
        for a in rules[:i]:
            if a.source != b.source or not _may_overlap(a.conditions, b.conditions):
                continue
            for server in dict.fromkeys(d.server for d in b.destinations):
                paths_a = {d.path for d in a.destinations if d.server == server}
                if not paths_a:
                    continue
                same = any(d.path in paths_a for d in b.destinations if d.server == server)
                what = (
                    "to the same place: the last one to send a file both match wins there and in synced_files"
                    if same
                    else "at different paths: a file both match is there twice, but synced_files keeps one row per"
                    " file and server, the URL of whichever rule synced it last"
                )
                c.warn(
                    b.line,
                    f"rules {a.label!r} (line {a.line}) and {b.label!r} both send files of source {b.source!r} to "
                    f"server {server!r} {what}; give them filters no file passes both (other extensions, paths or "
                    f"sizes) or servers of their own",
                )


def _may_overlap(a: Conditions | None, b: Conditions | None) -> bool:
    """False only when no file can pass both filters: their extensions, relative paths or size ranges part.
    (Patterns and ignored directories are not compared: they count as overlapping.)"""
    if a is None or b is None:
        return True
    if a.extensions and b.extensions and not _extensions_meet(a.extensions, b.extensions):
        return False
    if a.paths and b.paths and not _paths_meet(a.paths, b.paths):
        return False
    highs = [x for x in (a.max_size, b.max_size) if x is not None]
    return not highs or max(a.min_size or 0, b.min_size or 0) <= min(highs)


def _extensions_meet(xs: tuple[str, ...], ys: tuple[str, ...]) -> bool:
    """Whether one name can end in one of each: an extension is what ends the base name after a dot, so "gz"
    and "tar.gz" meet (in a.tar.gz); compared without case, as fc-filter does unless told otherwise."""
    for x in (x.lower() for x in xs):
        for y in (y.lower() for y in ys):
            if x == y or x.endswith("." + y) or y.endswith("." + x):
                return True
    return False


def _paths_meet(xs: tuple[str, ...], ys: tuple[str, ...]) -> bool:
    """Whether a file can be under one of each: one is the other or a directory above it.  An absolute path
    is compared with nothing (it may name the same place as a relative one): it meets."""
    for x in xs:
        for y in ys:
            if x.startswith("/") or y.startswith("/"):
                return True
            px, py = x.strip("/") + "/", y.strip("/") + "/"
            if px.startswith(py) or py.startswith(px):
                return True
    return False


def _shared_environment(c: Check, line: int, destinations: tuple[Destination, ...], servers: dict[str, Server]) -> None:
    """One fc-transport serves all of a rule's destinations, and takes their secrets from one environment:
    two servers needing different values in one variable (two S3 accounts' AWS_ACCESS_KEY_ID, or names that
    differ only in punctuation, "a b" and "a_b", for FC_A_B_PASSWORD) cannot share it."""
    seen: dict[str, tuple[str, str]] = {}
    for d in destinations:
        if d.server in c.bad_servers:
            continue
        try:
            env = srv.transport_args(servers[d.server], d.path).env
        except srv.ServerSettingsError:
            continue
        for key, value in env.items():
            if key in seen and seen[key][1] != value:
                c.error(
                    line,
                    f"servers {seen[key][0]!r} and {d.server!r} need different values in {key}, but one "
                    f"fc-transport serves both: use them in separate rules"
                    + (" or rename one" if key.startswith("FC_") else ""),
                )
            seen.setdefault(key, (d.server, value))


def _conditions(c: Check, node: Node) -> Conditions | None:
    c.attrs(node, ())
    c.children(node, CONDITIONS)
    if not node.children:
        c.error(node.line, "an empty <filter/> (give a condition or leave <filter> out to take every file)")
        return None
    values: dict[str, tuple[str, ...] | str] = {}
    sizes: dict[str, int] = {}
    for n in node.children:
        if n.tag not in CONDITIONS:
            continue
        if n.tag == "size":
            _size(c, n, sizes)
            continue
        c.attrs(n, ())
        if n.tag in values:
            c.error(n.line, f"<{n.tag}> given twice in one <filter>")
            continue
        text = n.text.strip()
        if n.tag == "pattern":
            if not text:
                c.error(n.line, "<pattern> is empty")
                continue
            try:
                re.compile(text)
            except re.error as exc:
                c.error(n.line, f"<pattern> {text!r} is not a valid regular expression: {exc}")
            values["pattern"] = text
        else:
            kw = {"paths": {}, "extensions": {"no_slash": True, "no_dot": True}, "ignoredDirs": {"no_slash": True}}
            values[n.tag] = c.colon_list(n.line, f"<{n.tag}>", text, **kw[n.tag])
    low, high = sizes.get("minimum"), sizes.get("maximum")
    if low is not None and high is not None and low > high:
        c.error(node.line, f"no size is larger than {low - 1} and smaller than {high + 1} bytes: nothing would pass")
    pattern = values.get("pattern")
    return Conditions(
        paths=tuple(values.get("paths", ())),
        extensions=tuple(values.get("extensions", ())),
        ignored_dirs=tuple(values.get("ignoredDirs", ())),
        pattern=pattern if isinstance(pattern, str) else None,
        min_size=low,
        max_size=high,
    )


def _size(c: Check, n: Node, sizes: dict[str, int]) -> None:
    """``<size conditionType="minimum|maximum">N</size>``: strict in the original, so stored as N+1 or N-1."""
    kind = c.attrs(n, ("conditionType",), ("conditionType",)).get("conditionType")
    if kind is None:
        return
    if kind not in ("minimum", "maximum"):
        c.error(n.line, f"<size conditionType={kind!r}>: conditionType must be minimum or maximum")
        return
    text = n.text.strip()
    if not text.isdigit():
        c.error(n.line, f"<size> must hold a whole number of bytes, not {text!r}")
        return
    if kind in sizes:
        c.error(n.line, f"a second <size conditionType={kind!r}> in one <filter>")
        return
    if kind == "maximum" and int(text) == 0:
        c.error(n.line, "<size conditionType='maximum'>0</size> matches no file (sizes below 0 bytes)")
        return
    sizes[kind] = int(text) + 1 if kind == "minimum" else int(text) - 1


def _processors(c: Check, node: Node) -> tuple[str, ...]:
    from ..processors import create

    c.attrs(node, ())
    c.children(node, ("processor",))
    names = []
    for n in node.findall("processor"):
        name = c.attrs(n, ("name",), ("name",)).get("name", "").strip()
        if not name:
            continue
        names.append(name)
        family = _family_members(name)
        if family:  # the registry would take "unique_filename.SHA1" for a missing package named unique_filename
            c.error(n.line, f"unknown processor {name!r}; {name.partition('.')[0]} has: {', '.join(family)}")
            continue
        try:
            # exactly as fc-process finds it; a missing tool would stop fc-process at its start
            missing = create(name).missing_tools()
        except errors.FCError as exc:
            c.error(n.line, str(exc))
            continue
        for hint in missing:
            c.error(n.line, f"processor {name!r} needs {hint}")
    return tuple(names)


def _family_members(name: str) -> list[str]:
    """The built-in processors of ``name``'s module when ``name`` is not one of them (else [])."""
    from ..processors import PROCESSORS

    if ":" in name or PROCESSORS.resolve(name) in PROCESSORS.builtins:
        return []
    module = name.partition(".")[0] + "."
    return [b for b in PROCESSORS.builtins if b.startswith(module)]


def _destinations(c: Check, node: Node, servers: dict[str, Server]) -> tuple[Destination, ...]:
    c.attrs(node, ())
    c.children(node, ("destination",))
    found: dict[str, Destination] = {}
    for n in node.findall("destination"):
        a = c.attrs(n, ("server", "path"), ("server",))
        name = a.get("server", "")
        if not name:
            continue
        if name not in servers:
            known = ", ".join(repr(s) for s in servers) or "none"
            c.error(n.line, f"destination server {name!r} does not exist (servers: {known})")
            continue
        if name in found:
            c.error(n.line, f"server {name!r} is listed twice in one rule (first on line {found[name].line})")
            continue
        path = a.get("path", "").strip().strip("/")
        if any(part in ("..", ".") for part in path.split("/")) or "//" in path or "\0" in path:
            c.error(n.line, f"destination path {a['path']!r}: give a plain directory path (no '.', '..' or '//')")
            continue
        dest = Destination(name, path, n.line)
        found[name] = dest
        if name not in c.bad_servers:  # a server's own problems are reported once, on its line
            try:
                srv.transport_args(servers[name], path)
            except srv.ServerSettingsError as exc:
                for problem in exc.problems:
                    c.error(n.line, f"server {name!r} with path {path!r}: {problem}")
        if name not in c.warned_servers:  # the same advice for each of a server's destinations is noise
            for msg in srv.warnings(servers[name], path):
                c.warn(n.line, msg)
                c.warned_servers.add(name)
    if not node.findall("destination"):
        c.error(node.line, "<destinations> needs at least one <destination server=...>")
    return tuple(found.values())
