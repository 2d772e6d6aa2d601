"""Destinations: URL-like specs, config files, and where secrets may (and may not) come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from fileconveyor.errors import ConfigError
from fileconveyor.transporters import TRANSPORTERS, Transporter, for_destination, parse_destination
from fileconveyor.transporters.base import COMMON_SETTINGS
from fileconveyor.transporters.local import SymlinkOrCopy

SECRET = "s3cr@t:/pa ss"


def test_sftp_spec() -> None:
    d = parse_destination("sftp://us%40er@Host.example:2222/var/www/st%20atic?agent=no", url="https://cdn.example")
    assert (d.scheme, d.host, d.port, d.user, d.root) == ("sftp", "host.example", 2222, "us@er", b"/var/www/st atic")
    assert str(d) == "sftp://us%40er@host.example:2222/var/www/st atic"
    assert d.settings == {"agent": "no"}
    assert d.base_url == "https://cdn.example/"
    assert d.name == "host.example"


def test_ipv6_host_keeps_its_brackets_in_messages_and_urls() -> None:
    d = parse_destination("sftp://u@[::1]:2222/srv")
    assert (d.host, d.port) == ("::1", 2222)
    assert str(d) == d.base_url.rstrip("/") == "sftp://u@[::1]:2222/srv"
    assert parse_destination(str(d)).host == "::1"  # what is shown parses back


@pytest.mark.parametrize(
    ("spec", "root", "base_url"),
    [
        ("ftp://host", b"", "ftp://host/"),
        ("ftp://host/path/", b"/path/", "ftp://host/path/"),
        ("file:///srv/cdn", b"/srv/cdn", "file:///srv/cdn/"),
    ],
)
def test_roots_and_default_base_url(spec: str, root: bytes, base_url: str) -> None:
    d = parse_destination(spec, env={})
    assert (d.root, d.base_url) == (root, base_url)


def test_password_in_spec_is_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError, match="visible to every user") as info:
        parse_destination("ftp://user:hunter2@host/x")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="no password in the URL"):
        parse_destination("ftp://host/x?password=hunter2")


def test_secrets_from_environment_never_in_repr() -> None:
    env = {"FC_PASSWORD": "generic", "FC_CDN_1_PASSWORD": SECRET}
    d = parse_destination("ftp://u@cdn-1/x", env=env)
    assert d.secret("password") == SECRET  # the per-destination variable wins, @ : / and all
    tp = for_destination(d)
    for text in (repr(d), str(d), repr(tp)):
        assert SECRET not in text and "generic" not in text
    assert parse_destination("ftp://u@other/x", env=env).secret("password") == "generic"


def _config(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "dest.conf"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_config_file(tmp_path: Path) -> None:
    conf = _config(
        tmp_path,
        f"# the CDN\nto = sftp://deploy@cdn/srv\nurl = https://cdn.example/x\nname = cdn\npassword = {SECRET}\n"
        "known_hosts = /etc/ssh/kh\n",
        0o600,
    )
    d = parse_destination(config=conf, env={"FC_PASSWORD": "env loses to the file"})
    assert (d.host, d.user, d.root, d.name, d.base_url) == ("cdn", "deploy", b"/srv", "cdn", "https://cdn.example/x/")
    assert d.settings == {"known_hosts": "/etc/ssh/kh"}
    assert d.secret("password") == SECRET
    d2 = parse_destination("sftp://other/y?known_hosts=/kh", url="https://b/", config=conf)  # the command line wins
    assert (d2.host, d2.base_url, d2.settings["known_hosts"]) == ("other", "https://b/", "/kh")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_config_with_secret_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    conf = _config(tmp_path, f"to = ftp://h/\npassword = {SECRET}\n", mode)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        parse_destination(config=conf)
    assert SECRET not in str(info.value)


def test_config_without_secret_may_be_shared(tmp_path: Path) -> None:
    conf = _config(tmp_path, "to = ftp://h/\ntls = yes\n", 0o644)
    assert parse_destination(config=conf, env={}).settings == {"tls": "yes"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/srv/cdn", "has no scheme"),
        ("ftp://h:99999/", "bad port"),
        (None, "no destination"),
        ("file://srv/cdn", "three slashes: file:///srv/cdn"),
    ],
)
def test_bad_specs(spec: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_destination(spec)


def test_bad_config_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dest.conf:2: expected 'key = value'"):
        parse_destination(config=_config(tmp_path, "to = ftp://h/\njust words\n", 0o600))


def test_unknown_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting colour; symlink_or_copy knows: timeout"):
        for_destination(parse_destination("file:///tmp/x?colour=blue"))


def test_registry_schemes_and_settings() -> None:
    assert TRANSPORTERS.get("file") is SymlinkOrCopy
    assert TRANSPORTERS.get("ftps") is TRANSPORTERS.get("ftp")
    for name in TRANSPORTERS.names():
        cls = TRANSPORTERS.get(name)
        assert issubclass(cls, Transporter) and cls.name == name and cls.schemes and cls.__doc__
        assert cls.default_connections >= 1
        assert all(isinstance(v, str) and v for v in cls.settings.values())
        assert not set(cls.settings) & set(COMMON_SETTINGS)
        assert list(cls.all_settings()) == [*COMMON_SETTINGS, *cls.settings]
        for scheme in cls.schemes:
            assert TRANSPORTERS.get(scheme) is cls


def test_template_is_a_working_transporter(tmp_path: Path) -> None:
    from fileconveyor.transporters._template import Example

    src = tmp_path / "a"
    src.write_bytes(b"x")
    with Example(parse_destination("example://h/p", env={})) as tp:
        tp.upload(src, b"d/a")
        assert tp.stat(b"d/a").size == 1  # type: ignore[union-attr]
        tp.delete(b"d/a")
        tp.delete(b"d/a")
        assert tp.stat(b"d/a") is None
    with Example(parse_destination("example://h/p?skip_unchanged=yes", env={})) as tp:
        assert [tp.upload(src, b"a"), tp.upload(src, b"a")] == ["uploaded", "unchanged"]
        src.write_bytes(b"y")
        assert tp.upload(src, b"a") == "uploaded"
