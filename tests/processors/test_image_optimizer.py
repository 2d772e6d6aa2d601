"""image_optimizer.*: lossless (decoded pixels compared with Pillow), never larger, metadata as the class says."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageSequence, PngImagePlugin

from fileconveyor.processors import PROCESSORS, Context, ProcessorError, apply, create
from fileconveyor.processors.image_optimizer import KeepFilename, KeepMetadata, KeepMetadataAndFilename, Max

from ..conftest import ROOT
from .conftest import HOSTILE, noise_image, read, step

pytestmark = pytest.mark.usefixtures("image_tools")
CLASSES = [Max, KeepMetadata, KeepFilename, KeepMetadataAndFilename]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    exif = Image.Exif()
    exif[0x010F] = "FCTestCamera"  # Make
    exif[0x8298] = "(c) FCTestOwner"  # Copyright
    noise_image(size=(400, 300)).save(d / "photo.jpg", quality=95, exif=exif.tobytes())
    noise_image(size=(24, 24), seed=2).save(d / "small.jpg", quality=80, exif=exif.tobytes())
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "FCTestAuthor")
    noise_image("RGBA", (120, 90), seed=3).save(d / "image.png", compress_level=1, pnginfo=info)
    pal = noise_image(size=(80, 60), seed=4).quantize(64)
    pal.save(d / "single.gif", comment=b"FCTestComment")
    pal.save(d / "transparent.gif", transparency=3)
    frames = [noise_image(size=(50, 40), seed=s).quantize(32) for s in (5, 6, 7)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], loop=0, duration=[100, 200, 300])
    Image.new("P", (1, 1)).save(d / "tiny.gif")  # 35 bytes: as a PNG it would be larger
    (d / "text.png").write_bytes(b"not an image at all\n")
    (d / "truncated.jpg").write_bytes((d / "photo.jpg").read_bytes()[:20000])
    (d / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + b"garbage" * 10)
    return {p.name: p for p in d.iterdir()}


def frames(path: Path | bytes) -> list[tuple[tuple[int, int], bytes]]:
    """Every frame as displayed (composited), RGBA: what lossless must preserve."""
    with Image.open(os.fsdecode(path)) as im:
        return [(f.size, f.convert("RGBA").tobytes()) for f in ImageSequence.Iterator(im)]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
@pytest.mark.parametrize("name", ["photo.jpg", "small.jpg", "image.png", "single.gif", "transparent.gif", "anim.gif"])
def test_lossless_and_never_larger(cls: type[Max], name: str, images: dict[str, Path], tmp_path: Path) -> None:
    src = images[name]
    out, _ = step(cls(), src, tmp_path / "work")
    assert frames(out.path) == frames(src)
    assert os.path.getsize(out.path) <= src.stat().st_size
    assert read(src) == read(images[name])  # the source is never touched


def test_jpeg_metadata_stripped_or_kept_and_progressive(images: dict[str, Path], tmp_path: Path) -> None:
    stripped, _ = step(Max(), images["photo.jpg"], tmp_path / "a")
    kept, _ = step(KeepMetadata(), images["photo.jpg"], tmp_path / "b")
    assert b"FCTestOwner" in read(images["photo.jpg"])
    assert b"FCTestOwner" not in read(stripped.path) and b"FCTestCamera" not in read(stripped.path)
    assert Image.open(kept.path).getexif()[0x8298] == "(c) FCTestOwner"
    assert stripped.path != os.fsencode(images["photo.jpg"])  # smaller, so optimised
    assert images["photo.jpg"].stat().st_size >= 10 * 1024
    assert Image.open(stripped.path).info.get("progressive")  # >= 10 KiB: progressive
    small, _ = step(Max(), images["small.jpg"], tmp_path / "c")
    assert not Image.open(small.path).info.get("progressive")


def test_png_metadata(images: dict[str, Path], tmp_path: Path) -> None:
    stripped, _ = step(Max(), images["image.png"], tmp_path / "a")
    kept, _ = step(KeepMetadataAndFilename(), images["image.png"], tmp_path / "b")
    assert stripped.basename == kept.basename == b"image.png"
    assert b"FCTestAuthor" not in read(stripped.path)
    assert Image.open(kept.path).text == {"Author": "FCTestAuthor"}
    assert os.path.getsize(stripped.path) < images["image.png"].stat().st_size


def test_single_gif_becomes_png_only_where_renames_allowed(images: dict[str, Path], tmp_path: Path) -> None:
    out, _ = step(Max(), images["single.gif"], tmp_path / "a", basename=b"logo.gif")
    assert out.basename == b"logo.png" and Image.open(out.path).format == "PNG"
    same, _ = step(KeepFilename(), images["single.gif"], tmp_path / "b", basename=b"logo.gif")
    assert same.basename == b"logo.gif" and Image.open(same.path).format == "GIF"


def test_animated_gif_stays_animated(images: dict[str, Path], tmp_path: Path) -> None:
    out, _ = step(Max(), images["anim.gif"], tmp_path / "w")
    assert out.basename == b"anim.gif"
    with Image.open(out.path) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.info.get("loop") == 0
        assert [f.info["duration"] for f in ImageSequence.Iterator(im)] == [100, 200, 300]


def test_not_smaller_passes_the_original_bytes_and_name(images: dict[str, Path], tmp_path: Path) -> None:
    tiny, _ = step(Max(), images["tiny.gif"], tmp_path / "a")
    assert tiny == (os.fsencode(images["tiny.gif"]), b"tiny.gif")
    once, _ = step(Max(), images["image.png"], tmp_path / "b")
    again, _ = step(Max(), once.path, tmp_path / "c")  # already optimal: passes unchanged
    assert again.path == once.path
    text, _ = step(Max(), images["text.png"], tmp_path / "d")  # .png that is no image: passed on
    assert text.path == os.fsencode(images["text.png"])


def test_damaged_jpegs(images: dict[str, Path], tmp_path: Path) -> None:
    """jpegtran's warnings (exit 2, truncated file): the original passes with a note; errors fail."""
    out, ctx = step(Max(), images["truncated.jpg"], tmp_path / "a")
    assert out.path == os.fsencode(images["truncated.jpg"]) and "Premature end of JPEG file" in ctx.notes[0]
    with pytest.raises(ProcessorError, match=r"jpegtran failed \(exit 1\)"):
        step(Max(), images["garbage.jpg"], tmp_path / "b")


@pytest.mark.parametrize("stem", HOSTILE, ids=repr)
def test_hostile_names_through_the_tools(stem: bytes, images: dict[str, Path], tmp_path: Path) -> None:
    src_dir = os.fsencode(tmp_path / "src")
    os.mkdir(src_dir)
    for name, ext in (("photo.jpg", b"jpg"), ("image.png", b"png"), ("anim.gif", b"gif"), ("single.gif", b"GIF")):
        src = os.path.join(src_dir, stem + ext)
        shutil.copyfile(images[name], src)
        out, _ = step(Max(), src, tmp_path / "work")
        assert frames(out.path) == frames(images[name])
        assert out.path != src and out.basename.startswith(stem)
    assert not (Path.cwd() / "pwned").exists()
    assert sorted(os.listdir(src_dir)) == sorted(stem + e for e in (b"jpg", b"png", b"gif", b"GIF"))


def test_registry_names() -> None:
    for cls in CLASSES:
        assert PROCESSORS.get(cls.name) is cls


def test_missing_tools_fail_clearly(images: dict[str, Path], tmp_path: Path) -> None:
    """No mocks: a real run with an empty PATH, in a child process."""
    code = (
        "import sys\n"
        "from fileconveyor.processors import Context, ToolMissing, create, apply\n"
        "p = create('image_optimizer.Max')\n"
        "print('\\n'.join(p.missing_tools()))\n"
        "ctx = Context(sys.argv[1].encode(), sys.argv[1].encode(), b'photo.jpg', sys.argv[2].encode())\n"
        "try:\n    apply(p, ctx)\nexcept ToolMissing as exc:\n    print('ERROR', exc)\n"
    )
    env = {"PATH": str(tmp_path / "empty"), "PYTHONPATH": str(ROOT / "lib")}
    r = subprocess.run(
        [sys.executable, "-c", code, str(images["photo.jpg"]), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = r.stdout.splitlines()
    assert "jpegtran (install it with: apt-get install libjpeg-turbo-progs)" in lines
    assert "optipng (install it with: apt-get install optipng)" in lines
    assert "gifsicle (install it with: apt-get install gifsicle)" in lines
    assert lines[-1] == (
        "ERROR image_optimizer.Max: missing tool jpegtran (install it with: apt-get install libjpeg-turbo-progs)"
    )


def test_chain_max_then_md5_names_the_uploaded_bytes(images: dict[str, Path], tmp_path: Path) -> None:
    """The issue's chain: a GIF becomes logo_<md5 of the PNG bytes>.png, extension matching content."""
    first, ctx = step(Max(), images["single.gif"], tmp_path / "w", basename=b"logo.gif")
    md5 = create("unique_filename.MD5")
    second = apply(md5, Context(first.path, ctx.original, first.basename, ctx.work_dir))
    assert second.path == first.path
    assert second.basename == b"logo_%s.png" % hashlib.md5(read(first.path)).hexdigest().encode()
