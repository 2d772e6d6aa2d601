"""Issue 16, findings 1 (reading side) and 5: what fc-transport and fc-process read is the file the event
describes, and a copy torn by a writer is never published nor reported as delivered.

Each case runs fc-transport on event lines, as a third-party stage or a race would leave them, against real
destinations: a local folder, sshd (both SFTP engines), an FTP server and moto's S3.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fileconveyor.sourcefile import Source, SourceGone, SourceRefused, from_event, open_source
from tests.conftest import work_dir_for
from tests.transport.conftest import fc
from tests.transporters.conftest import (  # noqa: F401 - fixtures
    Backend,
    _backend,
    file_backend,
    ftp_backend,
    ftp_server,
    s3_backend,
    s3_server,
    sftp_backend,
    sftp_paramiko_backend,
    sshd_server,
)
from tests.transporters.test_contract import shrink_when_sending

SECRET = b"root:$6$not-for-the-cdn\n"
backend = pytest.fixture(params=["file", "ftp", "sftp", "sftp_paramiko", "s3"])(_backend)
local_backend = pytest.fixture(params=["file"])(_backend)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """(the watched root with css/a.css in it, a secret file outside the root)."""
    root = tmp_path / "site"
    (root / "css").mkdir(parents=True)
    (root / "css" / "a.css").write_bytes(b"a { }\n")
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    return root, secret


def _event(root: Path, rel: str, **extra: object) -> dict:
    """fc-watch's event for root/rel as it is now (size and inode included)."""
    st = (root / rel).stat()
    ev = {"v": 1, "kind": "created", "source": "site", "root": str(root), "path": str(root / rel), "rel": rel}
    return {**ev, "size": st.st_size, "ino": st.st_ino, "mtime_ns": str(st.st_mtime_ns), **extra}


def _transport(b: Backend, tmp_path: Path, events: list[dict], *args: str) -> tuple[list[dict], str]:
    spec = b.spec + ("?" + urlencode(b.settings) if b.settings else "")
    env = {**os.environ, **b.env, "FC_STATE_DIR": str(tmp_path / "state")}
    stdin = b"".join(json.dumps(ev).encode() + b"\n" for ev in events)
    r = subprocess.run(
        [*fc("fc-transport"), "-v", "--to", spec, *args], input=stdin, capture_output=True, env=env, timeout=60
    )
    assert r.returncode in (0, 1), r.stderr.decode()
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr.decode()


def _published(b: Backend) -> dict[str, bytes]:
    if not b.files.exists():
        return {}
    return {str(p.relative_to(b.files)): p.read_bytes() for p in b.files.rglob("*") if p.is_file()}


def test_forged_path_is_refused(backend: Backend, site: tuple[Path, Path], tmp_path: Path) -> None:
    root, secret = site
    forged = {"v": 1, "kind": "created", "root": str(root), "path": str(secret), "rel": "x.txt"}
    climbing = {**forged, "path": str(root / ".." / secret.name)}  # root + "/../shadow", rel a plain x.txt
    dotdot = {**forged, "path": str(secret), "rel": "../shadow", "name": "x.txt"}
    out, err = _transport(backend, tmp_path, [forged, climbing, dotdot])
    assert SECRET not in b"".join(_published(backend).values())
    assert [e.get("error_kind") for e in out] == ["permanent"] * 3, err
    assert sum("path is not root + rel" in e["error"] for e in out) == 2  # the third: its rel has ".."


def test_forged_root_is_refused_given_the_sources(
    local_backend: Backend, site: tuple[Path, Path], tmp_path: Path
) -> None:
    # A consistent event with a root of its own choosing: only --source (fc-conveyor passes it) can tell.
    root, secret = site
    forged = {"v": 1, "kind": "created", "source": "site", "root": str(secret.parent), "path": str(secret)}
    forged["rel"] = secret.name
    good = _event(root, "css/a.css")
    out, err = _transport(local_backend, tmp_path, [forged, good], "--source", f"site={root}")
    assert _published(local_backend) == {"css/a.css": b"a { }\n"}
    by_rel = {e["rel"]: e for e in out}  # different paths: in any order
    assert "is no --source given to fc-transport" in by_rel[secret.name]["error"], err
    assert by_rel["css/a.css"]["transported"] == "uploaded"


def test_source_swapped_for_a_link_out_of_the_root(backend: Backend, site: tuple[Path, Path], tmp_path: Path) -> None:
    root, secret = site
    ev = _event(root, "css/a.css")
    (root / "css" / "a.css").unlink()
    (root / "css" / "a.css").symlink_to(secret)  # after fc-watch saw the file, before fc-transport opens it
    out, err = _transport(backend, tmp_path, [ev])
    assert SECRET not in b"".join(_published(backend).values())
    assert len(out) == 1 and "leads out of" in out[0]["error"], err


def test_source_swapped_for_another_file(backend: Backend, site: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = site
    ev = _event(root, "css/a.css")
    (root / "other").write_bytes(b"b { }\n")  # the same size, another inode
    os.replace(root / "other", root / "css" / "a.css")
    out, err = _transport(backend, tmp_path, [ev])
    assert _published(backend) == {}
    assert out == [] and "not the file the event describes (inode" in err  # skipped: its modified event follows


def test_in_root_link_is_followed(backend: Backend, site: tuple[Path, Path], tmp_path: Path) -> None:
    # fc-watch publishes a link whose target stays beneath the root with the target's content: so do we
    root, _ = site
    (root / "abs.css").symlink_to(root / "css" / "a.css")  # absolute: openat2 refuses it, the walk takes it
    (root / "rel.css").symlink_to("css/a.css")
    out, err = _transport(backend, tmp_path, [_event(root, "abs.css"), _event(root, "rel.css")])
    assert [e["transported"] for e in out] == ["uploaded", "uploaded"], err
    assert _published(backend) == {"abs.css": b"a { }\n", "rel.css": b"a { }\n"}


def test_follow_symlinks_reads_only_the_file_fc_watch_saw(
    local_backend: Backend, site: tuple[Path, Path], tmp_path: Path
) -> None:
    # fc-watch --follow-symlinks publishes files beneath a symlinked directory leading out of the root; fc-transport
    # --follow-symlinks reads them through it, but only the very file the event names.
    root, secret = site
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "logo.css").write_bytes(b"logo")
    (shared / "swapped.css").write_bytes(b"swap")
    (root / "shared").symlink_to(shared, target_is_directory=True)
    env = {**os.environ, "FC_STATE_DIR": str(tmp_path / "wstate")}
    scan = subprocess.run(
        [*fc("fc-watch"), "--follow-symlinks", "--scan-once", str(root)], capture_output=True, env=env
    )
    events = [json.loads(line) for line in scan.stdout.splitlines()]
    events = [ev for ev in events if ev["rel"].startswith("shared/")]
    assert sorted(ev["rel"] for ev in events) == ["shared/logo.css", "shared/swapped.css"], scan.stderr
    (shared / "swapped.css").unlink()
    (shared / "swapped.css").symlink_to(secret)  # after fc-watch saw it
    out, err = _transport(local_backend, tmp_path, events)
    assert all("leads out of" in e["error"] for e in out), err  # without the flag: the link out is refused
    out, err = _transport(local_backend, tmp_path, events, "--follow-symlinks", "--state", str(tmp_path / "t2.db"))
    assert _published(local_backend) == {"shared/logo.css": b"logo"}, err
    # a link to a file out of the followed link's target: refused as fc-watch refuses it, before its inode is looked
    # at (test_follow_symlinks_forged.py: a forged event carrying the target's inode and size got it published)
    assert [e["rel"] for e in out if "leads out of" in e.get("error", "")] == ["shared/swapped.css"], err


def test_shrunk_source_is_not_reported_uploaded(local_backend: Backend, tmp_path: Path) -> None:
    # Through fc-transport: the torn copy is neither published nor reported; the event is left to the newer one
    # (each transporter's part: tests/transporters/test_contract.py, test_source_that_shrinks_while_sent_...).
    root = tmp_path / "site"
    root.mkdir()
    with open(root / "big.bin", "wb") as f:
        f.truncate(64 << 20)
    local_backend.files.mkdir(parents=True)
    writer = shrink_when_sending(local_backend, root / "big.bin", b"new")
    out, err = _transport(local_backend, tmp_path, [_event(root, "big.bin")])
    writer.join(10)
    assert out == [] and "changed while it was read" in err
    assert _published(local_backend) == {}


def test_source_that_grows_after_it_is_opened_is_not_published(
    local_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local copy stops at the size the file had when it was opened (copy_fd's size, one system call less per
    # file): a file that grew meanwhile must still be caught before its copy takes the final name.
    from fileconveyor.transporters import SourceMissing, base

    root = tmp_path / "site"
    root.mkdir()
    (root / "a.bin").write_bytes(b"x" * 4096)
    opened = base.open_source

    def open_then_grow(src: Source, roots: object = None) -> object:
        f = opened(src, roots)
        with open(root / "a.bin", "ab") as w:
            w.write(b"more")
        return f

    monkeypatch.setattr(base, "open_source", open_then_grow)
    with pytest.raises(SourceMissing, match="changed while it was read"):
        local_backend.make().upload(Source(os.fsencode(root), b"a.bin"), b"a.bin")
    assert [p.name for p in local_backend.files.rglob("*") if p.is_file()] == []  # no copy, no temporary file


# -- the module itself, on both resolution paths (openat2, and the walk for kernels without it) ---------------


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    from fileconveyor import beneath

    if request.param == "walk":
        monkeypatch.setattr(beneath, "_openat2", None)
    elif beneath._openat2 is None:
        pytest.skip("this kernel has no openat2: the walk is what runs here")
    return str(request.param)


def test_resolution_beneath_the_root(resolver: str, site: tuple[Path, Path], tmp_path: Path) -> None:
    root, secret = site
    b = os.fsencode(root)
    (root / "up").symlink_to("../shadow")
    (root / "abs").symlink_to(secret)
    (root / "dirlink").symlink_to(tmp_path)  # a directory link out of the root
    (root / "css" / "back").symlink_to("../css/a.css")
    (root / "loop").symlink_to("loop")
    for rel in (b"up", b"abs", b"dirlink/shadow", b"loop"):
        with pytest.raises(SourceRefused):
            open_source(Source(b, rel))
    with open_source(Source(b, b"css/back")) as f:
        assert f.read() == b"a { }\n"
    with pytest.raises(SourceGone):
        open_source(Source(b, b"css/none.css"))
    with pytest.raises(SourceGone):  # a file where a directory was: not the file of the event
        open_source(Source(b, b"css/a.css/x"))
    with pytest.raises(SourceRefused):  # the root itself (a Source is built unchecked)
        open_source(Source(b, b"css/.."))
    os.mkfifo(root / "fifo")  # an event's FIFO is refused at once, not waited on
    with pytest.raises(SourceRefused, match="not a regular file"):
        open_source(Source(b, b"fifo"))


def test_event_fields_are_checked(site: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = site
    ev = _event(root, "css/a.css")
    assert from_event(ev).path == os.fsencode(root / "css" / "a.css")
    for bad in ({"rel": "css/../css/a.css"}, {"rel": "/css/a.css"}, {"rel": "css//a.css"}, {"root": "site"}):
        with pytest.raises(SourceRefused):
            from_event({**ev, **bad})
    work = work_dir_for(tmp_path / "state" / "process-1.db.work", root / "css" / "a.css", "css/a.css")
    (work / "a.css").write_bytes(b"a{}")
    bases = [os.fsencode(tmp_path / "state")]
    assert from_event({**ev, "file": str(work / "a.css")}, bases).path == os.fsencode(work / "a.css")
    for file in (str(root / "css" / "a.css"), "/etc/passwd", str(tmp_path / "state" / "x.db")):
        with pytest.raises(SourceRefused, match="not in a work directory"):
            from_event({**ev, "file": file}, bases)


# -- fc-process ------------------------------------------------------------------------------------------------


def test_fc_process_does_not_process_a_link_out_of_the_root(site: tuple[Path, Path], tmp_path: Path) -> None:
    root, secret = site
    ev = _event(root, "css/a.css")
    (root / "css" / "a.css").unlink()
    (root / "css" / "a.css").symlink_to(secret)
    work = tmp_path / "work"
    argv = ["--chain", "unique_filename.MD5", "--state", str(tmp_path / "p.db"), "--work-dir", str(work)]
    r = subprocess.run(
        [*fc("fc-process"), *argv],
        input=json.dumps(ev).encode() + b"\n",
        capture_output=True,
        timeout=60,
    )
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == 1 and "leads out of" in out[0]["error"], r.stderr.decode()
    assert "file" not in out[0]
    assert all(SECRET not in p.read_bytes() for p in work.rglob("*") if p.is_file())


def test_fc_process_follow_symlinks(site: tuple[Path, Path], tmp_path: Path) -> None:
    # As fc-transport's: a file beneath a symlinked directory leading out is processed only with the flag.
    root, _ = site
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "logo.css").write_bytes(b"logo")
    (root / "shared").symlink_to(shared, target_is_directory=True)
    ev = json.dumps(_event(root, "shared/logo.css")).encode() + b"\n"
    argv = [*fc("fc-process"), "--chain", "unique_filename.MD5", "--work-dir", str(tmp_path / "work")]
    plain = subprocess.run([*argv, "--state", str(tmp_path / "p1.db")], input=ev, capture_output=True, timeout=60)
    assert "leads out of" in json.loads(plain.stdout)["error"], plain.stderr.decode()
    follow = [*argv, "--state", str(tmp_path / "p2.db"), "--follow-symlinks"]
    done = subprocess.run(follow, input=ev, capture_output=True, timeout=60)
    assert json.loads(done.stdout)["processed"] == ["unique_filename.MD5"], done.stderr.decode()
