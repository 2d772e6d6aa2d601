"""Run a plan: start every stage, restart the ones that die (with back-off, and say
so), keep a PID file, log in the original daemon's format, stop cleanly on SIGTERM.

Unlike the original daemon, a stage that dies is noticed at once (its exit status
is read, not guessed from a PID file that some other thread keeps fresh), and
SIGTERM means stop, not "restart in 10 seconds"."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import backoff, private
from ..children import die_with_parent
from ..errors import ConfigError, Exit
from ..state import lock_holder
from . import state_home
from .logs import level_of, where_syncs_show
from .pidfile import AlreadyRunning, PidFile
from .plan import PUBLISHER, Plan, Proc
from .render import bin_dir, command_argv
from .servers import check_access

STABLE_AFTER = 30.0  # a stage that ran this long before dying starts its back-off afresh
GIVE_UP_AFTER = 5  # consecutive usage/configuration exits: restarting cannot help
STOP_GRACE = 25.0
STATUS_FILE = "conveyor-status.json"


def status_path(plan: Plan) -> Path:
    return plan.config.settings.state_dir / STATUS_FILE


# -- the supervisor ----------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when fc-conveyor dies, even by kill -9.
    Otherwise orphaned stages keep their state files locked, and the next fc-conveyor's
    stages could not start."""
    die_with_parent(_SUPERVISOR_PID, signal.SIGTERM)


_SUPERVISOR_PID = os.getpid()


@dataclass
class Child:
    proc: Proc
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive quick deaths
    config_failures: int = 0
    last_exit: int | None = None
    restart_at: float | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class Supervisor:
    def __init__(
        self,
        plan: Plan,
        log: logging.Logger,
        *,
        stage_verbosity: int = 0,
        should_stop: Callable[[], bool] = lambda: False,
        stop_reason: Callable[[], str] = lambda: "asked to",
    ):
        global _SUPERVISOR_PID
        _SUPERVISOR_PID = os.getpid()
        self.plan = plan
        self.log = log
        self.settings = plan.config.settings
        self.children = [Child(p) for p in plan.start_order()]
        self.should_stop = should_stop
        self.stop_reason = stop_reason
        self.wake_fd: int | None = None  # readable when a stop is requested: wakes the loop at once
        self.pidfile = PidFile(self.settings.pid_file)
        self.where = bin_dir()
        self.stage_verbosity = stage_verbosity
        self._sel = selectors.DefaultSelector()
        self._dir_lock: int | None = None
        self._stopping = False

    # -- set-up ---------------------------------------------------------------------

    def _exe(self, command: str) -> list[str]:
        if self.where is not None:
            return command_argv(command, self.where)
        found = shutil.which(command)
        if not found:
            raise ConfigError(f"{command} is not installed (not next to fc-conveyor, not on PATH)")
        return [found]

    def prepare(self) -> None:
        s = self.settings
        dirs = [
            ("PERSISTENT_DATA_DB (--state-dir)", s.state_dir, True),
            ("PERSISTENT_DATA_DB (--state-dir)", self.plan.fifo_dir, True),
            ("WORKING_DIR", s.working_dir, True),
        ]
        if self.plan.record_used and isinstance(s.synced_files_db, Path):  # not a postgresql:// URL
            dirs.append(("SYNCED_FILES_DB (--db)", s.synced_files_db.parent, False))  # the web server reads it
        for setting, d, mine in dirs:
            try:
                if mine:  # owner-only: state files, FIFOs and work files are File Conveyor's private data
                    private.private_dir(d)
                else:
                    d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{setting}: cannot create {d}: {exc.strerror}") from None
            if mine and d != s.working_dir and (problem := private.dir_problem(d)):  # state files, FIFOs
                raise ConfigError(f"{setting}: {problem}")
        for fifo in self.plan.fifos:
            if fifo.exists() and not fifo.is_fifo():
                raise ConfigError(f"{fifo} exists and is not a FIFO")
            if not fifo.exists():
                os.mkfifo(fifo, 0o600)
        for child in self.children:
            self._exe(child.proc.command)

    def lock_state_dir(self) -> None:
        """One fc-conveyor per state directory, whatever its PID file: a second one would
        only fight the first for every stage's state file."""
        path = self.settings.state_dir / "conveyor.lock"
        try:
            fd = private.open_own(path, os.O_RDWR)  # truncated and written below: never through a symlink
        except private.NotOurs as exc:
            raise ConfigError(f"PERSISTENT_DATA_DB (--state-dir): lock file {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another fc-conveyor (pid {holder}) runs this config's stages (state directory "
                f"{self.settings.state_dir}); stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._dir_lock = fd

    def wait_for_old_stages(self, timeout: float = 60.0) -> None:
        """Stages of a previous run may still be finishing (fc-conveyor was killed and they
        got SIGTERM), or supervisord/systemd may run them: wait for their state files."""
        deadline = time.monotonic() + timeout
        said = False
        while True:
            busy = {c.proc.name: pid for c in self.children if c.proc.state and (pid := lock_holder(c.proc.state))}
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise AlreadyRunning(
                    "these stages' state files are still in use, by processes fc-conveyor did not start "
                    "(supervisord or systemd running the same stages?): "
                    + ", ".join(f"{n} (pid {pid})" for n, pid in sorted(busy.items()))
                )
            if not said:
                self.log.warning(
                    f"Waiting up to {timeout:.0f} s for {len(busy)} stage process(es) of an earlier run to finish: "
                    + ", ".join(f"{n} (pid {pid})" for n, pid in sorted(busy.items()))
                )
                said = True
            time.sleep(0.5)

    def check_servers(self) -> None:
        """Log in to every server as its fc-transport will: a refusal is exit 3 before any stage starts."""
        if self.plan.role == PUBLISHER:
            return  # its workers log in to the servers
        servers = list(self.plan.config.servers.values())
        check_access(servers, lambda text: self.log.warning(f"Server connection test: {text}"))
        for server in servers:
            self.log.info(f"Server connection test: '{server.name}' accepted the login.")

    # -- running --------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        p = child.proc
        first = p.first_args if child.restarts == 0 else []
        argv = [*self._exe(p.command), *(["-v"] * self.stage_verbosity), *p.argv[1:], *first]
        env = {**os.environ, **p.env}
        env.pop("FC_STATE_DIR", None)  # every stage is given its --state
        child.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if p.last else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C reaches fc-conveyor only; it stops the stages in order
            preexec_fn=_die_with_parent,
        )
        child.started = time.monotonic()
        child.restart_at = None
        child.tail.clear()  # what this run of it says
        for stream, handler in ((child.popen.stderr, self._stage_line), (child.popen.stdout, self._event_line)):
            if stream is not None:
                os.set_blocking(stream.fileno(), False)
                self._sel.register(stream, selectors.EVENT_READ, (child, handler, bytearray()))
        self.log.debug(f"started {p.name} (pid {child.popen.pid}): {' '.join(argv)}")

    def _drain_streams(self, timeout: float) -> None:
        for key, _ in self._sel.select(timeout):
            if key.data is None:  # the stop request's wake-up fd
                continue
            self._read(key)

    def _read(self, key: selectors.SelectorKey, to_end: bool = False) -> None:
        child, handler, buf = key.data
        while True:
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._sel.unregister(key.fileobj)
                if buf:
                    handler(child, bytes(buf))
                    buf.clear()
                return
            buf += data
            *lines, rest = buf.split(b"\n")
            buf[:] = rest
            for line in lines:
                handler(child, line)
            if not to_end:
                return

    def _stage_line(self, child: Child, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line.strip():
            return
        child.tail.append(line)
        level = level_of(line)
        if self._stopping and "went away" in line:
            level = logging.INFO  # stages stopping together: a neighbour gone first is expected
        self.log.getChild(child.proc.name).log(level, line)

    def _event_line(self, child: Child, raw: bytes) -> None:
        """An event at the end of a branch: what was synced, or what failed, for the log
        (the original logged "Synced: ..." for every file, and every failure)."""
        try:
            ev = json.loads(raw)
        except ValueError:
            return
        if not isinstance(ev, dict):
            return
        log = self.log.getChild(child.proc.name)
        path, kind, server = ev.get("path") or ev.get("rel"), ev.get("kind"), ev.get("server")
        if ev.get("error"):
            hint = (
                " Fix it, then restart fc-conveyor: it retries failed files when it starts."
                if ev.get("error_kind") == "permanent" and server
                else ""
            )
            log.error(f"Failed: '{path}' ({kind})" + (f" to '{server}'" if server else "") + f": {ev['error']}.{hint}")
        elif ev.get("superseded"):
            log.info(f"Deleted the old name '{ev.get('remote')}' of '{path}' on '{server}'.")
        elif ev.get("transported"):
            url = f": {ev['url']}" if ev.get("url") and ev["transported"] != "deleted" else ""
            log.info(f"Synced: '{path}' ({kind}, {ev['transported']}) to '{server}'{url}.")

    def _reap(self, now: float) -> int | None:
        """Notice stages that ended; schedule their restart.  Returns an exit status to
        stop with, when restarting cannot help."""
        for child in self.children:
            if child.popen is None or child.popen.poll() is None:
                continue
            code = child.popen.returncode
            self._close_streams(child)
            child.popen = None
            child.last_exit = code
            ran = now - child.started
            child.failures = 1 if ran >= STABLE_AFTER else child.failures + 1
            # a usage or configuration error, or a state file another process holds: no
            # restart will fix these
            hopeless = code in (Exit.USAGE, Exit.CONFIG) or any("in use by another process" in t for t in child.tail)
            child.config_failures = child.config_failures + 1 if hopeless else 0
            delay = backoff.delay(child.failures - 1, 0.5, self.settings.restart_interval)
            what = f"exited with status {code}" if code >= 0 else f"was killed by signal {-code}"
            self.log.error(
                f"Stage {child.proc.name} ({child.proc.label}) {what} after {ran:.1f} s; "
                f"restarting it in {delay:.1f} s (restart {child.restarts + 1})."
                + ("".join(f"\n    {t}" for t in list(child.tail)[-5:]) if child.tail and code > 0 else "")
            )
            if child.config_failures >= GIVE_UP_AFTER:
                self.log.critical(
                    f"Stage {child.proc.name} failed {child.config_failures} times in a row with a usage or "
                    "configuration error (or its state file is in use elsewhere); restarting it cannot help. "
                    "Stopping File Conveyor."
                )
                return Exit.CONFIG
            child.restart_at = now + delay
        return None

    def _close_streams(self, child: Child) -> None:
        """Read what an ended stage wrote last, then forget its pipes."""
        popen = child.popen
        if popen is None:
            return
        for stream in (popen.stderr, popen.stdout):
            if stream is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._read(self._sel.get_key(stream), to_end=True)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(stream)
            stream.close()

    def run(self) -> int:
        self.pidfile.acquire()
        try:
            return self._run()
        finally:
            self.pidfile.release()
            if self._dir_lock is not None:
                os.close(self._dir_lock)

    def _run(self) -> int:
        if self.wake_fd is not None:
            self._sel.register(self.wake_fd, selectors.EVENT_READ, None)
        self.log.warning(f"File Conveyor is initializing ({self.plan.config.path}, pid {os.getpid()}).")
        for w in self.plan.config.warnings:
            self.log.warning(f"Config: {w}")
        state_home.find_home(self.plan.config, self.log)  # a moved config.xml takes its state along
        self.prepare()
        self.lock_state_dir()
        state_home.note(self.plan.config)
        self.wait_for_old_stages()
        self.check_servers()
        for child in self.children:
            self._start(child)
        where = where_syncs_show(self.log)
        self.log.warning(f"Fully up and running now: {len(self.children)} stage process(es).{where}")
        next_status = next_pid = 0.0
        status = Exit.OK
        while not self.should_stop():
            self._drain_streams(0.2)
            now = time.monotonic()
            stop = self._reap(now)
            if stop is not None:
                status = stop
                break
            for child in self.children:
                if child.popen is None and child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    self._start(child)
                    self.log.warning(f"Restarted stage {child.proc.name} (pid {child.popen.pid}).")  # type: ignore[union-attr]
            if now >= next_pid:
                self.pidfile.refresh()
                next_pid = now + 1.0
            if now >= next_status:
                self.write_status()
                next_status = now + 1.0
        self.shutdown()
        return status

    def shutdown(self) -> None:
        self._stopping = True
        if self.wake_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self.wake_fd)  # stays readable: would spin the waits below
        why = self.stop_reason() if self.should_stop() else ""
        self.log.warning("Stopping every stage" + (f" ({why})." if why else "."))
        live = [c for c in self.children if c.popen is not None]
        for c in live:
            with contextlib.suppress(ProcessLookupError):
                c.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + STOP_GRACE
        while any(c.popen.poll() is None for c in live) and time.monotonic() < deadline:  # type: ignore[union-attr]
            self._drain_streams(0.1)
        for c in live:
            assert c.popen is not None
            if c.popen.poll() is None:
                self.log.error(f"Stage {c.proc.name} did not stop within {STOP_GRACE:g} s: killed.")
                c.popen.kill()
                c.popen.wait()
            self._close_streams(c)
            c.last_exit = c.popen.returncode
            c.popen = None
        self.write_status(stopped=True)
        self.log.warning("File Conveyor has shut down.")

    # -- status -------------------------------------------------------------------------

    def write_status(self, stopped: bool = False) -> None:
        now = time.monotonic()
        stages = []
        for c in self.children:
            p = c.proc
            if c.popen is not None:
                state, pid = "running", c.popen.pid
            elif stopped:
                state, pid = "stopped", None
            else:
                state, pid = "restarting", None
            stages.append(
                {
                    "name": p.name,
                    "command": p.command,
                    "label": p.label,
                    "state": state,
                    "pid": pid,
                    "up_seconds": round(now - c.started, 1) if c.popen is not None else None,
                    "restarts": c.restarts,
                    "last_exit": c.last_exit,
                    "state_file": str(p.state) if p.state else None,
                }
            )
        doc = {"pid": os.getpid(), "config": str(self.plan.config.path), "at": time.time(), "stages": stages}
        with contextlib.suppress(OSError):  # never through a link planted at its temporary name
            private.replace_file(status_path(self.plan), json.dumps(doc, indent=1).encode())
