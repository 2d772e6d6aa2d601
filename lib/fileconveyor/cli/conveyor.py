"""fc-conveyor: run an original File Conveyor config.xml as supervised pipelines."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from ..conveyor import config as C
from ..conveyor import config_scale as scale
from ..conveyor import plan as P
from ..conveyor import render, status
from ..conveyor.logs import make_logger
from ..conveyor.servers import check_access
from ..conveyor.supervisor import Supervisor
from ..errors import ConfigError, Exit
from ..records import is_url
from ..report import Reporter
from ..stopping import Stopper
from . import _common
from ._common import Streams

DESCRIPTION = """\
Run a File Conveyor config.xml (the original daemon's file, unchanged) as pipelines
of fc-* stages: one fc-watch per <source>, a branch per <rule> (fc-filter with its
<filter>, fc-process with its <processorChain>, fc-transport to its <destinations>,
fc-record into one synced-files database), each stage its own process, joined by
FIFOs.  The whole file is checked first; on any error nothing starts.  A stage
that dies is restarted (with back-off) and logged; SIGTERM stops everything
cleanly.  Every rule that matches a file applies, not only the first."""

EPILOG = """\
examples:
  fc-conveyor config.xml                      # run until SIGTERM or Ctrl-C
  fc-conveyor --check config.xml              # only validate
  kill -TERM "$(cat ~/.fileconveyor.pid)"     # stop it, as the original README says
  fc-conveyor --status config.xml             # queues, failures, synced counts
  fc-conveyor --print config.xml > run.sh     # the same pipelines as a shell script
  fc-conveyor --supervisord config.xml > /etc/supervisor/conf.d/fileconveyor.conf
  fc-conveyor --systemd config.xml            # systemd user units (one per stage)
  fc-conveyor --role publisher config.xml     # the storage host: fc-watch ... | fc-publish <BROKER>
  fc-conveyor --role worker --partitions 0-3 config.xml   # a worker: fc-consume | fc-process | ...

settings: the original settings.py constants go in an optional <settings> element of
config.xml, one child each, e.g. <settings><PID_FILE>/run/fc/fc.pid</PID_FILE></settings>:
  PID_FILE (~/.fileconveyor.pid), LOG_FILE (fileconveyor.log next to config.xml; 5 MiB,
  5 rotations), PERSISTENT_DATA_DB (a directory: the stages' state files and FIFOs),
  SYNCED_FILES_DB (synced_files.db next to config.xml), WORKING_DIR (processed files),
  RESTART_INTERVAL (10: longest wait before restarting a dead stage), RETRY_INTERVAL
  (first wait before retrying a deferred file; default 5, doubling each time),
  CONSOLE_LOGGER_LEVEL (WARNING),
  FILE_LOGGER_LEVEL (INFO), MAX_SIMULTANEOUS_PROCESSORCHAINS (fc-process --jobs),
  BROKER (nats://HOST:PORT/STREAM, for --role), BROKER_PARTITIONS (fc-publish --partitions);
  SYNCED_FILES_DB may be a postgresql:// URL (its password: better in ~/.pgpass).
  The options below override them.  Relative paths are relative to config.xml.

secrets: passwords and keys in config.xml are handed to the stages through their
environment, never on a command line; keep config.xml readable by you only.
--print, --supervisord and --systemd name the variables instead of the values.

logs: stages' messages and the supervisor's go to the log file and the console in
the original format ("2009-05-17 03:52:13,454 - FileConveyor... - WARNING  - ...").

signals: SIGTERM, SIGINT and SIGHUP stop every stage cleanly (there is no reload:
stop and start again after editing config.xml).

failed files: a file that failed for good (permission denied, login refused) is
logged at ERROR and kept; fc-conveyor retries such files each time it starts.

exit status: 0 stopped by a signal (cleanly), 2 usage, 3 config.xml invalid, a path
in it unusable, or a stage that keeps failing with a configuration error, 4 another
fc-conveyor (or supervisord/systemd running the same stages) is running this config."""


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser("fc-conveyor", DESCRIPTION, EPILOG)
    p.add_argument("config", nargs="?", default="config.xml", type=Path, help="the config file (default ./config.xml)")
    mode = p.add_argument_group("modes (default: run)").add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="validate the config, log in to every server, print the plan's size"
    )
    mode.add_argument("--print", action="store_true", help="print the equivalent shell pipelines")
    mode.add_argument("--supervisord", action="store_true", help="print a supervisord configuration")
    mode.add_argument("--systemd", action="store_true", help="print systemd user units")
    mode.add_argument("--status", action="store_true", help="show each stage's state, queue and failures")
    p.add_argument("--json", action="store_true", help="with --status: print JSON")
    g = p.add_argument_group("settings (override <settings> in the config)")
    g.add_argument("--pid-file", type=Path, metavar="FILE", help="the PID file (default ~/.fileconveyor.pid)")
    g.add_argument("--log-file", type=Path, metavar="FILE", help="the log file (default: next to the config)")
    g.add_argument("--state-dir", type=Path, metavar="DIR", help="where the stages' state files and FIFOs live")
    g.add_argument(
        "--db", metavar="FILE|URL", help="the synced-files database (SYNCED_FILES_DB): a file or postgresql:// URL"
    )
    r = p.add_argument_group("beyond one machine (docs/scale-out.md; <BROKER> in <settings>)")
    r.add_argument(
        "--role",
        choices=P.ROLES,
        help="run one side of the broker on this host: publisher (fc-watch [| fc-filter] | fc-publish, per source) "
        "or worker (fc-consume | the rules' stages); default: every stage here",
    )
    r.add_argument(
        "--partitions",
        metavar="LIST",
        help="with --role worker: the partitions of each source's stream this worker owns, e.g. 0-3 (default all); "
        "'auto': a fair share of each, by leases on the broker (fc-consume --partitions auto)",
    )
    return p


def load(args: argparse.Namespace) -> C.Config:
    if not args.config.exists():
        raise ConfigError(f"{args.config}: no such config file (give its path: fc-conveyor PATH/config.xml)")
    config = C.load(args.config)
    over = {
        k: v.expanduser().absolute()
        for k, v in (
            ("pid_file", args.pid_file),
            ("log_file", args.log_file),
            ("state_dir", args.state_dir),
        )
        if v is not None
    }
    if args.db is not None:  # a URL stays as written: a Path would fold its '//'
        over["synced_files_db"] = args.db if is_url(args.db) else Path(args.db).expanduser().absolute()
    if args.state_dir is not None and config.settings.working_dir.is_relative_to(config.settings.state_dir):
        over["working_dir"] = over["state_dir"] / config.settings.working_dir.relative_to(config.settings.state_dir)
    if over:
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, **over))
    return config


def body(args: argparse.Namespace, io: Streams, rep: Reporter, stop: Stopper) -> int:
    if args.json and not args.status:
        rep.error("--json goes with --status")
        return Exit.USAGE
    try:
        config = load(args)
    except C.ConfigError as exc:
        io.stderr.write(f"{exc}\n")
        rep.error("the config file has errors (above); nothing was started. Fix them and run again.")
        return Exit.CONFIG
    problem = scale.role_problem(config, args.role, args.partitions)
    if problem:
        rep.error(problem[1])
        return problem[0]
    plan = P.build(config, role=args.role or P.ALL, partitions=args.partitions)
    if args.check:
        for w in config.warnings:
            rep.warn(w)
        if plan.role != P.PUBLISHER:  # a storage host's stages send nothing: its workers log in
            check_access(list(config.servers.values()), rep.warn)  # a refusal: exit 3, "valid" it is not
        io.stdout.write(
            f"{config.path}: valid. {len(config.sources)} source(s), {len(config.servers)} server(s), "
            f"{len(config.rules)} rule(s): {len(plan.procs)} stage process(es).\n".encode()
        )
        io.stdout.flush()
        return Exit.OK
    if args.print or args.supervisord or args.systemd:
        printer = render.shell if args.print else render.supervisord if args.supervisord else render.systemd
        text = printer(plan)
        io.stdout.write(text.encode())
        io.stdout.flush()
        return Exit.OK
    if args.status:
        st = status.gather(plan)
        io.stdout.write((status.to_json(st) if args.json else status.format_status(st)).encode())
        io.stdout.flush()
        return Exit.OK
    s = config.settings
    console = s.console_log_level
    if args.quiet:
        console = logging.ERROR
    elif args.verbose:
        console = min(console, logging.INFO if args.verbose == 1 else logging.DEBUG)
    try:
        log = make_logger(s.log_file, s.file_log_level, console)
    except ConfigError as exc:  # a symlink others could have planted, another user's file
        rep.error(f"LOG_FILE (--log-file): {exc}")
        return Exit.CONFIG
    except OSError as exc:
        rep.error(f"LOG_FILE (--log-file): cannot write {s.log_file}: {exc.strerror}")
        return Exit.CONFIG
    stage_verbosity = 1 if min(s.file_log_level, console) <= logging.DEBUG else 0
    sup = Supervisor(
        plan,
        log,
        stage_verbosity=stage_verbosity,
        should_stop=lambda: stop.requested,
        stop_reason=lambda: signal.Signals(stop.signum).name if stop.signum else "asked to",
    )
    sup.wake_fd = stop.fileno()
    try:
        code = sup.run()
    except ConfigError as exc:
        log.error(str(exc))
        return exc.exit
    finally:
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)
    if stop.signum is not None and code == Exit.OK:
        stop.signum = None  # a requested stop is the normal end of a daemon: exit 0, not 143
    return code


def main(argv: Sequence[str] | None = None, io: Streams | None = None) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return _common.run("fc-conveyor", build_parser, body, argv, io)
