"""The one plugin lookup: built-ins (lazily), aliases, module:Class and package.Class paths."""

from __future__ import annotations

import sys
import types

import pytest

from fileconveyor.errors import ConfigError
from fileconveyor.registry import Registry


class Base:
    pass


class Good(Base):
    pass


class NotAPlugin:
    pass


@pytest.fixture
def reg() -> Registry[Base]:
    mod = types.ModuleType("fc_test_plugins")
    mod.Good, mod.NotAPlugin = Good, NotAPlugin  # type: ignore[attr-defined]
    sys.modules["fc_test_plugins"] = mod
    yield Registry(
        "processor",
        "fileconveyor.test-nothing",
        Base,
        {"good.Good": "fc_test_plugins:Good", "needs.Dep": "fc_no_such_dependency_xyz.sub:Thing"},
        {"modern-good": "good.Good"},
    )
    del sys.modules["fc_test_plugins"]


def test_builtin_alias_and_paths(reg: Registry[Base]) -> None:
    assert reg.get("good.Good") is Good
    assert reg.get("modern-good") is Good
    assert reg.get("fc_test_plugins:Good") is Good
    assert reg.get("fc_test_plugins.Good") is Good  # the original daemon's package.Class form
    assert reg.names()[:2] == ["good.Good", "needs.Dep"]


def test_missing_dependency_says_what_to_install(reg: Registry[Base]) -> None:
    with pytest.raises(ConfigError, match=r"needs the Python package 'fc_no_such_dependency_xyz': pip install"):
        reg.get("needs.Dep")


def test_unknown_and_wrong_type(reg: Registry[Base]) -> None:
    with pytest.raises(ConfigError, match=r"unknown processor 'nope'; available: good.Good \(modern-good\), needs.Dep"):
        reg.get("nope")
    with pytest.raises(ConfigError, match="is not a Base subclass"):
        reg.get("fc_test_plugins:NotAPlugin")
    with pytest.raises(ConfigError, match="has no 'Missing'"):
        reg.get("fc_test_plugins:Missing")


def test_a_typo_in_a_module_name_is_not_sent_to_pip(reg: Registry[Base]) -> None:
    """ "god.Good" is a typo of a built-in, not a package to install."""
    with pytest.raises(ConfigError, match=r"no installed module 'god'; did you mean good.Good\?") as info:
        reg.get("god.Good")
    assert "pip install" not in str(info.value)
