"""A line fc-publish takes (shorter than --max-line-bytes, 1 MiB) but the server cannot store as one message (its
max_payload, 1 MiB by default, counts the headers too, and fc-publish adds them: Nats-Msg-Id, the hop's epoch and
seq): the server closed the connection, the round it was in was "not confirmed by the server" and tried again
whole, for ever (exit 4, "retried when fc-publish runs again", and again then): the good lines published in the
round with it waited too (the pipeline wedged on one line anyone who writes fc-publish's input can write).  Such a
line is failed alone now, reported, and the others are published.

Real fc-publish and a real nats-server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.broker.test_broker import fc, stream_state
from tests.servers.nats import NatsServer, nats_server  # noqa: F401  (the fixture)


def _line(rel: str, **extra: object) -> bytes:
    ev = {"v": 1, "id": f"id-{rel}", "kind": "deleted", "source": "s", "root": "/srv", "path": f"/srv/{rel}"}
    return json.dumps({**ev, "rel": rel, **extra}, separators=(",", ":")).encode() + b"\n"


def test_a_line_too_big_for_one_message_wedges_nothing(tmp_path: Path, nats_server: NatsServer) -> None:  # noqa: F811
    url = nats_server.stream_url()
    big = _line("big.txt", junk="")
    big = _line("big.txt", junk="j" * ((1 << 20) - 16 - len(big)))  # 16 bytes under --max-line-bytes (1 MiB)
    assert len(big) == (1 << 20) - 16
    data = _line("a.txt") + big + _line("b.txt")
    pub = subprocess.run(
        fc("fc-publish", "--state", str(tmp_path / "publish.db"), "--drain-timeout", "5", url),
        input=data,
        capture_output=True,
        timeout=120,
    )
    err = pub.stderr.decode(errors="replace")
    # before: exit 4, "not confirmed by the server", b.txt (in big.txt's round) not stored either, both kept for
    # the next run, which did the same
    assert stream_state(nats_server)[0] == 2, err[-3000:]  # a.txt and b.txt
    assert pub.returncode == 1, err[-3000:]  # (the line failed, as a bad line: exit 1; not 4, work left undone)
    assert "/srv/big.txt: not published" in err and "more than the server takes" in err, err[-3000:]
