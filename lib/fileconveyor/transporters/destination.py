"""Where files go: a destination parsed from a URL-like spec and an optional config file.

    sftp://user@host:2222/var/www/static     ftp://host/path     ftps://host/     file:///srv/cdn

Non-secret settings may follow as a query (``sftp://host/x?known_hosts=/etc/kh``) or sit in the config file,
one ``key = value`` a line (``to``, ``url``, ``name`` and any transporter setting).  Secrets (``password``,
``passphrase``) come only from the environment (``FC_<NAME>_PASSWORD``, then ``FC_PASSWORD``) or from a config
file nobody else can read: a command line is visible to every user through ps, so a spec carrying
``user:password@`` is refused.  Secrets never appear in repr() or str().
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes, urlsplit

from .. import private
from ..errors import ConfigError
from ..plain import Frozen

SECRET_KEYS = ("password", "passphrase")
# Keys of a config file that describe the destination itself rather than a transporter setting.
DESTINATION_KEYS = ("to", "url", "name", *SECRET_KEYS)


class Destination(Frozen):
    """Pickled to isolated transporters' worker processes.  Its secrets are neither compared nor shown."""

    _fields = ("scheme", "host", "port", "user", "root", "base_url", "name", "settings")
    _also = ("secrets",)

    def __init__(
        self,
        scheme: str,
        host: str = "",
        port: int | None = None,
        user: str = "",
        root: bytes = b"",  # the remote directory; b"" means the login directory
        base_url: str = "",  # public URL of ``root``, always ending in "/"
        name: str = "",  # the server's name in events and in FC_<NAME>_* variables
        settings: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,  # never shown (repr), not compared
    ):
        self.__dict__.update(
            scheme=scheme,
            host=host,
            port=port,
            user=user,
            root=root,
            base_url=base_url,
            name=name,
            settings={} if settings is None else settings,
            secrets={} if secrets is None else secrets,
        )

    # for the type checkers: set in __init__
    scheme: str
    host: str
    port: int | None
    user: str
    root: bytes
    base_url: str
    name: str
    settings: Mapping[str, str]
    secrets: Mapping[str, str]

    def __str__(self) -> str:
        """The spec as people should see it: never with a secret."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address, as a URL writes it
        return f"{self.scheme}://{user}{host}{port}{os.fsdecode(self.root)}"

    def secret(self, key: str) -> str | None:
        return self.secrets.get(key)

    def secret_source(self, key: str) -> str:
        """Where the secret ``key`` comes from, for messages: "FC_HOST_PASSPHRASE or FC_PASSPHRASE"."""
        return " or ".join(secret_variables(self.name, key))

    def flag(self, key: str, default: bool = False) -> bool:
        """A yes/no setting."""
        value = self.settings.get(key)
        if value is None:
            return default
        if value.lower() in ("1", "yes", "true", "on"):
            return True
        if value.lower() in ("0", "no", "false", "off"):
            return False
        raise ConfigError(f"{self}: setting {key} must be yes or no, not {value!r}")


def secret_variables(name: str, key: str) -> tuple[str, str]:
    """The environment variables a destination's secret comes from, the first one set winning."""
    return f"FC_{re.sub(r'[^A-Z0-9]', '_', name.upper())}_{key.upper()}", f"FC_{key.upper()}"


def parse_destination(
    spec: str | None = None,
    *,
    url: str | None = None,
    config: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Destination:
    """A Destination from ``spec`` and/or ``config``; the spec and ``url`` given here win over the file's."""
    env = os.environ if env is None else env
    values = read_config(config) if config is not None else {}
    spec = spec or values.pop("to", None)
    values.pop("to", None)
    if not spec and config is not None:  # "too = ..." was silently a setting, and the message spoke of --to
        keys = ", ".join(values) or "none"
        raise ConfigError(f"no destination: {os.fspath(config)} has no 'to = URL' line (its keys: {keys})")
    if not spec:
        raise ConfigError("no destination: give a URL such as sftp://user@host/path (or 'to = ...' in a config file)")
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(f"destination {spec!r} has no scheme: write file:///dir, ftp://host/dir or sftp://host/dir")
    if parts.password is not None:
        raise ConfigError(
            f"destination {scheme}://{parts.hostname or ''}: a password on the command line is visible to every "
            f"user (ps); put it in FC_PASSWORD or in a config file readable only by you"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"destination {spec!r}: bad port number") from None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in SECRET_KEYS:
            where = f"{scheme}://{parts.hostname or ''}"
            raise ConfigError(f"destination {where}: no {key} in the URL; use FC_{key.upper()} or a config file")
        values[key] = value  # the command line wins over the config file
    host = parts.hostname or ""
    if scheme == "file" and host not in ("", "localhost"):
        raise ConfigError(f"destination {spec!r}: a file URL has three slashes: file:///{host}{parts.path}")
    name = values.pop("name", None) or host or scheme
    secrets = {k: values.pop(k) for k in SECRET_KEYS if k in values}
    for key in SECRET_KEYS:
        value = next((env[v] for v in secret_variables(name, key) if env.get(v)), None)
        if value and key not in secrets:
            secrets[key] = value
    dest = Destination(
        scheme=scheme,
        host=host,
        port=port,
        user=unquote(parts.username or ""),
        root=unquote_to_bytes(parts.path),
        name=name,
        settings={k: v for k, v in values.items() if k not in DESTINATION_KEYS},
        secrets=secrets,
    )
    base = url or values.get("url") or _default_base_url(dest)
    return dest.replace(base_url=base if base.endswith("/") else base + "/")


def read_config(path: str | os.PathLike[str]) -> dict[str, str]:
    """``key = value`` lines (``#`` starts a comment line); refuses secrets in a file others can read."""
    try:
        with open(path, encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read destination config {os.fspath(path)}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{os.fspath(path)}:{number}: expected 'key = value'")
        values[key.strip()] = value.strip()
    problem = private.secret_problem(path, st) if any(k in values for k in SECRET_KEYS) else None
    if problem:
        raise ConfigError(problem)
    return values


def _default_base_url(dest: Destination) -> str:
    # Without a public URL the best honest answer is where the file is, without credentials.
    return str(dest).rstrip("/") + "/" if dest.scheme != "file" else "file://" + os.fsdecode(dest.root)
