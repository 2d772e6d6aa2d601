"""What ``bin/fc-*`` run: the checkout's own interpreter, or one clear message when there is none.

The launchers start with ``#!/usr/bin/env python3``: whatever ``python3`` comes first on PATH, which on a
fresh machine has none of File Conveyor's packages.  So a launcher in a checkout that has its ``.venv``
(``make deps``) runs with that interpreter, and an interpreter without the packages ends with exit status 3
and what to do, instead of a traceback called a bug.  This module (and errors.py) use the standard library
only: they run before anything is known to be installed.
"""

from __future__ import annotations

import os
import sys

# Nothing else at the top: a launcher run by another interpreter re-executes itself with the checkout's before it
# needs more (threading, enum through errors.py, importlib.util: a few ms of that first interpreter per stage).

# The import name of each runtime dependency in pyproject.toml, with its distribution name (what pip
# installs) and the platform it is needed on (None: every platform).  tests/cli/test_launch.py checks that
# this table and pyproject.toml agree.
REQUIRED: tuple[tuple[str, str, str | None], ...] = (
    ("inotify_simple", "inotify-simple", "linux"),
    ("fsevents", "macfsevents", "darwin"),
    ("PIL", "Pillow", None),
    ("rcssmin", "rcssmin", None),
    ("rjsmin", "rjsmin", None),
    ("paramiko", "paramiko", None),
    ("boto3", "boto3", None),
    ("swiftclient", "python-swiftclient", None),
    ("keystoneclient", "python-keystoneclient", None),
)

# Set by the launcher before it re-executes itself with the checkout's interpreter: never twice.
_REEXEC = "FC_LAUNCHED_FROM_CHECKOUT"


def missing() -> list[str]:
    """Distribution names of the dependencies this interpreter cannot import (not importing them: cheap)."""
    import importlib.util

    out = []
    for module, dist, platform in REQUIRED:
        if platform is not None and not sys.platform.startswith(platform):
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(dist)
    return out


def checkout_python(script: str) -> str | None:
    """The interpreter of the checkout's ``.venv`` when ``script`` (a launcher in ``bin/``) has one and it is
    not the one running, else None."""
    if os.environ.get(_REEXEC):
        return None
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(script)))
    venv = os.path.join(checkout, ".venv")
    python = os.path.join(venv, "bin", "python")
    if not os.access(python, os.X_OK):
        return None
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return None
    return python


def launch(command: str, script: str) -> int:
    """Run ``fc-<command>`` for the launcher ``script``: re-executed with the checkout's ``.venv`` when it
    has one, else with this interpreter once the dependencies are found."""
    prog = f"fc-{command}"
    python = checkout_python(script)
    if python is not None:
        os.environ[_REEXEC] = "1"
        try:
            os.execv(python, [python, script, *sys.argv[1:]])
        except OSError as exc:  # a broken .venv: say so, then try this interpreter
            sys.stderr.write(f"{prog}: warning: cannot run {python}: {exc.strerror}\n")
    from .errors import Exit

    absent = missing()
    if absent:
        venv_bin = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(script))), ".venv", "bin")
        sys.stderr.write(
            f"{prog}: error: this Python ({sys.executable}) lacks File Conveyor's packages "
            f"({', '.join(absent)}). Run 'make deps' in the checkout, then {os.path.join(venv_bin, prog)} "
            f"(bin/{prog} uses .venv by itself once it exists), or 'pip install .' into this Python.\n"
        )
        return Exit.CONFIG
    return run_command(command)


def run_command(command: str) -> int:
    """``fc-<command>``'s main, ended by exit_now: the launchers in bin/ and the entry points pip installs
    (below) both come here, so an installed stage skips the interpreter's teardown too."""
    import importlib

    main = importlib.import_module(f"fileconveyor.cli.{command}").main
    return exit_now(int(main()))


# the entry points of pyproject.toml's [project.scripts]
def fc_watch() -> int:
    return run_command("watch")


def fc_filter() -> int:
    return run_command("filter")


def fc_process() -> int:
    return run_command("process")


def fc_transport() -> int:
    return run_command("transport")


def fc_record() -> int:
    return run_command("record")


def fc_verify() -> int:
    return run_command("verify")


def fc_tee() -> int:
    return run_command("tee")


def fc_publish() -> int:
    return run_command("publish")


def fc_consume() -> int:
    return run_command("consume")


def fc_conveyor() -> int:
    return run_command("conveyor")


def exit_now(status: int) -> int:
    """End the program with ``status`` once its command returned: its work is done and its files are closed, so
    the interpreter's teardown (freeing every module and object one by one: 15-20 ms of CPU, at the end of every
    stage of a pipeline, the last one's on the pipeline's time) is skipped.  What a normal exit does besides is
    done first: the atexit handlers (logging's flush, coverage's data) and the flush of stdout and stderr.  Returns
    (for the normal exit, sys.exit) when a thread that is not a daemon still runs, which a normal exit waits for, or
    when a flush fails (Python's own exit reports that)."""
    import atexit
    import threading

    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return status
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None or not _flushed():
        return status
    run_exitfuncs()
    _flushed()  # what a handler wrote; a failure now would be reported by no one either
    os._exit(status)


def _flushed() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return False
    return True
