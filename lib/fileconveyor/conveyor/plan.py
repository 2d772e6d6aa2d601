"""Turn a loaded config.xml into the processes that run it: one fc-watch per source,
fanned out (fc-tee) to one branch per rule: fc-filter with the rule's conditions,
fc-process with its chain, fc-transport to its destinations, fc-record into the one
shared synced-files database.  Stages are joined by named FIFOs, so any one of them
can be restarted alone and pick up where it was (docs/durability.md).

The same plan is run by fc-conveyor and printed by --print, --supervisord and
--systemd, so what users copy is what fc-conveyor runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config, Rule, Source
from .servers import transport_args

CSS_UPDATER = "link_updater.CSSURLUpdater"
# transporters that can tell, cheaply, that the destination holds a file's content already
SKIP_UNCHANGED = {"symlink_or_copy", "s3", "cf", "cloudfiles", "mosso", "cumulus"}


@dataclass
class Proc:
    """One stage process."""

    name: str  # unique, safe for supervisord and systemd: [a-z0-9-]
    command: str  # fc-watch, fc-tee, ...
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # secrets: never printed as values
    input: Path | None = None  # FIFO read
    outputs: list[Path] = field(default_factory=list)  # FIFOs written
    state: Path | None = None
    label: str = ""  # what people see in --status: source, rule label, server
    first_args: list[str] = field(default_factory=list)  # only when fc-conveyor starts, not on restarts

    @property
    def last(self) -> bool:
        """The end of a branch: its events (what was synced, what failed) go to stdout,
        which fc-conveyor reads to log them, and supervisord or systemd keep."""
        return not self.outputs and self.command != "fc-watch"

    @property
    def argv(self) -> list[str]:
        """The command as fc-conveyor runs it: joined to its neighbours by FIFOs."""
        io: list[str] = ["--input", str(self.input)] if self.input else []
        for out in self.outputs:
            io += ["--output", str(out)]
        return [self.command, *self.args, *io]

    @property
    def fifos(self) -> list[Path]:
        return ([self.input] if self.input else []) + self.outputs


@dataclass
class Plan:
    config: Config
    procs: list[Proc]
    fifo_dir: Path

    @property
    def group(self) -> str:
        """The name of the whole (supervisord group, systemd target): one per config file."""
        stem = slug(self.config.path.stem)
        return "fileconveyor" if stem == "config" else f"fileconveyor-{stem}"

    @property
    def fifos(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for p in self.procs:
            for f in p.fifos:
                seen[f] = None
        return list(seen)

    def start_order(self) -> list[Proc]:
        """Readers before writers: a writer then finds its reader at once, and fc-tee
        never has to go on without a branch."""
        return list(reversed(self.procs))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def build(config: Config, *, verbose: int = 0) -> Plan:
    s = config.settings
    fifo_dir = s.state_dir / "fifo"
    procs: list[Proc] = []
    for source in config.sources:
        rules = [r for r in config.rules if r.source == source.name]
        if not rules:
            continue  # validated: the loader warns about a source no rule uses
        watch_out = fifo_dir / f"{slug(source.name)}.fifo"
        watch = Proc(
            name=f"{slug(source.name)}-watch",
            command="fc-watch",
            args=[
                "--source",
                f"{source.name}={source.scan_path}",
                *(["--ignore-dirs", ":".join(config.ignored_dirs)] if config.ignored_dirs else []),
                "--state",
                str(s.state_dir / f"{slug(source.name)}-watch.db"),
            ],
            outputs=[watch_out],
            state=s.state_dir / f"{slug(source.name)}-watch.db",
            label=f"source {source.name}",
        )
        procs.append(watch)
        inputs = [watch_out]
        if len(rules) > 1:
            inputs = [fifo_dir / f"{slug(source.name)}-r{i}.fifo" for i in range(1, len(rules) + 1)]
            procs.append(
                Proc(
                    name=f"{slug(source.name)}-tee",
                    command="fc-tee",
                    args=[],
                    input=watch_out,
                    outputs=inputs,
                    label=f"source {source.name}: one copy per rule",
                )
            )
        for i, (rule, feed) in enumerate(zip(rules, inputs, strict=True), start=1):
            procs.extend(_rule(config, source, rule, i, feed, fifo_dir))
    return Plan(config, procs, fifo_dir)


def _rule(config: Config, source: Source, rule: Rule, index: int, feed: Path, fifo_dir: Path) -> list[Proc]:
    s = config.settings
    base = f"{slug(source.name)}-r{index}"
    label = f"rule {rule.label!r}"
    procs: list[Proc] = []

    def stage(
        suffix: str,
        command: str,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        last: bool = False,
        first: list[str] | None = None,
    ) -> None:
        nonlocal feed
        name = f"{base}-{suffix}"
        state = s.state_dir / f"{name}.db"
        out = None if last else fifo_dir / f"{name}.fifo"
        procs.append(
            Proc(
                name,
                command,
                [*args, "--state", str(state)],
                env=env or {},
                input=feed,
                outputs=[out] if out else [],
                state=state,
                label=label,
                first_args=first or [],
            )
        )
        if out:
            feed = out

    if rule.conditions is not None:
        stage("filter", "fc-filter", _filter_args(rule))
    # CSSURLUpdater writes each server's URLs into the CSS, so its output differs per
    # destination: one fc-process (and fc-transport) per destination then.
    per_destination = CSS_UPDATER in rule.processors and len(rule.destinations) > 1
    branches = [list(rule.destinations)] if not per_destination else [[d] for d in rule.destinations]
    if per_destination:
        outs = [fifo_dir / f"{base}-{slug(d.server)}.fifo" for d in rule.destinations]
        procs.append(
            Proc(
                f"{base}-tee",
                "fc-tee",
                [],
                input=feed,
                outputs=outs,
                label=label + ": one copy per server (CSS URLs differ per server)",
            )
        )
    else:
        outs = [feed]
    for dests, branch_feed in zip(branches, outs, strict=True):
        feed = branch_feed
        sub = f"-{slug(dests[0].server)}" if per_destination else ""
        work_dir = str(s.working_dir / f"{base}{sub}")
        if rule.processors:
            args = ["--chain", ",".join(rule.processors), "--work-dir", work_dir]
            # files are read only beneath the tree fc-watch watches (an event's root could be forged)
            args += ["--source", f"{source.name}={source.scan_path}"]
            if s.max_processor_chains:
                args += ["--jobs", str(s.max_processor_chains)]
            if s.retry_interval is not None:
                args += ["--retry-delay", f"{s.retry_interval:g}"]
            if CSS_UPDATER in rule.processors:
                args += ["--server", dests[0].server, "--record-db", str(s.synced_files_db)]
                if source.document_root:
                    args += ["--document-root", str(source.document_root)]
                if source.base_path:
                    args += ["--base-path", source.base_path]
            stage(f"process{sub}", "fc-process", args)
        targs: list[str] = []
        env: dict[str, str] = {}
        for d in dests:
            ta = transport_args(config.servers[d.server], d.path)
            args = ta.args
            if rule.deletion_delay is not None:
                # the source goes away after sync: copy, never symlink to it
                args = _without_setting(args, "symlink_within")
            targs += args
            env.update(ta.env)
        if rule.deletion_delay is not None:
            # deletions fc-record makes at the source must not be propagated (the rule's intent)
            targs += ["--record-db", str(s.synced_files_db)]
        if all(config.servers[d.server].transporter in SKIP_UNCHANGED for d in dests):
            # a file the destination already holds is not sent again: after a restart, or
            # after importing the original's synced_files.db, nothing is uploaded twice
            targs += ["--skip-unchanged"]
        if rule.processors:
            targs += ["--work-dir", work_dir]  # processed files are sent only from there (sourcefile.py)
        # files are read only beneath the tree fc-watch watches (an event's root could be forged)
        targs += ["--source", f"{source.name}={source.scan_path}"]
        # what failed for good before (a permission fixed since) is tried again at each start
        stage(f"transport{sub}", "fc-transport", targs, env=env, first=["--retry-failed"])
        rargs = ["--db", str(s.synced_files_db)]
        if rule.deletion_delay is not None:
            rargs += ["--delete-source-after", str(rule.deletion_delay)]
            for d in rule.destinations:
                rargs += ["--require-server", d.server]
            # the tree fc-watch watches, which fc-record deletes beneath (an event cannot say where)
            rargs += ["--source", f"{source.name}={source.scan_path}"]
        stage(f"record{sub}", "fc-record", rargs, last=True)
    return procs


def _without_setting(args: list[str], key: str) -> list[str]:
    out: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "--set" and i + 1 < len(args) and args[i + 1].startswith(key + "="):
            skip = True
            continue
        out.append(a)
    return out


def _filter_args(rule: Rule) -> list[str]:
    c = rule.conditions
    assert c is not None
    args: list[str] = []
    if c.paths:
        args += ["--paths", ":".join(c.paths)]
    if c.extensions:
        args += ["--extensions", ":".join(c.extensions)]
    if c.ignored_dirs:
        args += ["--ignore-dirs", ":".join(c.ignored_dirs)]
    if c.pattern is not None:
        args += ["--pattern", c.pattern]
    if c.min_size is not None:
        args += ["--min-size", str(c.min_size)]
    if c.max_size is not None:
        args += ["--max-size", str(c.max_size)]
    return args
