"""The package's layering, read from its source: the library never imports ``cli/`` (the commands parse flags
and wire library parts; a library module that needs a command's parser or messages has the wrong home), and a
stage (stages/) knows the delivery only by its interface (delivery/stage.py: Stage, Done, StageContext...), never
the runner, so that another kind of hop carries the same stages."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "lib" / "fileconveyor"


def _imported(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names, relative ones resolved), with its line: lazy imports inside
    functions and ``if TYPE_CHECKING:`` blocks included."""
    package = ["fileconveyor", *path.relative_to(PACKAGE).parent.parts]  # an __init__.py's too: its own folder
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # "from .. import cli" / "from ..cli import transport": the names may be modules too
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return out


def _cli_imports_outside_cli() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli":
            continue
        lines = sorted({line for line, name in _imported(path) if name.split(".")[:2] == ["fileconveyor", "cli"]})
        found += [f"lib/fileconveyor/{rel}:{line} imports cli/" for line in lines]
    return found


def test_the_library_never_imports_cli() -> None:
    assert _cli_imports_outside_cli() == []


def test_stages_never_import_the_runner() -> None:
    found = []
    for path in sorted((PACKAGE / "stages").rglob("*.py")):
        found += [
            f"{path.relative_to(PACKAGE)}:{line} imports {name}"
            for line, name in _imported(path)
            if name.split(".")[:3] == ["fileconveyor", "delivery", "runner"]
        ]
    assert found == []


def test_the_check_sees_every_form_of_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk finds relative, absolute, lazy and type-only imports of cli (else the test above proves nothing)."""
    fake = tmp_path / "lib" / "fileconveyor"
    (fake / "delivery").mkdir(parents=True)
    (fake / "cli").mkdir()
    forms = [
        "from ..cli._common import Reporter\n",
        "from .. import cli\n",
        "import fileconveyor.cli.transport\n",
        "def f():\n    from ..cli.transport import build_parser\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fileconveyor.cli._common import Reporter\n",
    ]
    for i, text in enumerate(forms):
        (fake / "delivery" / f"m{i}.py").write_text(text)
    (fake / "delivery" / "fine.py").write_text("from ..report import Reporter\nfrom . import runner\n")
    (fake / "cli" / "ok.py").write_text("from ._common import Streams\n")  # cli/ itself may
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = _cli_imports_outside_cli()
    assert sorted({f.split(":")[0] for f in found}) == [f"lib/fileconveyor/delivery/m{i}.py" for i in range(len(forms))]
