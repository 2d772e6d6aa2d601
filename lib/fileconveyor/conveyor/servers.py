"""One config.xml <server> as fc-transport arguments: ``--to URL --url BASE --set k=v``, secrets in the environment.

The original's transporters and their settings (README "Transporters"), and what they become:

    symlink_or_copy  location, url                      file://LOCATION/PATH
    ftp              host, username, password, url,     ftp://USERNAME@HOST:PORT/PATH (password: FC_<NAME>_PASSWORD)
                     port, path
    sftp             the same, plus key                 sftp://USERNAME@HOST:PORT/PATH?key_file=KEY
    s3               access_key_id, secret_access_key,  s3://BUCKET_NAME/BUCKET_PREFIX/PATH
                     bucket_name, bucket_prefix         (keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    cf               s3's, plus distro_domain_name      s3://... with URLs on https://DISTRO_DOMAIN_NAME/, as the
                                                        original (no invalidation); with <distribution_id> added,
                                                        cf://...?domain=DISTRO_DOMAIN_NAME, which invalidates
    cloudfiles       username, api_key, container       cloudfiles://USERNAME@CONTAINER/PATH (api_key:
    (mosso, cumulus)                                    FC_<NAME>_PASSWORD)

PATH is the destination's path under the server's own base (ftp/sftp <path>, s3's bucket_prefix).  Every
setting fc-transport's transporter knows (``fc-transport --list``: timeout, known_hosts, endpoint_url, ...) may
be given as an element too and passes through as ``--set``; a transporter that is neither the original's nor
built in (an installed plugin) takes a ``<to>`` element with its destination URL.  The server's name goes into
the URL as ``?name=``, so events and fc-record's ``server`` column carry it verbatim, spaces included.

Secrets never go into arguments (every user can read them with ps): they go into the environment variables
fc-transport reads (transporters/destination.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from ..errors import ConfigError, FCError

if TYPE_CHECKING:  # config.py imports this module to check every server while loading
    from .config import Server

ALIASES = {"mosso": "cloudfiles", "cumulus": "cloudfiles", "file": "symlink_or_copy"}
# The original's settings per transporter: (required, optional).
ORIGINAL: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "symlink_or_copy": (("location", "url"), ()),
    "ftp": (("host", "username", "password", "url"), ("port", "path")),
    "sftp": (("host", "username", "url"), ("password", "port", "path", "key")),
    "s3": (("access_key_id", "secret_access_key", "bucket_name"), ("bucket_prefix",)),
    "cf": (("access_key_id", "secret_access_key", "bucket_name", "distro_domain_name"), ("bucket_prefix",)),
    "cloudfiles": (("username", "api_key", "container"), ()),
}
# Settings that go into fc-transport's environment, never into its arguments.
SECRET_SETTINGS = ("password", "passphrase", "api_key", "secret_access_key")
# Settings read as file names: the loader makes them absolute (relative to config.xml's directory).
PATH_SETTINGS = ("location", "key", "key_file", "known_hosts", "ca_file")
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


@dataclass(frozen=True)
class TransportArgs:
    # fc-transport's destination flags in command-line order, as its parser gives them to targets_from:
    # ("to", URL), ("url", BASE), ("set", "KEY=VALUE")...
    pieces: list[tuple[str, str]]
    env: dict[str, str]  # secrets, for fc-transport's environment

    @property
    def args(self) -> list[str]:
        """The pieces as fc-transport's arguments (``--to URL --url BASE --set k=v``)."""
        return [arg for flag, value in self.pieces for arg in (f"--{flag.replace('_', '-')}", value)]


class ServerSettingsError(ConfigError):
    """Everything wrong with one <server>'s settings, one problem per item."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def canonical(transporter: str) -> str:
    return ALIASES.get(transporter, transporter)


def env_prefix(name: str) -> str:
    """The FC_<NAME> prefix fc-transport reads a destination's secrets under (destination.py's rule)."""
    return "FC_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def transport_args(server: Server, dest_path: str) -> TransportArgs:
    """fc-transport's arguments for ``server`` with files under ``dest_path`` (a destination's path, "" = root).

    ServerSettingsError lists every setting that is missing, unknown or cannot be mapped."""
    kind = canonical(server.transporter)
    s = dict(server.settings)
    problems: list[str] = []
    cls = _transporter_class(kind, problems)
    if cls is None and kind not in ORIGINAL and not s.get("to"):
        raise ServerSettingsError(problems)  # an unknown name, most often a typo: its settings mean nothing yet
    if kind in ORIGINAL:
        required, optional = ORIGINAL[kind]
        if kind in ("s3", "cf") and "profile" in s:  # credentials from an AWS profile instead
            required = tuple(k for k in required if k not in ("access_key_id", "secret_access_key"))
        missing = [k for k in required if not s.get(k)]
        if missing:
            problems.append(f"{server.transporter} needs {', '.join(f'<{k}>' for k in missing)}")
        own = set(required) | set(optional)
        if kind == "symlink_or_copy":
            own.add("symlink_within")  # injected by the loader, as the original injected symlinkWithin
    else:
        own = {"to"}
        if not s.get("to"):
            problems.append(f"transporter {server.transporter!r} is not one of the original's: give <to> with its URL")
    native = set(cls.all_settings()) if cls is not None else set()
    native |= {"url", "password", "passphrase"}
    unknown = sorted(k for k in s if k not in own and k not in native)
    if unknown:
        known = sorted(own | native)
        problems.append(f"unknown setting {', '.join(f'<{k}>' for k in unknown)}; {kind} knows: {', '.join(known)}")
    if "connections" in s and server.max_connections:
        problems.append("give maxConnections or <connections>, not both")
    if kind == "ftp" and "key" in s:
        problems.append("ftp has no <key> (the original refused it too); log in with a key over sftp")
    for key in ("port", "path"):
        if key in s and kind in ("ftp", "sftp"):
            if key == "port" and not s[key].isdigit():
                problems.append(f"<port> must be a number, not {s[key]!r}")
            if key == "path" and s[key] and not s[key].startswith("/"):
                problems.append(f"<path> must start with / (it is {s[key]!r})")
    if problems:
        raise ServerSettingsError(problems)

    env: dict[str, str] = {}
    prefix = env_prefix(server.name)
    url: str | None = s.pop("url", None)
    for secret in ("password", "passphrase", "api_key"):
        if s.get(secret):
            env[f"{prefix}_{'PASSWORD' if secret == 'api_key' else secret.upper()}"] = s[secret]
        s.pop(secret, None)
    sets: dict[str, str] = {}
    if kind == "symlink_or_copy":
        to = "file://" + quote(_under(s.pop("location").rstrip("/"), dest_path), safe="/")
        url = _url_under(url, dest_path)
    elif kind in ("ftp", "sftp"):
        host = s.pop("host")
        host = f"[{host}]" if ":" in host else host
        port = f":{s.pop('port')}" if s.get("port") else ""
        root = _under(s.pop("path", "").rstrip("/"), dest_path) if dest_path else s.pop("path", "")
        to = f"{kind}://{quote(s.pop('username'), safe='')}@{host}{port}{quote(root, safe='/')}"
        if "key" in s:
            sets["key_file"] = s.pop("key")
        url = _url_under(url, dest_path)
    elif kind in ("s3", "cf"):
        if s.get("access_key_id"):
            env["AWS_ACCESS_KEY_ID"] = s.pop("access_key_id")
        if s.get("secret_access_key"):
            env["AWS_SECRET_ACCESS_KEY"] = s.pop("secret_access_key")
        key_prefix = "/".join(p for p in (s.pop("bucket_prefix", "").strip("/"), dest_path) if p)
        bucket = s.pop("bucket_name")
        domain = s.pop("distro_domain_name", "")
        if kind == "cf" and s.get("distribution_id"):
            to = f"cf://{bucket}/{quote(key_prefix, safe='/')}"
            sets["domain"] = domain
        else:
            to = f"s3://{bucket}/{quote(key_prefix, safe='/')}"
            if domain:  # the original's cf: S3 URLs with the host replaced by the distribution's domain
                url = url or f"https://{domain}/" + (quote(key_prefix, safe="/") + "/" if key_prefix else "")
    elif kind == "cloudfiles":
        container = s.pop("container")
        host = container if _HOST_LABEL.match(container) else "container"
        if host != container:  # the URL's host is lowercased: a container like "Static" goes as a setting
            sets["container"] = container
        to = f"cloudfiles://{quote(s.pop('username'), safe='')}@{host}/{quote(dest_path, safe='/')}"
        url = _url_under(url, dest_path)
    else:
        to = _under(s.pop("to").rstrip("/"), quote(dest_path, safe="/")) if dest_path else s.pop("to")
        url = _url_under(url, dest_path)
    sets.update(s)  # what is left: fc-transport's own settings, passed through
    if server.max_connections:
        sets["connections"] = str(server.max_connections)
    to += ("&" if "?" in to else "?") + urlencode({"name": server.name})
    pieces = [("to", to)]
    if url:
        pieces.append(("url", url))
    pieces += [("set", f"{key}={value}") for key, value in sets.items()]
    return TransportArgs(pieces, env)


def check(server: Server, dest_path: str = "") -> TransportArgs:
    """transport_args(), and the transporter built from its pieces exactly as fc-transport does at its start (its
    parser turns ``args`` back into these pieces: tests/conveyor/test_servers.py), so a setting fc-transport would
    refuse is a config.xml error too.  Nothing is connected."""
    from ..stages.transport.dest import targets_from

    ta = transport_args(server, dest_path)
    try:
        targets_from(ta.pieces)
    except FCError as exc:
        raise ServerSettingsError([str(exc)]) from None
    return ta


def check_access(servers: Sequence[Server], warn: Callable[[str], None]) -> None:
    """Log in to every server (stages/transport/check.py), with the secrets its fc-transport gets: ConfigError
    naming each that refused us; the ones that do not answer are named to ``warn`` (their files will wait)."""
    from ..stages.transport.check import check_access as check_targets
    from ..stages.transport.dest import targets_from

    targets = []
    for server in servers:
        ta = transport_args(server, "")
        targets += targets_from(ta.pieces, env={**os.environ, **ta.env})
    for tp in check_targets(targets, warn).values():
        tp.close()


def warnings(server: Server, dest_path: str) -> list[str]:
    """What maps, but not quite as the original did."""
    kind = canonical(server.transporter)
    if kind in ("ftp", "sftp") and dest_path and not server.settings.get("path"):
        return [
            f"server {server.name!r} has no <path>: destination paths start at the server's root (here "
            f"/{dest_path}), where the original put them under the login directory; give <path> (the login "
            f"directory, e.g. /home/{server.settings.get('username', 'user')}) unless it is / (a chroot)"
        ]
    return []


def _transporter_class(kind: str, problems: list[str]):  # type: ignore[no-untyped-def]
    from ..transporters import TRANSPORTERS

    try:
        return TRANSPORTERS.get(kind)
    except ConfigError as exc:
        problems.append(str(exc))
        return None


def _under(base: str, sub: str) -> str:
    return f"{base}/{sub}" if sub else base


def _url_under(url: str | None, dest_path: str) -> str | None:
    """The public URL of the destination's directory: the server's <url> plus the path, as the original."""
    if not url or not dest_path:
        return url
    return url.rstrip("/") + "/" + quote(dest_path, safe="/") + "/"
