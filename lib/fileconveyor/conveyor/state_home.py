"""Where a config.xml's state lives when it moves: the state directory follows a renamed config file.

A config's default state directory is named after the config file's path (config_settings.default_state_dir_for):
two config files in different places are two conveyors, each with its state, even when they are alike.  Keyed by
content instead, every edit of the file would start over, and two copies run side by side would fight over one
state.  But a config that is only moved or renamed would start from scratch and send everything again.  So each
state directory notes its config (``config.json``: the path, and what of the content matters to the state: the
sources and the servers), and a config without a state directory yet looks for one that belongs to it:

- the same sources and servers, and that config file is gone (moved or renamed): the state directory is renamed
  to this config's, and the run carries on where the other left off (said in the log);
- the same, and that config file is still there (a copy): this one starts from scratch, and the log says so and
  names the state directory to give (``--state-dir``, ``<PERSISTENT_DATA_DB>``) to carry on from it instead.

Only default state directories take part: one named with ``--state-dir`` or ``<PERSISTENT_DATA_DB>`` stays put.
A ``config.json`` is only believed when it is a regular file of ours no other user may write, never through a
symlink (private.read_own); anything else there stops fc-conveyor with an error (exit 3): File Conveyor never
makes one, and its content decides which state directory is renamed into ours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import stat
from pathlib import Path

from .. import private
from ..errors import ConfigError
from ..state import default_state_dir, lock_holder
from .config_settings import default_state_dir_for
from .config_types import Config

MARK = "config.json"


def fingerprint(config: Config) -> str:
    """What the state depends on: each source's name and tree (fc-watch's files, the stages' queues and remote
    names are per source), and the servers' names (fc-transport's destinations)."""
    sources = sorted((s.name, str(s.scan_path.resolve())) for s in config.sources)
    text = json.dumps({"sources": sources, "servers": sorted(config.servers)})
    return hashlib.sha256(text.encode()).hexdigest()


def note(config: Config) -> None:
    """Record in the state directory which config it belongs to (called once it exists)."""
    mark = config.settings.state_dir / MARK
    data = {"config": str(config.path.resolve()), "fingerprint": fingerprint(config)}
    if _read_mark(config.settings.state_dir) == data:
        return
    private.replace_file(mark, (json.dumps(data) + "\n").encode(), mark.with_suffix(".tmp"))


def _read_mark(state_dir: Path) -> object:
    """What ``config.json`` in ``state_dir`` says; None when there is none or it is no JSON (a torn write of an
    older version: written again); ConfigError when it is no file of ours to believe (private.read_own)."""
    try:
        return json.loads(private.read_own(state_dir / MARK))
    except private.NotOurs as exc:
        raise ConfigError(f"state directory {state_dir}: {exc}") from None
    except (OSError, ValueError):
        return None


def find_home(config: Config, log: logging.Logger) -> None:
    """Before the first run of ``config`` at this path: take over the state of the same config moved here, or
    say that a copy starts from scratch (see the module's doc)."""
    state_dir = config.settings.state_dir
    if state_dir.exists() or state_dir != default_state_dir_for(config.path):
        return
    mine = fingerprint(config)
    for other in sorted(default_state_dir().glob("conveyor-*")):
        try:
            st = other.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue  # a symlink, another user's (a shared FC_STATE_DIR): not ours to take over
        data = _read_mark(other)
        if not isinstance(data, dict) or data.get("fingerprint") != mine or other == state_dir:
            continue
        old_config = Path(str(data.get("config")))
        if old_config.exists() or lock_holder(other / "conveyor"):
            log.warning(
                f"This config file has no state yet, so everything is sent again. {old_config}, with the same "
                f"sources and servers, has its state in {other}: to carry on from there instead, stop any "
                f"fc-conveyor running it and start this one with --state-dir {other}."
            )
            return
        try:
            # the paths first: moved, the state must not point at its old place (see repoint)
            repoint(other, state_dir, log)
            os.rename(other, state_dir)
        except OSError as exc:
            log.warning(f"The state of {old_config} (moved here?) is in {other}; it could not be moved: {exc}")
            return
        log.warning(
            f"This config file was {old_config} (gone now: moved or renamed): its state moves along, from {other} "
            f"to {state_dir}, and the run carries on where it left off."
        )
        return


def repoint(old: Path, new: Path, log: logging.Logger) -> None:
    """Write ``new`` for ``old`` in every path into the state directory that its state files hold.

    The stages name each other by their state files' paths: each line a stage keeps (outbox, inbox, quarantine)
    carries its writer's (``hop.from``) and fc-process's copy (``file``, in the state directory's work folder);
    the readers' acknowledgements and high-water marks are keyed by them.  Left pointing at the old directory,
    every reader's acknowledgement of a line kept from before the move failed ("no such state file"), so its
    writer replayed it at every start and kept it for days, and a processed copy on its way would not be found.
    Done before the directory is renamed: interrupted, the next start does it again (the old directory is still
    there), and after the rename nothing of the old paths is left to rewrite."""
    pairs = [(f"{old}/", f"{new}/")]
    escaped = (json.dumps(f"{old}/", ensure_ascii=False)[1:-1], json.dumps(f"{new}/", ensure_ascii=False)[1:-1])
    if escaped != pairs[0]:
        pairs.append(escaped)  # as a JSON string in a line (a path with a quote or a backslash)
    for path in sorted(old.glob("*.db")):
        try:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning(f"The state file {path} could not be opened to move it along: {exc}")
            continue
        try:
            db.execute("BEGIN IMMEDIATE")
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for column in [r[1] for r in db.execute(f"PRAGMA table_info({_quoted(table)})")]:
                    c = _quoted(column)
                    for was, now in pairs:
                        # a BLOB stays a BLOB (the stages read lines as bytes), a TEXT a TEXT
                        db.execute(
                            f"UPDATE {_quoted(table)} SET {c} = CASE typeof({c}) "
                            f"WHEN 'blob' THEN CAST(replace(CAST({c} AS TEXT), ?1, ?2) AS BLOB) "
                            f"ELSE replace({c}, ?1, ?2) END "
                            f"WHERE typeof({c}) IN ('text', 'blob') AND instr(CAST({c} AS TEXT), ?1) > 0",
                            (was, now),
                        )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            log.warning(f"The paths in the state file {path} could not be moved along: {exc}")
        finally:
            db.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
