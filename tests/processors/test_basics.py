"""The Processor interface, the registry, filename.*, unique_filename.* and cmd: (golden name cases)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from fileconveyor.errors import ConfigError
from fileconveyor.processors import PROCESSORS, Context, Output, Processor, ProcessorError, ToolMissing, apply, create
from fileconveyor.processors.base import Tool, missing_tools, not_larger

from ..conftest import require_tool
from .conftest import HOSTILE, read, step

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_builtin_has_the_same_shape() -> None:
    for name in PROCESSORS.builtins:
        cls = PROCESSORS.get(name)
        assert cls.name == name and cls.description and "\n" not in cls.description
        assert all(e.startswith(".") and e == e.lower() for e in cls.extensions)
        assert all(isinstance(t, Tool) for t in cls.tools)
        assert "before/after" in (sys.modules[cls.__module__].__doc__ or "")
    assert PROCESSORS.get("md5") is PROCESSORS.get("unique_filename.MD5")


def test_template_is_a_working_processor(tmp_path: Path) -> None:
    src = tmp_path / "Logo.PNG"
    src.write_bytes(b"x")
    out, _ = step(PROCESSORS.get("fileconveyor.processors._template:Lowercase")(), src, tmp_path / "w")
    assert out == Output(os.fsencode(src), b"logo.png")


# Golden name cases: tests/processors/fixtures/names.json lists processor, base name, event and expected name.
NAMES = json.loads((FIXTURES / "names.json").read_text())


@pytest.mark.parametrize("case", NAMES, ids=lambda c: f"{c['processor']}:{c['basename']}")
def test_name_golden(case: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "content"
    src.write_bytes(case.get("content", "").encode())
    event = {"mtime_ns": case["mtime_ns"]} if "mtime_ns" in case else {}
    out, _ = step(create(case["processor"]), src, tmp_path / "w", basename=case["basename"].encode(), event=event)
    assert out == Output(os.fsencode(src), case["expected"].encode())  # names change, content is not copied


def test_md5_hashes_current_content_and_keeps_current_extension(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))  # several blocks
    out, _ = step(create("unique_filename.MD5"), big, tmp_path / "w", basename=b"logo.png")
    assert out.basename == b"logo_" + hashlib.md5(big.read_bytes()).hexdigest().encode() + b".png"


def test_mtime_without_event_field_uses_the_source(tmp_path: Path) -> None:
    src = tmp_path / "a.css"
    src.write_text("x")
    os.utime(src, (1240668971, 1240668971))
    out, _ = step(create("unique_filename.Mtime"), src, tmp_path / "w")
    assert out.basename == b"a_1240668971.css"


def test_mtime_without_event_field_never_gives_a_links_target_time(tmp_path: Path) -> None:
    # A symlink at the source's path (swapped in after fc-process's checks, or in a hand-made event) named a file
    # anywhere: its target's time went into the name uploaded for all to see.
    secret = tmp_path / "outside"
    secret.write_text("x")
    os.utime(secret, (1111111111, 1111111111))
    link = tmp_path / "a.css"
    link.symlink_to(secret)
    with pytest.raises(ProcessorError, match="not a regular file"):
        step(create("unique_filename.Mtime"), link, tmp_path / "w")


class Escapes(Processor):
    name = "test.Escapes"

    def process(self, ctx: Context) -> Output:
        return Output(ctx.input, b"../" + ctx.basename)


class Sneaky(Processor):
    name = "test.Sneaky"
    renames = False

    def process(self, ctx: Context) -> Output:
        return Output(ctx.input, b"other")


class NeedsNothing(Processor):
    name = "test.NeedsNothing"
    tools = (Tool("fc-no-such-tool-xyz", "fc-imaginary-package"),)

    def process(self, ctx: Context) -> Output:
        return self.convert(ctx, b".txt", lambda src, out: ["fc-no-such-tool-xyz", src, out]), ctx.basename


def test_rules_enforced_on_outputs(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    with pytest.raises(ProcessorError, match="invalid base name"):
        step(Escapes(), src, tmp_path / "w")
    with pytest.raises(ProcessorError, match="does not declare renames"):
        step(Sneaky(), src, tmp_path / "w")
    ctx = Context(os.fsencode(src), os.fsencode(src), b"a.txt", os.fsencode(tmp_path / "w"))
    with pytest.raises(ProcessorError, match="outside the work directory"):
        from fileconveyor.processors.base import checked

        checked(create("minify.CSS"), ctx, Output(os.fsencode(tmp_path / "elsewhere.css"), b"a.txt"))


def test_missing_tool_is_clear(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    assert NeedsNothing().missing_tools() == [
        "fc-no-such-tool-xyz (install it with: apt-get install fc-imaginary-package)"
    ]
    with pytest.raises(ToolMissing, match=r"test.NeedsNothing: missing tool fc-no-such-tool-xyz \(install it with"):
        step(NeedsNothing(), src, tmp_path / "w")
    assert missing_tools([Tool("sh", "dash")]) == []


def test_applies_to_is_case_insensitive_and_skips_others(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    assert create("image_optimizer.Max").applies_to(b"A.JPEG")
    out, _ = step(create("image_optimizer.Max"), src, tmp_path / "w")  # not applicable: passes through
    assert out == Output(os.fsencode(src), b"a.txt")


# -- cmd: ---------------------------------------------------------------------------


@pytest.mark.parametrize("stem", HOSTILE, ids=repr)
def test_cmd_with_hostile_names(stem: bytes, tmp_path: Path) -> None:
    require_tool("optipng", "Debian package optipng")
    from PIL import Image

    src = os.path.join(os.fsencode(tmp_path), stem + b"png")
    Image.new("RGB", (64, 64), "red").save(os.fsdecode(src), compress_level=0)
    out, _ = step(create("cmd:optipng -quiet -out {out} {in}"), src, tmp_path / "w")
    assert out.basename == stem + b"png" and os.path.getsize(out.path) < os.path.getsize(src)
    with Image.open(out.path) as im:
        assert im.convert("RGB").tobytes() == Image.new("RGB", (64, 64), "red").tobytes()
    assert not (Path.cwd() / "pwned").exists()


def test_cmd_stdout_and_in_place_tools_never_touch_the_source(tmp_path: Path) -> None:
    src = tmp_path / "a b.txt"
    src.write_text("hello\n")
    out, _ = step(create("cmd:sed -e s/hello/bye/ {in}"), src, tmp_path / "w")
    assert read(out.path) == b"bye\n"
    out, _ = step(create("cmd:sed -i -e s/hello/bye/ {in}", {"extensions": "TXT"}), src, tmp_path / "w")
    assert read(out.path) == b"bye\n"  # no {out} and no stdout: the edited copy is the result
    assert src.read_text() == "hello\n"  # {in} is a private copy


def test_cmd_with_odd_extension(tmp_path: Path) -> None:
    src = os.path.join(os.fsencode(tmp_path), b"-x.\xff\n")
    with open(src, "wb") as f:
        f.write(b"data")
    out, _ = step(create("cmd:cat -- {in}"), src, tmp_path / "w")
    assert read(out.path) == b"data" and out.basename == b"-x.\xff\n"


def test_cmd_errors(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    with pytest.raises(ProcessorError, match=r"false failed \(exit 1\)"):
        step(create("cmd:false {in}"), src, tmp_path / "w")
    missing = create("cmd:fc-no-such-cmd-xyz {in} {out}")
    assert missing.missing_tools() == ["fc-no-such-cmd-xyz (not found on PATH)"]
    with pytest.raises(ToolMissing, match=r"missing tool fc-no-such-cmd-xyz \(not found on PATH\)"):
        step(missing, src, tmp_path / "w")
    with pytest.raises(ProcessorError, match=r"timed out after 0\.3 s"):
        step(create("cmd:sh -c 'sleep 5' {in}", {"timeout": "0.3"}), src, tmp_path / "w")
    for bad in ("cmd:", "cmd:optipng", "cmd:echo 'unclosed {in}"):
        with pytest.raises(ConfigError):
            create(bad)
    assert not create("cmd:cat {in}", {"extensions": "png:jpg"}).applies_to(b"a.txt")


def test_apply_checks_file_exists(tmp_path: Path) -> None:
    class NoFile(Processor):
        name = "test.NoFile"

        def process(self, ctx: Context) -> Output:
            return Output(os.path.join(ctx.scratch(), b"never-written"), ctx.basename)

    src = tmp_path / "a"
    src.write_text("x")
    ctx = Context(os.fsencode(src), os.fsencode(src), b"a", os.fsencode(tmp_path))
    with pytest.raises(ProcessorError, match="produced no output file"):
        apply(NoFile(), ctx)


# -- how tools are run -----------------------------------------------------------------


class ShowsItsInput(Processor):
    """Its tool writes the input path it was given into the output file."""

    name = "test.ShowsItsInput"
    tools = (Tool("sh", "dash"),)

    def process(self, ctx: Context) -> Output:
        out = self.convert(ctx, b".txt", lambda src, out: ["sh", "-c", 'printf %s "$1" > "$2"', "sh", src, out])
        assert out is not None
        return Output(out, ctx.basename)


@pytest.mark.parametrize("stem", [s for s in HOSTILE if s != b"-rf."] + [b"*.", b"[a].", b"a,b=c."], ids=repr)
def test_tools_get_plain_paths_as_they_are_and_a_link_for_others(stem: bytes, tmp_path: Path) -> None:
    for name in ("plain-name_1.txt", "-rf.txt"):  # an absolute path never looks like an option
        plain = tmp_path / name
        plain.write_text("x")
        out, ctx = step(ShowsItsInput(), plain, tmp_path / "w")
        assert read(out.path) == os.fsencode(plain)  # no symlink made for a plain name
        assert os.path.dirname(out.path) == ctx.work_dir  # step files, no directory per step
    hostile = os.path.join(os.fsencode(tmp_path), stem + b"txt")
    with open(hostile, "wb") as f:
        f.write(b"x")
    out, ctx = step(ShowsItsInput(), hostile, tmp_path / "w")
    given = read(out.path)
    assert os.path.dirname(given) == ctx.work_dir and os.path.basename(given).endswith(b"-in.txt")
    assert os.readlink(given) == hostile
    upper = tmp_path / "UPPER.TXT"  # the extension the tool expects differs: staged as in.txt
    upper.write_text("x")
    out, _ = step(ShowsItsInput(), upper, tmp_path / "w")
    assert read(out.path).endswith(b"-in.txt")


def test_tool_lookup_follows_path_and_uninstalls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool's path is looked up once per PATH, yet a tool removed later is reported as missing."""

    class Fake(Processor):
        name = "test.Fake"
        tools = (Tool("fc-fake-tool", "fc-fake-package"),)

        def process(self, ctx: Context) -> Output:
            return not_larger(ctx, self.convert(ctx, b".txt", lambda src, out: ["fc-fake-tool", src, out]))

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "fc-fake-tool"
    tool.write_text('#!/bin/sh\nprintf y > "$2"\n')
    tool.chmod(0o755)
    src = tmp_path / "a.txt"
    src.write_text("longer")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out, _ = step(Fake(), src, tmp_path / "w")
    assert read(out.path) == b"y"
    tool.unlink()
    with pytest.raises(ToolMissing, match=r"fc-fake-tool \(install it with: apt-get install fc-fake-package\)"):
        step(Fake(), src, tmp_path / "w")
    tool.write_text('#!/bin/sh\nprintf z > "$2"\n')
    tool.chmod(0o755)
    assert read(step(Fake(), src, tmp_path / "w")[0].path) == b"z"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing):
        step(Fake(), src, tmp_path / "w")
