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
from .config_scale import split_broker, split_password
from .config_scale import stream_url as scale_stream_url
from .servers import transport_args

CSS_UPDATER = "link_updater.CSSURLUpdater"
ALL, PUBLISHER, WORKER = "all", "publisher", "worker"
ROLES = (PUBLISHER, WORKER)
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
    role: str = ALL  # ALL: the one-machine pipelines; PUBLISHER or WORKER: one side of the broker

    @property
    def record_used(self) -> bool:
        """Whether these stages read or write the synced-files record (a publisher's do not)."""
        return self.role != PUBLISHER

    @property
    def group(self) -> str:
        """The name of the whole (supervisord group, systemd target): one per config file."""
        stem = slug(self.config.path.stem)
        name = "fileconveyor" if stem == "config" else f"fileconveyor-{stem}"
        return name if self.role == ALL else f"{name}-{self.role}"  # both roles' units can live on one host

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


def build(config: Config, *, role: str = ALL, partitions: str | None = None) -> Plan:
    """The stages of ``role``: ALL (every stage on this host), PUBLISHER (fc-watch, and fc-filter where a source
    has one rule, then fc-publish: one stream per source) or WORKER (fc-consume of each source's stream, with
    ``partitions`` of it, then the rules' stages).  The caller has checked that a role has its broker."""
    s = config.settings
    fifo_dir = s.state_dir / "fifo"
    procs: list[Proc] = []
    for source in config.sources:
        rules = [r for r in config.rules if r.source == source.name]
        if not rules:
            continue  # validated: the loader warns about a source no rule uses
        head_out = fifo_dir / f"{slug(source.name)}.fifo"
        # A source with one rule is filtered before the broker: what no rule wants never crosses it.
        filter_first = role != ALL and len(rules) == 1 and rules[0].conditions is not None
        if role == WORKER:
            procs.append(_consume(config, source, head_out, partitions))
        else:
            procs.append(_watch(config, source, head_out))
        if role == PUBLISHER:
            procs.extend(_publish(config, source, rules[0] if filter_first else None, head_out, fifo_dir))
            continue
        inputs = [head_out]
        if len(rules) > 1:
            inputs = [fifo_dir / f"{slug(source.name)}-r{i}.fifo" for i in range(1, len(rules) + 1)]
            procs.append(
                Proc(
                    name=f"{slug(source.name)}-tee",
                    command="fc-tee",
                    args=[],
                    input=head_out,
                    outputs=inputs,
                    label=f"source {source.name}: one copy per rule",
                )
            )
        for i, (rule, feed) in enumerate(zip(rules, inputs, strict=True), start=1):
            procs.extend(_rule(config, source, rule, i, feed, fifo_dir, filtered=filter_first))
    return Plan(config, procs, fifo_dir, role)


def stream_url(config: Config, source: Source) -> str:
    """The source's stream, as fc-publish and fc-consume get it on their command line: without <BROKER>'s user,
    password or token (broker_env)."""
    broker = config.settings.broker
    assert broker is not None, "checked by the caller (config_scale.role_problem): a role needs <BROKER>"
    return scale_stream_url(split_broker(broker)[0], source.name)


def broker_args_env(config: Config) -> tuple[list[str], dict[str, str]]:
    """fc-publish's and fc-consume's flags for their login and signing keys (files: their names only), and the
    environment that carries <BROKER>'s user and password or token, never their command line."""
    s = config.settings
    args: list[str] = []
    for flag, path in (("--key-file", s.broker_key_file), ("--nkey", s.broker_nkey), ("--creds", s.broker_creds)):
        if path is not None:
            args += [flag, str(path)]
    return args, split_broker(s.broker)[1] if s.broker else {}


def _watch(config: Config, source: Source, out: Path) -> Proc:
    state = config.settings.state_dir / f"{slug(source.name)}-watch.db"
    args = ["--source", f"{source.name}={source.scan_path}"]
    if config.ignored_dirs:
        args += ["--ignore-dirs", ":".join(config.ignored_dirs)]
    return Proc(
        name=f"{slug(source.name)}-watch",
        command="fc-watch",
        args=[*args, "--state", str(state)],
        outputs=[out],
        state=state,
        label=f"source {source.name}",
    )


def _consume(config: Config, source: Source, out: Path, partitions: str | None) -> Proc:
    state = config.settings.state_dir / f"{slug(source.name)}-consume.db"
    args = ["--partitions", partitions] if partitions else []
    auth, env = broker_args_env(config)
    return Proc(
        name=f"{slug(source.name)}-consume",
        command="fc-consume",
        args=[*args, *auth, stream_url(config, source), "--state", str(state)],
        env=env,
        outputs=[out],
        state=state,
        label=f"source {source.name} from the broker",
    )


def _publish(config: Config, source: Source, rule: Rule | None, feed: Path, fifo_dir: Path) -> list[Proc]:
    s = config.settings
    procs: list[Proc] = []
    base = slug(source.name)
    if rule is not None:  # the source's one rule's filter, before the broker
        out = fifo_dir / f"{base}-r1-filter.fifo"
        state = s.state_dir / f"{base}-r1-filter.db"
        procs.append(
            Proc(
                f"{base}-r1-filter",
                "fc-filter",
                [*_filter_args(rule), "--state", str(state)],
                input=feed,
                outputs=[out],
                state=state,
                label=f"rule {rule.label!r}",
            )
        )
        feed = out
    args = ["--partitions", str(s.broker_partitions)] if s.broker_partitions else []
    auth, env = broker_args_env(config)
    state = s.state_dir / f"{base}-publish.db"
    procs.append(
        Proc(
            f"{base}-publish",
            "fc-publish",
            [*args, *auth, stream_url(config, source), "--state", str(state)],
            env=env,
            input=feed,
            state=state,
            label=f"source {source.name} to the broker",
        )
    )
    return procs


def _rule(
    config: Config, source: Source, rule: Rule, index: int, feed: Path, fifo_dir: Path, *, filtered: bool = False
) -> list[Proc]:
    s = config.settings
    record, record_env = split_password(s.synced_files_db)  # its password goes in the environment, not on argv
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

    if rule.conditions is not None and not filtered:
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
                args += ["--server", dests[0].server, "--record-db", record]
                if source.document_root:
                    args += ["--document-root", str(source.document_root)]
                if source.base_path:
                    args += ["--base-path", source.base_path]
            stage(f"process{sub}", "fc-process", args, env=record_env if CSS_UPDATER in rule.processors else None)
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
        # The record names what was uploaded under an earlier state (or by the old daemon, imported): a deletion
        # removes only such a name.  And with a deletion delay, the deletions fc-record makes at the source are
        # not propagated (the rule's intent).
        targs += ["--record-db", record]
        env.update(record_env)
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
        rargs = ["--db", record]
        if rule.deletion_delay is not None:
            rargs += ["--delete-source-after", str(rule.deletion_delay)]
            for d in rule.destinations:
                rargs += ["--require-server", d.server]
            # the tree fc-watch watches, which fc-record deletes beneath (an event cannot say where)
            rargs += ["--source", f"{source.name}={source.scan_path}"]
        stage(f"record{sub}", "fc-record", rargs, env=record_env, last=True)
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
