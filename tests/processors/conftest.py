"""Helpers for processor tests: run one processor step on a real file, make real images."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fileconveyor.processors import Context, Output, Processor, apply
from tests.conftest import require_tool

# Tools per Debian package, as scripts/install-system-deps installs them for `test`.
TOOLS = {"jpegtran": "libjpeg-turbo-progs", "optipng": "optipng", "gifsicle": "gifsicle"}

# Names that broke the original's shell strings: spaces, quotes, a leading dash,
# a newline, shell syntax, bytes that are not UTF-8.
HOSTILE = [b"a b.", b'it\'s "q".', b"-rf.", b"new\nline.", b"$(touch pwned).", b"caf\xe9 \xff."]


def step(
    proc: Processor,
    src: Path | bytes,
    work: Path,
    *,
    basename: bytes | None = None,
    options: Mapping[str, str] | None = None,
    event: Mapping[str, Any] | None = None,
    names: Mapping[bytes, bytes] | None = None,
    waited: float = 0.0,
) -> tuple[Output, Context]:
    """Run ``proc`` on ``src`` with a fresh work directory, as fc-process will."""
    path = os.fsencode(src)
    work.mkdir(exist_ok=True)
    ctx = Context(
        input=path,
        original=path,
        basename=basename if basename is not None else os.path.basename(path),
        work_dir=os.fsencode(work),
        event=dict(event or {}),
        options=dict(options or {}),
        current_name=(lambda p: names.get(p)) if names is not None else None,
        waited=waited,
    )
    return apply(proc, ctx), ctx


def read(path: bytes | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def noise_image(mode: str = "RGB", size: tuple[int, int] = (64, 48), seed: int = 1):  # type: ignore[no-untyped-def]
    """A deterministic image with gradients and some noise: compressible, but not trivially."""
    from PIL import Image

    rnd = random.Random(seed)
    im = Image.new("RGB", size)
    w, h = size
    im.putdata(
        [((x * 4) % 256, (y * 5) % 256, ((x + y) * 3 + rnd.randrange(8)) % 256) for y in range(h) for x in range(w)]
    )
    return im.convert(mode) if mode != "RGB" else im


@pytest.fixture
def image_tools() -> None:
    for tool, pkg in TOOLS.items():
        require_tool(tool, f"Debian package {pkg}")
