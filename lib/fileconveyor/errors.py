"""The exception tree and the exit statuses shared by every fc-* command.

The library raises these; only cli/_common.py turns them into a message on stderr
and an exit status, so every command reports errors the same way.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """Exit statuses.  Scripts and supervisors can tell "retry" from "give up"."""

    OK = 0
    EVENTS_FAILED = 1  # ran to the end, but some events carry an error
    USAGE = 2  # bad flags or arguments: fix the command line
    CONFIG = 3  # bad configuration or state file: fix the set-up, retrying won't help
    RETRY = 4  # temporary trouble (server down, disk full, state busy): try again later
    FATAL = 5  # a bug or an unexpected failure: report it
    INTERRUPTED = 130  # SIGINT; SIGTERM gives 143 (128 + signal number)
    BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), as for GNU tools


class FCError(Exception):
    """Base of every error File Conveyor reports to a person."""

    exit = Exit.FATAL


class UsageError(FCError):
    exit = Exit.USAGE


class ConfigError(FCError):
    exit = Exit.CONFIG


class RetryableError(FCError):
    """Worth retrying later: the cause is expected to go away."""

    exit = Exit.RETRY


class StateError(ConfigError):
    """A state file that cannot be opened, is locked by another process, or is too new."""


class StateBusy(RetryableError):
    """The state file is in use by another running instance."""


class Stopped(Exception):
    """A stop was asked for (SIGTERM, SIGINT) in the middle of long work, such as a scan
    of a large tree: it unwinds to the command, which ends as after any stop request."""
