"""fc-transport writes and deletes only beneath the destination root, never through a link inside it (issue 16,
finding 6), whatever the events say: a forged ``rel`` or ``name`` with ``../`` or an absolute path, or a
directory of the destination that is a symbolic link to somewhere else.  Against file://, sftp:// (real sshd)
and ftp:// (real server, the link pointing inside its home so that the server's own confinement does not help).

The transporter-level cases (every transporter, both SFTP engines) are in tests/transporters/test_contract.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from fileconveyor.transporters.ftp_list import entry_kind
from tests.servers.ftpd import PASSWORD, USER, FtpServer, ftp_server  # noqa: F401 - fixture
from tests.servers.sshd import SshServer, sshd_server  # noqa: F401 - fixture
from tests.transport.conftest import env, event, jsonl, lines, sftp_spec, transport  # noqa: F401 - fixture


@dataclass
class Dest:
    spec: str
    root: Path  # the destination root, on this machine's file system
    outside: Path  # a folder next to it that must stay as it is
    env: dict[str, str]


@pytest.fixture(params=["file", "sftp", "ftp"])
def dest(request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]) -> Iterator[Dest]:  # noqa: F811
    name = "d-" + secrets.token_hex(4)
    if request.param == "file":
        root = tmp_path / name
        spec = "file://" + quote(str(root))
    elif request.param == "sftp":
        server: SshServer = request.getfixturevalue("sshd_server")
        root = server.files / name
        spec = sftp_spec(server, root)
    else:
        ftp: FtpServer = request.getfixturevalue("ftp_server")
        root = ftp.files / name
        spec = f"ftp://{USER}@127.0.0.1:{ftp.port}/{name}?timeout=10"
        env = {**env, "FC_PASSWORD": PASSWORD}
    outside = root.parent / (name + "-outside")
    root.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"keep")
    yield Dest(spec, root, outside, env)


def _untouched(d: Dest) -> None:
    assert sorted(p.name for p in d.outside.rglob("*")) == ["victim.txt"]
    assert (d.outside / "victim.txt").read_bytes() == b"keep"


def _send(d: Dest, tmp_path: Path, evs: list[dict]) -> list[dict]:
    res = transport(["--to", d.spec, "--state", str(tmp_path / "t.db")], d.env, jsonl(evs))
    assert res.returncode == 1, res.stderr  # some events failed, none crashed the stage
    return lines(res.stdout)


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "css").mkdir(parents=True)
    (src / "css" / "a.css").write_bytes(b"hostile")
    return src


def test_forged_rel_or_name_never_leaves_the_root(dest: Dest, tmp_path: Path) -> None:
    src = _source(tmp_path)
    up = f"../{dest.outside.name}"
    a = event(src, "css/a.css")
    forged = [
        {**a, "rel": f"{up}/new.txt"},
        {**a, "rel": f"css/../../{dest.outside.name}/new.txt"},
        {**a, "rel": f"{dest.outside}/new.txt"},
        {**a, "name": f"{up}/new.txt"},
        {**a, "name": ".."},
        {**a, "name": str(dest.outside / "victim.txt")},
        {**event(src, f"{up}/victim.txt", "deleted")},
        {**event(src, "css/a.css", "deleted"), "name": f"{up}/victim.txt"},
    ]
    out = _send(dest, tmp_path, [*forged, a])
    assert [e.get("error_kind") for e in out] == ["permanent"] * len(forged) + [None]
    assert all("refusing remote" in e["error"] for e in out[:-1])
    assert (dest.root / "css" / "a.css").read_bytes() == b"hostile"  # the honest event went through
    _untouched(dest)


def test_symlinked_directory_in_the_destination_is_not_followed(dest: Dest, tmp_path: Path) -> None:
    src = _source(tmp_path)
    # css/victim.txt uploaded first, so that its deletion is of a name fc-transport put there (one it never put
    # there is not deleted at all: test_unknown_deletions.py); then css becomes a link to the folder outside
    (src / "css" / "victim.txt").write_bytes(b"ours")
    first = transport(
        ["--to", dest.spec, "--state", str(tmp_path / "t.db")], dest.env, jsonl([event(src, "css/victim.txt")])
    )
    assert [e.get("transported") for e in lines(first.stdout)] == ["uploaded"], first.stderr
    (src / "css" / "victim.txt").unlink()
    (dest.root / "css" / "victim.txt").unlink()
    (dest.root / "css").rmdir()
    (dest.root / "css").symlink_to(dest.outside, target_is_directory=True)
    out = _send(dest, tmp_path, [event(src, "css/a.css"), event(src, "css/victim.txt", "deleted")])
    assert [e.get("error_kind") for e in out] == ["permanent", "permanent"]
    assert all("css' is a symbolic link" in e["error"] for e in out)
    _untouched(dest)
    assert (dest.root / "css").is_symlink()


LISTING = [  # LIST as vsftpd, ProFTPD and pyftpdlib send it (ls -l), names with spaces and arrows included
    "drwxr-xr-x    2 1000     1000         4096 Dec 06 03:16 css",
    "lrwxrwxrwx    1 1000     1000            8 Dec 06 03:16 img -> /etc/ssl",
    "-rw-r--r--    1 1000     1000           12 Jan  1  2025 two  spaces",
    "drwxr-xr-x    2 ftp      ftp          4096 Dec  6 03:16 a -> b",
    "lrwxrwxrwx    1 ftp      ftp             1 Dec  6 03:16 x -> y -> z",
]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("css", "dir"),
        ("img", "link"),
        ("two  spaces", "file"),
        ("spaces", "missing"),
        ("a -> b", "dir"),  # a directory whose name holds an arrow
        ("x", "link"),  # a link that could be "x" (pointing to "y -> z") or "x -> y": refused either way
        ("x -> y", "link"),
        ("nothing", "missing"),
    ],
)
def test_ftp_listing_tells_links_from_directories(name: str, kind: str) -> None:
    assert entry_kind(LISTING, name) == kind


def test_ftp_listing_in_another_format_cannot_tell() -> None:
    iis = ["12-06-26  03:16AM       <DIR>          css", "12-06-26  03:16AM                  12 a.txt"]
    assert entry_kind(iis, "css") == "unknown"
    assert entry_kind([], "css") == "missing"  # an empty directory
