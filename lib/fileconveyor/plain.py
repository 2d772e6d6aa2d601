"""Value equality, a repr and, for read-only values, ``replace``: what the dataclasses on a stage's path gave, in
one place, without dataclasses.

Every stage pays its imports and class making at every start (issue 18: three to five interpreters start at once
on two cores before the first file moves).  dataclasses imports inspect, ast, dis and tokenize (5-8 ms) and compiles
each class's methods with ``exec`` (0.4-1 ms a class): 10-17 ms of every stage's start.  So the classes a stage
makes write their own ``__init__`` (per-line ones stay as fast as the generated ones were) and take the rest from
here.  Classes that hold a run's state rather than a value (options, counters, notes) are plain classes compared
by identity.  tests/cli/test_startup.py fails when a stage imports dataclasses again.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

V = TypeVar("V", bound="Frozen")


class Value:
    """Equal to another of its class with equal ``_fields``, shown by them; unhashable (it may change)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()  # compared and shown, in the order of __init__'s arguments

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"


class Frozen(Value):
    """A read-only Value, hashed by its ``_fields``; ``replace`` makes a changed copy.  Its ``__init__`` sets the
    attributes through ``self.__dict__`` (or ``object.__setattr__`` with slots), and a pickled one comes back."""

    __slots__ = ()
    _also: ClassVar[tuple[str, ...]] = ()  # more arguments of __init__, neither compared nor shown (secrets)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name} (replace makes a copy)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot delete {name}")

    def __hash__(self) -> int:
        return hash(self._values())

    def replace(self: V, **changes: Any) -> V:
        """A copy with ``changes`` (keyword arguments of ``__init__``)."""
        args = {name: getattr(self, name) for name in (*self._fields, *self._also)}
        return type(self)(**{**args, **changes})
