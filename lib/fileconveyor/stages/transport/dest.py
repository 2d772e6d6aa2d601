"""fc-transport's destinations: what ``--to``, ``--url`` and ``--config`` describe, and ``--list``.

A destination is a Destination (transporters/destination.py: spec, settings, secrets) plus the transporter class
that serves it and how many connections fc-transport opens to it.  Its name (``?name=`` in the spec, ``name =``
in a config file, else the host, else the scheme) is the ``server`` of every event it produces, and the lane of
the stage's work: a destination that is down pauses only its own lane.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlencode

from ...errors import ConfigError, UsageError
from ...transporters import TRANSPORTERS, Destination, Transporter, parse_destination

MAX_CONNECTIONS = 64  # more than this to one server is a typo, not a plan


class Target:
    """One destination, ready to open transporters for."""

    def __init__(self, dest: Destination, cls: type[Transporter], connections: int):
        self.dest = dest
        self.cls = cls
        self.connections = connections

    @property
    def name(self) -> str:
        return self.dest.name

    def make(self) -> Transporter:
        if self.cls.isolated_for(self.dest):
            from ...transporters.isolated import isolated  # multiprocessing: only for a transporter that needs it

            tp = isolated(self.cls)(self.dest)
        else:
            tp = self.cls(self.dest)
        tp.defer_invalidations = True  # the stage keeps them in its state file (transport_purge.py)
        return tp


def targets_from(
    pieces: Sequence[tuple[str, str]],
    *,
    skip_unchanged: bool = False,
    warn: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Target]:
    """Destinations from the ``--to``/``--config``/``--url`` flags, in command-line order.

    ``skip_unchanged`` (``--skip-unchanged``) turns the setting on for every destination whose transporter has
    it and that does not set it itself; the others are named to ``warn``.

    ``--to`` starts a destination; ``--url`` and ``--config`` after it belong to it.  A ``--config`` that follows
    no ``--to`` (or one that already has a config) starts a destination of its own, from the file's ``to =``.
    Secrets come from ``env`` (default: the process's environment)."""
    specs: list[dict[str, str | None]] = []
    for flag, value in pieces:
        if flag == "to":
            specs.append({"to": value, "url": None, "config": None})
        elif flag == "config":
            if specs and specs[-1]["config"] is None:
                specs[-1]["config"] = value
            else:
                specs.append({"to": None, "url": None, "config": value})
        elif flag == "url":
            if not specs:
                raise UsageError("--url BASE goes after the --to DESTINATION it belongs to")
            if specs[-1]["url"] is not None:
                raise UsageError(f"two --url for one destination ({specs[-1]['url']} and {value})")
            specs[-1]["url"] = value
        elif flag in ("set", "endpoint_url"):
            key, eq, setting = value.partition("=") if flag == "set" else ("endpoint_url", "=", value)
            if not specs or specs[-1]["to"] is None:
                raise UsageError(f"--{flag.replace('_', '-')} goes after the --to DESTINATION it belongs to")
            if not eq or not key:
                raise UsageError(f"--set {value!r}: expected KEY=VALUE (e.g. --set connections=8)")
            # the same as ?key=value in the spec (and checked the same way: no secrets here)
            to = specs[-1]["to"] or ""
            specs[-1]["to"] = to + ("&" if "?" in to else "?") + urlencode({key: setting})
    if not specs:
        raise UsageError("no destination: give --to URL (e.g. --to file:///srv/cdn --url http://cdn.example/)")
    targets = []
    for s in specs:
        dest = parse_destination(s["to"], url=s["url"], config=s["config"], env=env)
        cls = TRANSPORTERS.get(dest.scheme)
        if skip_unchanged and "skip_unchanged" not in dest.settings:
            if cls.can_skip_unchanged():
                dest = dest.replace(settings={**dest.settings, "skip_unchanged": "yes"})
            elif warn is not None:
                warn(
                    f"--skip-unchanged: {dest} ({cls.name}) cannot compare contents without downloading them; "
                    "every file is sent there"
                )
        tp = cls(dest)  # checks the settings now, before any event is read
        targets.append(Target(dest, cls, _connections(dest, cls)))
        del tp
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"two destinations are called {dupes[0]!r}: name them apart with ?name=NAME in the spec "
            f"(or name = NAME in the config file); the name is the 'server' of their events"
        )
    return targets


def _connections(dest: Destination, cls: type[Transporter]) -> int:
    text = dest.settings.get("connections")
    if text is None:
        return max(1, cls.default_connections)
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"{dest}: connections must be a whole number, not {text!r}") from None
    if not 1 <= n <= MAX_CONNECTIONS:
        raise ConfigError(f"{dest}: connections must be between 1 and {MAX_CONNECTIONS}, not {n}")
    return n


def list_transporters() -> str:
    """What ``--list`` prints: every transporter with its URL schemes and settings."""
    out = []
    for name in TRANSPORTERS.names():
        try:
            cls = TRANSPORTERS.get(name)
        except ConfigError as exc:  # an optional dependency missing: say so, list the rest
            out.append(f"{name}\n  unavailable: {exc}\n")
            continue
        schemes = ", ".join(f"{s}://" for s in cls.schemes) or "-"
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append(f"{name}  (URL schemes: {schemes}; default connections: {cls.default_connections})")
        if doc:
            out.append(f"  {doc[0]}")
        width = max(len(k) for k in cls.all_settings())
        for key, text in cls.all_settings().items():
            out.append(f"  {key.ljust(width)}  {text}")
        out.append("")
    out.append(
        "Settings go in the spec's query (sftp://host/dir?key_file=~/.ssh/deploy&connections=8) or in a\n"
        "--config file (key = value lines); passwords only in FC_<NAME>_PASSWORD / FC_PASSWORD or a config\n"
        "file readable by you alone.  A third-party transporter: --to its scheme after installing it with a\n"
        "fileconveyor.transporters entry point (template: lib/fileconveyor/transporters/_template.py)."
    )
    return "\n".join(out) + "\n"
