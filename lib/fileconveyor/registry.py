"""One lookup for plugins (processors, transporters): built-in names, then entry
points, then a ``module:Class`` path.

Built-ins are a table of names to ``module:Class`` strings, imported only when
used, so a missing optional dependency (boto3 for S3, say) matters only to the
user who asked for that plugin, and then says what to install.  Third parties
plug in through the entry-point group (``fileconveyor.processors``,
``fileconveyor.transporters``) or by naming ``package.module:Class`` directly;
the original File Conveyor's ``package.Class`` form works too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")

# Python module names that differ from what pip installs.
PIP_NAMES = {"PIL": "Pillow", "fsevents": "macfsevents", "swiftclient": "python-swiftclient", "yaml": "PyYAML"}


class Registry(Generic[T]):
    def __init__(
        self,
        kind: str,
        group: str,
        base: type[T],
        builtins: Mapping[str, str],
        aliases: Mapping[str, str] | None = None,
    ):
        self.kind = kind  # "processor", "transporter": for messages
        self.group = group
        self.base = base
        self.builtins = dict(builtins)
        self.aliases = dict(aliases or {})

    def names(self) -> list[str]:
        """Built-in names, then those of installed third-party plugins."""
        extra = sorted(ep.name for ep in entry_points(group=self.group) if ep.name not in self.builtins)
        return [*self.builtins, *extra]

    def listing(self) -> str:
        """The names for a message, each with its aliases: "symlink_or_copy (file), ftp (ftps), ..."."""
        aka: dict[str, list[str]] = {}
        for alias, target in self.aliases.items():
            aka.setdefault(target, []).append(alias)
        return ", ".join(f"{n} ({', '.join(aka[n])})" if n in aka else n for n in self.names())

    def did_you_mean(self, name: str) -> str:
        """``did you mean X? `` for a near miss of a known name (or alias), else ""."""
        import difflib  # for a mistake only: not loaded by every stage that looks a name up

        known = [*self.names(), *self.aliases]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.75)
        # Two letters swapped (fpt for ftp) in a short name scores below the cutoff: taken as a near miss too.
        close = close or [k for k in known if len(k) == len(name) and sorted(k) == sorted(name)]
        # The near name as it is spelled, one per plugin: "fle" is a typo of the URL scheme "file", and "did you
        # mean symlink_or_copy?" (the plugin that scheme names) did not tell a user of --to what to write.
        by_plugin = {self.resolve(c): c for c in reversed(close)}
        close = list(dict.fromkeys(by_plugin[self.resolve(c)] for c in close))
        return f"did you mean {' or '.join(close)}? " if close else ""

    def resolve(self, name: str) -> str:
        """The canonical name for ``name`` (aliases followed)."""
        return self.aliases.get(name, name)

    def get(self, name: str) -> type[T]:
        """The plugin class called ``name``; ConfigError saying what to do when there is none."""
        canonical = self.resolve(name)
        target = self.builtins.get(canonical)
        if target is None:
            eps = [ep for ep in entry_points(group=self.group) if ep.name == canonical]
            if eps:
                return self._check(name, _guarded(name, self.kind, eps[0].load))
            if ":" in canonical:
                target = canonical
            elif "." in canonical:  # the original daemon's "package.Class"
                module, _, cls = canonical.rpartition(".")
                target = f"{module}:{cls}"
            else:
                raise ConfigError(
                    f"unknown {self.kind} {name!r}; {self.did_you_mean(canonical)}available: "
                    f"{self.listing()} (or give a third-party one as package.module:Class)"
                )
        module_name, _, attr = target.partition(":")
        if canonical not in self.builtins and not _importable(module_name.split(".")[0]):
            # No such module at all: most often a typo of a built-in name, not a package to install.
            raise ConfigError(
                f"unknown {self.kind} {name!r}: no built-in one and no installed module {module_name!r}; "
                f"{self.did_you_mean(canonical)}available: {self.listing()} "
                "(a third-party one needs its package installed)"
            )
        module = _guarded(name, self.kind, lambda: importlib.import_module(module_name))
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"{self.kind} {name!r}: module {module_name} has no {attr!r}") from None
        return self._check(name, cls)

    def _check(self, name: str, cls: object) -> type[T]:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ConfigError(f"{self.kind} {name!r} is not a {self.base.__name__} subclass")
        return cls


def entry_points(group: str) -> list:  # type: ignore[type-arg]
    """Installed plugins of ``group``.  importlib.metadata is imported here, not at start: it reads every
    installed distribution's metadata (20-80 ms of CPU), which a stage that uses only built-ins never needs."""
    from importlib.metadata import entry_points as installed

    return list(installed(group=group))


def _importable(top: str) -> bool:
    if top in sys.modules:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _guarded(name: str, kind: str, load):  # type: ignore[no-untyped-def]
    """Run an import, turning a missing dependency into a message that says what to install."""
    try:
        return load()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        pip = PIP_NAMES.get(missing, missing)
        raise ConfigError(f"{kind} {name!r} needs the Python package {pip!r}: pip install {pip}") from None
