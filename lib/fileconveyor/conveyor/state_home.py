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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

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
    try:
        if json.loads(mark.read_text()) == data:
            return
    except (OSError, ValueError):
        pass
    tmp = mark.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, mark)


def find_home(config: Config, log: logging.Logger) -> None:
    """Before the first run of ``config`` at this path: take over the state of the same config moved here, or
    say that a copy starts from scratch (see the module's doc)."""
    state_dir = config.settings.state_dir
    if state_dir.exists() or state_dir != default_state_dir_for(config.path):
        return
    mine = fingerprint(config)
    for other in sorted(default_state_dir().glob("conveyor-*")):
        try:
            data = json.loads((other / MARK).read_text())
        except (OSError, ValueError):
            continue
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
            os.rename(other, state_dir)
        except OSError as exc:
            log.warning(f"The state of {old_config} (moved here?) is in {other}; it could not be moved: {exc}")
            return
        log.warning(
            f"This config file was {old_config} (gone now: moved or renamed): its state moves along, from {other} "
            f"to {state_dir}, and the run carries on where it left off."
        )
        return
