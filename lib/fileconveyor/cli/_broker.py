"""The flags fc-publish and fc-consume share for the broker's trust: credentials and signing keys
(delivery/nats_auth.py).  None takes a secret itself: a command line is shown by ``ps`` to every user."""

from __future__ import annotations

import argparse

from ..delivery import nats_auth as A
from ..delivery.nats_hop import Target
from ..report import Reporter

EPILOG = f"""\
credentials: in the URL (nats://USER:PASSWORD@HOST/STREAM, visible to ps), or better
from the environment: {A.USER_VAR} and {A.PASSWORD_VAR}, or {A.TOKEN_VAR}; or an nkey
seed file (--nkey, {A.NKEY_VAR}) or a credentials file (--creds, {A.CREDS_VAR}).

signed messages: with --key-file FILE (one key per line, mode 0600) or {A.KEYS_VAR}
(keys separated by spaces), fc-publish signs each message with the first key and
fc-consume applies only messages one of its keys signed: another is reported with its
partition and stream sequence and terminated (docs/scale-out.md)."""


def add_auth_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("trust (docs/scale-out.md)")
    g.add_argument(
        "--creds",
        metavar="FILE",
        help=f"log in with this NATS credentials file (a user JWT and its nkey seed; mode 0600); or {A.CREDS_VAR}",
    )
    g.add_argument("--nkey", metavar="FILE", help=f"log in with this nkey seed file (mode 0600); or {A.NKEY_VAR}")
    g.add_argument(
        "--key-file",
        metavar="FILE",
        help=f"the shared keys that sign the messages, one per line (mode 0600): fc-publish signs with the first, "
        f"fc-consume accepts any; or {A.KEYS_VAR}",
    )


def auth_from_args(args: argparse.Namespace, target: Target, rep: Reporter) -> tuple[A.Credentials, A.Keys | None]:
    if target.has_auth:  # it works; where it is seen is said once, at start
        rep.warn(
            f"{target.shown}: the broker's password or token is in the URL, which every user of this machine sees "
            f"(ps): give it in {A.USER_VAR}/{A.PASSWORD_VAR} or {A.TOKEN_VAR} instead"
        )
    return A.credentials(target.has_auth, args.creds, args.nkey), A.load_keys(args.key_file)
