"""config.xml's optional <settings>: the original's settings.py constants, one element each.

    <settings>
      <PID_FILE>/var/run/fileconveyor/fileconveyor.pid</PID_FILE>
      <CONSOLE_LOGGER_LEVEL>logging.INFO</CONSOLE_LOGGER_LEVEL>
    </settings>

File names are relative to config.xml's directory (``~`` is expanded).  Settings the stages made obsolete are
accepted with a warning saying why; any other name is an error.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..state import default_state_dir
from .config_scale import broker_url, record_target
from .xmltree import Node


@dataclass(frozen=True)
class Settings:
    pid_file: Path
    log_file: Path
    state_dir: Path  # the stages' state files (PERSISTENT_DATA_DB's successor)
    synced_files_db: Path | str  # a file, or a postgresql:// URL as written (its password too: never shown)
    working_dir: Path  # fc-process's work files; never wiped, unlike the original's
    restart_interval: float
    retry_interval: float | None  # None: fc-process's own default (5 s, doubling)
    console_log_level: int
    file_log_level: int
    max_processor_chains: int | None  # MAX_SIMULTANEOUS_PROCESSORCHAINS -> fc-process --jobs; None: its default
    broker: str | None = None  # BROKER: nats://HOST:PORT/STREAM, for fc-conveyor --role publisher|worker
    broker_partitions: int | None = None  # BROKER_PARTITIONS: fc-publish --partitions when it makes a stream
    broker_key_file: Path | None = None  # BROKER_KEY_FILE: fc-publish/fc-consume --key-file (signed messages)
    broker_nkey: Path | None = None  # BROKER_NKEY: --nkey, the login's nkey seed file
    broker_creds: Path | None = None  # BROKER_CREDS: --creds, the login's credentials file


OBSOLETE = {
    "RESTART_AFTER_UNHANDLED_EXCEPTION": "a stage that stops unexpectedly is always restarted (RESTART_INTERVAL, "
    "with back-off); SIGTERM stops everything",
    "MAX_SIMULTANEOUS_TRANSPORTERS": "connections are set per server with maxConnections",
    "MAX_FILES_IN_PIPELINE": "events wait in the stages' durable queues, which have no fixed size",
    "MAX_TRANSPORTER_QUEUE_SIZE": "fc-transport queues per destination by itself",
    "QUEUE_PROCESS_BATCH_SIZE": "every stage handles each event as it arrives",
    "CALLBACKS_CONSOLE_OUTPUT": "every stage writes its events to its output; use fc-conveyor --status",
}
KNOWN = (
    "PID_FILE",
    "LOG_FILE",
    "PERSISTENT_DATA_DB",
    "SYNCED_FILES_DB",
    "WORKING_DIR",
    "RESTART_INTERVAL",
    "RETRY_INTERVAL",
    "CONSOLE_LOGGER_LEVEL",
    "FILE_LOGGER_LEVEL",
    "MAX_SIMULTANEOUS_PROCESSORCHAINS",
    "BROKER",
    "BROKER_PARTITIONS",
    "BROKER_KEY_FILE",
    "BROKER_NKEY",
    "BROKER_CREDS",
)


def parse_settings(
    node: Node | None,
    config_path: Path,
    base: Path,
    error: Callable[[int, str], None],
    warn: Callable[[int, str], None],
) -> Settings:
    """The settings under ``node`` (None: no <settings>: every default); problems go to ``error``/``warn``."""
    given: dict[str, tuple[str, int]] = {}
    for child in node.children if node is not None else []:
        if child.tag in OBSOLETE:
            warn(child.line, f"<{child.tag}> no longer applies and is ignored: {OBSOLETE[child.tag]}")
        elif child.tag not in KNOWN:
            close = difflib.get_close_matches(child.tag.upper(), KNOWN, n=1, cutoff=0.75)
            hint = f"did you mean <{close[0]}>? " if close else ""
            error(child.line, f"unknown setting <{child.tag}>; {hint}known: {', '.join(KNOWN)}")
        elif child.tag in given:
            error(child.line, f"<{child.tag}> given twice (first on line {given[child.tag][1]})")
        elif child.children:
            error(child.line, f"<{child.tag}> holds a value, not elements")
        else:
            given[child.tag] = (child.text.strip(), child.line)

    def path(key: str, default: Path) -> Path:
        if key not in given:
            return default
        text, line = given[key]
        if not text:
            error(line, f"<{key}> is empty")
            return default
        return (base / os.path.expanduser(text)).resolve()

    def number(key: str, default: float | None) -> float | None:
        if key not in given:
            return default
        text, line = given[key]
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value >= 0):
            error(line, f"<{key}> must be a number of seconds (0 or more), not {text!r}")
            return default
        return value

    def level(key: str, default: int) -> int:
        if key not in given:
            return default
        text, line = given[key]
        name = text.removeprefix("logging.").upper()
        value = logging.getLevelName(name) if not name.isdigit() else int(name)
        if not isinstance(value, int):
            error(line, f"<{key}> must be DEBUG, INFO, WARNING, ERROR or CRITICAL (or logging.X), not {text!r}")
            return default
        return value

    chains = _whole(given, "MAX_SIMULTANEOUS_PROCESSORCHAINS", error)
    state_dir = path("PERSISTENT_DATA_DB", default_state_dir_for(config_path))
    if "PERSISTENT_DATA_DB" in given and state_dir.exists() and not state_dir.is_dir():
        # most likely the original's persistent_data.db: its queue is imported with fc-record --import-queue
        error(
            given["PERSISTENT_DATA_DB"][1],
            f"<PERSISTENT_DATA_DB> {state_dir} is a file: it names a directory for the stages' state files now "
            f"(the original's queue database can be imported with fc-record --import-queue)",
        )
    return Settings(
        pid_file=path("PID_FILE", Path(os.path.expanduser("~/.fileconveyor.pid"))),
        log_file=path("LOG_FILE", base / "fileconveyor.log"),
        state_dir=state_dir,
        synced_files_db=record_target(given, base, error) or path("SYNCED_FILES_DB", base / "synced_files.db"),
        working_dir=path("WORKING_DIR", state_dir / "work"),
        restart_interval=number("RESTART_INTERVAL", 10.0),
        retry_interval=number("RETRY_INTERVAL", None),
        console_log_level=level("CONSOLE_LOGGER_LEVEL", logging.WARNING),
        file_log_level=level("FILE_LOGGER_LEVEL", logging.INFO),
        max_processor_chains=chains,
        broker=broker_url(given, error),
        broker_partitions=_whole(given, "BROKER_PARTITIONS", error),
        broker_key_file=path("BROKER_KEY_FILE", Path()) if "BROKER_KEY_FILE" in given else None,
        broker_nkey=path("BROKER_NKEY", Path()) if "BROKER_NKEY" in given else None,
        broker_creds=path("BROKER_CREDS", Path()) if "BROKER_CREDS" in given else None,
    )


def _whole(given: dict[str, tuple[str, int]], key: str, error: Callable[[int, str], None]) -> int | None:
    if key not in given:
        return None
    text, line = given[key]
    if text.isdigit() and int(text) > 0:
        return int(text)
    error(line, f"<{key}> must be a whole number of 1 or more, not {text!r}")
    return None


def default_state_dir_for(config_path: Path) -> Path:
    """One state directory per config file: two config.xml files in different places never share one (a config
    moved or renamed finds its old one: state_home.py)."""
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:8]
    return default_state_dir() / f"conveyor-{config_path.stem}-{digest}"
