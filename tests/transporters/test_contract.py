"""The contract every transporter keeps, checked against its real server (see conftest.py for the backends)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import unicodedata
from pathlib import Path

import pytest

from fileconveyor.transporters import AuthError, PermanentError, SourceMissing, TransientError, Transporter, confine
from fileconveyor.transporters.base import join, temp_path

from .conftest import PUBLIC_URL, Backend

BIG = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    with open(path, "wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
    return path


def _local(tmp_path: Path, data: bytes, name: str = "src") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _remote(backend: Backend, rel: bytes) -> Path:
    return Path(os.fsdecode(os.fsencode(backend.files) + b"/" + rel))


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _leftovers(backend: Backend) -> list[str]:
    return [p.name for p in backend.files.rglob(".fc-*")]


def test_upload_stat_url(backend: Backend, tp: Transporter, tmp_path: Path) -> None:
    tp.upload(_local(tmp_path, b"body { }"), b"css/site.css")
    assert _remote(backend, b"css/site.css").read_bytes() == b"body { }"
    assert tp.stat(b"css/site.css").size == 8  # type: ignore[union-attr]
    assert tp.stat(b"css/nothing.css") is None
    assert tp.url(b"css/a b+\xc3\xa9.css") == PUBLIC_URL + "/css/a%20b%2B%C3%A9.css"


def test_stat_on_a_new_connection(backend: Backend, tp: Transporter, tmp_path: Path) -> None:
    """What fc-verify does: stat, on a connection that uploaded nothing, files below the root and in it, in an
    order where a directory is looked at first (FTP lists it, which left the session in ASCII mode: SIZE refused)."""
    tp.upload(_local(tmp_path, b"body { }"), b"css/site.css")
    tp.upload(_local(tmp_path, b"<p>", "i"), b"index.html")
    fresh = backend.make()
    try:
        sizes = [getattr(fresh.stat(rel), "size", None) for rel in (b"css/site.css", b"index.html", b"css/no")]
        assert sizes == [8, 3, None]
    finally:
        fresh.close()


def test_overwrite_leaves_no_temporary_files(backend: Backend, tp: Transporter, tmp_path: Path) -> None:
    tp.upload(_local(tmp_path, b"first version, longer", "a"), b"x.txt")
    tp.upload(_local(tmp_path, b"second", "b"), b"x.txt")
    assert _remote(backend, b"x.txt").read_bytes() == b"second"
    assert _leftovers(backend) == []


def test_big_file_is_never_seen_partial(backend: Backend, tp: Transporter, big_file: Path) -> None:
    tp.upload(_local(big_file.parent, b"", "empty"), b"first")  # connect and create the directory first
    final, seen, stop = _remote(backend, b"big.bin"), set(), threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.add(final.stat().st_size)
            except FileNotFoundError:
                pass

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        tp.upload(os.fsencode(big_file), b"big.bin")
    finally:
        stop.set()
        reader.join()
    assert seen <= {BIG}
    assert _digest(final) == _digest(big_file)
    assert _leftovers(backend) == []


def test_delete_and_delete_missing(backend: Backend, tp: Transporter, tmp_path: Path) -> None:
    tp.upload(_local(tmp_path, b"x"), b"d/gone.txt")
    tp.delete(b"d/gone.txt")
    assert not _remote(backend, b"d/gone.txt").exists()
    tp.delete(b"d/gone.txt")  # already gone: success
    tp.delete(b"never/was/here.txt")


def test_nested_directories_created(backend: Backend, tp: Transporter, tmp_path: Path) -> None:
    tp.upload(_local(tmp_path, b"deep"), b"a/b/c/d/e.txt")
    assert _remote(backend, b"a/b/c/d/e.txt").read_bytes() == b"deep"


HOSTILE = {
    "spaces": b"a dir/two  spaces .txt",
    "edge-spaces": b" lead and trail ",
    "nfc": unicodedata.normalize("NFC", "caf\u00e9.txt").encode(),
    "nfd": unicodedata.normalize("NFD", "caf\u00e9.txt").encode(),
    "newline": b"line\nbreak.txt",
    "quotes": b'it\'s "quoted" `x`.txt',
    "dash": b"-rf --help.txt",
    "not-utf8": b"latin1-\xe9.txt",
    "glob": b"*?[x].txt",
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_names(backend: Backend, tp: Transporter, tmp_path: Path, kind: str) -> None:
    name = HOSTILE[kind]
    src = _local(tmp_path, name)
    if kind in backend.cannot_carry:
        with pytest.raises(PermanentError, match="cannot carry"):
            tp.upload(src, name)
        assert not backend.files.exists() or list(backend.files.rglob("*")) == []
        return
    tp.upload(src, name)
    assert _remote(backend, name).read_bytes() == name
    assert tp.stat(name).size == len(name)  # type: ignore[union-attr]
    tp.delete(name)
    assert not _remote(backend, name).exists()


def test_nfc_and_nfd_are_different_files(backend: Backend, tp: Transporter, tmp_path: Path) -> None:
    tp.upload(_local(tmp_path, b"nfc"), HOSTILE["nfc"])
    tp.upload(_local(tmp_path, b"nfd!"), HOSTILE["nfd"])
    assert _remote(backend, HOSTILE["nfc"]).read_bytes() == b"nfc"
    assert _remote(backend, HOSTILE["nfd"]).read_bytes() == b"nfd!"


ESCAPES = [b"../x", b"a/../../x", b"a/..", b"..", b"/etc/passwd", b"a\0b", b"", b"./", b"a//./"]


@pytest.mark.parametrize("rel", ESCAPES, ids=[repr(e) for e in ESCAPES])
def test_path_escape_refused_before_connecting(backend: Backend, tp: Transporter, tmp_path: Path, rel: bytes) -> None:
    src = _local(tmp_path, b"x")
    for op in (lambda: tp.upload(src, rel), lambda: tp.delete(rel), lambda: tp.stat(rel), lambda: tp.url(rel)):
        with pytest.raises(PermanentError, match="refusing remote path"):
            op()
    assert not tp.connected


def test_vanished_source(tp: Transporter, tmp_path: Path) -> None:
    with pytest.raises(SourceMissing):
        tp.upload(tmp_path / "no-such-file", b"x")


def test_wrong_credentials_fail_once_and_fast(remote_backend: Backend, tmp_path: Path) -> None:
    backend = remote_backend
    assert backend.wrong_credentials is not None
    assert backend.server is not None
    log = backend.server.log

    def failures() -> int:
        return log.read_text(errors="replace").count(backend.failed_login)

    before = failures()
    tp = backend.make(**backend.wrong_credentials)
    started = time.monotonic()
    with pytest.raises(AuthError) as info:
        tp.upload(_local(tmp_path, b"x"), b"x.txt")
    assert time.monotonic() - started < 5
    assert "refused" in str(info.value)
    assert "p@ss" not in str(info.value) and "p@ss" not in repr(tp)
    _wait_for(lambda: failures() > before, timeout=5)
    time.sleep(0.3)  # time for a second attempt to show, were there one
    assert failures() == before + 1  # one attempt: no retry storm against a server that said no


def test_check_access_tries_the_credentials_and_the_root(remote_backend: Backend, tmp_path: Path) -> None:
    """The start-up check (fc-transport, fc-conveyor) logs in: a wrong password is refused then, naming the
    destination; right ones pass and leave nothing behind on the server (a probe file is removed)."""
    backend = remote_backend
    assert backend.wrong_credentials is not None
    wrong = backend.make(**backend.wrong_credentials)
    with pytest.raises(AuthError) as info:
        wrong.check_access()
    assert str(info.value).startswith(f"{wrong.dest}: ") and "refused" in str(info.value)
    assert "p@ss" not in str(info.value)
    tp = backend.make()
    tp.check_access()
    tp.upload(_local(tmp_path, b"after the check"), b"a/b.txt")  # the checked connection goes on working
    assert (backend.files / "a" / "b.txt").read_bytes() == b"after the check"
    leftovers = [p.name for p in backend.files.rglob("*") if p.name.startswith(".fc-")]
    assert leftovers == []


def test_check_access_of_a_server_that_is_down_is_transient() -> None:
    from fileconveyor.transporters import for_destination, parse_destination

    for spec in ("ftp://u@127.0.0.1:1/x", "sftp://u@127.0.0.1:1/x"):
        with pytest.raises(TransientError, match="refused"):
            for_destination(parse_destination(spec, env={"FC_PASSWORD": "pw"})).check_access()


def test_server_killed_mid_transfer(remote_backend: Backend, tmp_path: Path) -> None:
    backend, tp = remote_backend, remote_backend.make()
    assert backend.server is not None
    tp.upload(_local(tmp_path, b""), b"first")  # connect and create the directory first
    # A FIFO as the source lets the test hold the transfer half-way, so the kill lands mid-transfer.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    chunk, sent = os.urandom(1 << 20), hashlib.sha256()
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, lambda: tp.upload(fifo, b"big.bin")))
    thread.start()
    with open(fifo, "wb") as w:
        for _ in range(8):
            w.write(chunk)
        _wait_for(lambda: sum(p.stat().st_size for p in backend.files.glob(".fc-*")) >= 1 << 20)
        backend.server.kill()
        try:
            for _ in range(8):
                w.write(chunk)
        except BrokenPipeError:
            pass  # the transporter gave up reading: what we want
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TransientError), errors
    assert not _remote(backend, b"big.bin").exists()

    backend.server.start()
    data = _local(tmp_path, chunk * 16, "again")
    sent.update(chunk * 16)
    tp.upload(data, b"big.bin")  # the same transporter reconnects
    assert _digest(_remote(backend, b"big.bin")) == sent.hexdigest()


def _capture(errors: list[BaseException], fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        errors.append(exc)


def _wait_for(cond: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def test_file_in_the_way_of_a_directory_is_permanent(directory_backend: Backend, tmp_path: Path) -> None:
    tp = directory_backend.make()
    tp.upload(_local(tmp_path, b"a file"), b"f")
    with pytest.raises(PermanentError):
        tp.upload(_local(tmp_path, b"x", "x"), b"f/x")
    assert _remote(directory_backend, b"f").read_bytes() == b"a file"
    assert tp.stat(b"f/x") is None
    tp.delete(b"f/x")  # nothing there to delete: success


# -- confinement: nothing written or deleted outside the destination root through a link inside it -----------


def _outside(backend: Backend) -> Path:
    """A folder next to the destination root, with a file to keep: on FTP inside the server's home, so that it
    is the transporter (not the server's own confinement) that must keep away from it."""
    outside = backend.files.parent / (backend.files.name + "-outside")
    outside.mkdir(parents=True)
    (outside / "victim.txt").write_bytes(b"keep")
    backend.files.mkdir(parents=True, exist_ok=True)
    return outside


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.rglob("*")) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == b"keep"


@pytest.mark.parametrize("link", [b"link", b"a/link"])
def test_symlinked_directory_is_never_written_or_deleted_through(
    directory_backend: Backend, tmp_path: Path, link: bytes
) -> None:
    outside = _outside(directory_backend)
    there = _remote(directory_backend, link)
    there.parent.mkdir(parents=True, exist_ok=True)
    there.symlink_to(outside, target_is_directory=True)
    tp, src = directory_backend.make(), _local(tmp_path, b"hostile")
    tp.upload(src, b"a/first.txt")  # connected, directories made and remembered
    for rel in (link + b"/new.txt", link + b"/victim.txt", link + b"/sub/deeper.txt"):
        with pytest.raises(PermanentError, match="symbolic link"):
            tp.upload(src, rel)
    with pytest.raises(PermanentError, match="symbolic link"):
        tp.delete(link + b"/victim.txt")
    _untouched(outside)
    assert there.is_symlink()  # the user's link is left as it is
    tp.upload(src, b"a/second.txt")  # the connection still works


def test_directory_replaced_by_a_symlink_is_noticed(
    directory_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(confine, "DIR_TTL", 0.3)
    outside = _outside(directory_backend)
    tp, src = directory_backend.make(), _local(tmp_path, b"hostile")
    tp.upload(src, b"d/x.txt")
    (_remote(directory_backend, b"d/x.txt")).unlink()
    _remote(directory_backend, b"d").rmdir()
    _remote(directory_backend, b"d").symlink_to(outside, target_is_directory=True)
    time.sleep(confine.DIR_TTL + 0.1)  # what was checked is trusted that long (the documented window)
    with pytest.raises(PermanentError, match="symbolic link"):
        tp.upload(src, b"d/victim.txt")
    with pytest.raises(PermanentError, match="symbolic link"):
        tp.delete(b"d/victim.txt")
    _untouched(outside)


def test_remove_dir_removes_only_an_empty_real_directory(directory_backend: Backend, tmp_path: Path) -> None:
    """What fc-transport asks once a deletion may have emptied a directory it made: True when the directory is
    gone, False when it stays (not empty, a link, or beneath a link); never anything through a link."""
    outside = _outside(directory_backend)
    (outside / "empty").mkdir()  # what a link could lead an rmdir to
    tp, src = directory_backend.make(), _local(tmp_path, b"x")
    tp.upload(src, b"full/x.txt")
    tp.upload(src, b"emptied/y.txt")
    tp.delete(b"emptied/y.txt")
    _remote(directory_backend, b"link").symlink_to(outside / "empty", target_is_directory=True)
    _remote(directory_backend, b"full/up").symlink_to(outside, target_is_directory=True)
    assert tp.remove_dir(b"full") is False and _remote(directory_backend, b"full/x.txt").is_file()
    assert tp.remove_dir(b"emptied") is True and not _remote(directory_backend, b"emptied").exists()
    assert tp.remove_dir(b"emptied") is True  # gone already
    assert tp.remove_dir(b"link") is False and _remote(directory_backend, b"link").is_symlink()
    assert tp.remove_dir(b"full/up/empty") is False
    assert (outside / "empty").is_dir()
    tp.upload(src, b"emptied/z.txt")  # the connection still works, and the directory is made again
    assert _remote(directory_backend, b"emptied/z.txt").read_bytes() == b"x"


def test_links_at_the_file_name_are_replaced_not_followed(directory_backend: Backend, tmp_path: Path) -> None:
    outside = _outside(directory_backend)
    tp = directory_backend.make()
    _remote(directory_backend, b"f.txt").symlink_to(outside / "victim.txt")
    tp.upload(_local(tmp_path, b"new"), b"f.txt")
    assert not _remote(directory_backend, b"f.txt").is_symlink()
    assert _remote(directory_backend, b"f.txt").read_bytes() == b"new"
    _remote(directory_backend, b"g.txt").symlink_to(outside / "victim.txt")
    tp.delete(b"g.txt")  # the link goes, not what it points to
    assert not os.path.lexists(_remote(directory_backend, b"g.txt"))
    # A link planted at the (predictable) temporary name is removed, never written through.
    tmp = temp_path(join(tp.dest.root, b"h.txt")).rpartition(b"/")[2]
    _remote(directory_backend, tmp).symlink_to(outside / "victim.txt")
    tp.upload(_local(tmp_path, b"new"), b"h.txt")
    assert _remote(directory_backend, b"h.txt").read_bytes() == b"new"
    assert _leftovers(directory_backend) == []
    _untouched(outside)


def test_connections_racing_to_make_the_same_directories(directory_backend: Backend, tmp_path: Path) -> None:
    """fc-transport's connections start together: each finds the root and the directories missing and makes
    them, and every one of them must carry on when another got there first."""
    tps, src = [directory_backend.make() for _ in range(4)], _local(tmp_path, b"x")
    for tp in tps:
        tp.connect()
    start, errors = threading.Barrier(len(tps)), []

    def upload(i: int) -> None:
        start.wait()
        _capture(errors, lambda: tps[i].upload(src, b"a/b/c/f%d" % i))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(tps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(p.name for p in _remote(directory_backend, b"a/b/c").iterdir()) == ["f0", "f1", "f2", "f3"]


def shrink_when_sending(b: Backend, src: Path, new: bytes) -> threading.Thread:
    """A writer that rewrites ``src``, shorter, as soon as a transfer's temporary file on ``b`` holds bytes."""

    def shrink() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for tmp in b.files.rglob(".fc-*"):
                try:
                    if tmp.stat().st_size > 0:
                        with open(src, "r+b") as f:
                            f.truncate(0)
                            f.write(new)
                        return
                except FileNotFoundError:
                    pass

    t = threading.Thread(target=shrink, daemon=True)
    t.start()
    return t


def test_source_that_shrinks_while_sent_is_not_published(directory_backend: Backend, tmp_path: Path) -> None:
    # Issue 16 finding 5: file:// and ftp:// published the part read and said "uploaded".
    b, tp, src = directory_backend, directory_backend.make(), tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.truncate(64 << 20)  # sparse: made at once, long enough to send for the writer to catch it mid-way
    tp.upload(_local(tmp_path, b"x", "small"), b"first")  # connected, directory made
    writer = shrink_when_sending(b, src, b"new")
    with pytest.raises((SourceMissing, TransientError)):  # SFTP's resend is a TransientError
        tp.upload(src, b"big.bin")
    writer.join(10)
    assert not _remote(b, b"big.bin").exists()
    assert _leftovers(b) == []
