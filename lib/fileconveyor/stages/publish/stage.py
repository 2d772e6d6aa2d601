"""fc-publish: a File Conveyor reader that puts each event into a NATS JetStream stream (delivery/nats_hop.py).

It is a sink stage on the common runner (delivery/runner.py), inline: an event is finished once the server
has confirmed it (a JetStream publish acknowledgement, which comes after the message is stored), and the
runner acknowledges the writer (fc-watch, fc-filter) only up to the oldest line not confirmed yet.  So what
fc-publish keeps of its own is what every reader keeps (the writer's high-water mark); every line not
confirmed is still in the writer's state file, which re-sends it after a kill, and the server drops the
re-sends it already has (``Nats-Msg-Id``).

A round of lines is published together (one asynchronous publish each, in order, then one wait for all
the confirmations in ``flush``): the server keeps the order of one connection's messages, so the events of
one path reach their partition in the order they were read.  A round the server did not confirm (down,
restarting, slow) is tried again whole, with back-off; what it had already stored is dropped as duplicates.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ... import events as E
from ...delivery import nats_hop as N
from ...delivery.nats_auth import HEADER_SIG, Credentials, Keys
from ...delivery.stage import Done, Item, Outcome, Stage, StageContext
from ...errors import ConfigError


class PublishStage(Stage):
    name = "fc-publish"

    def __init__(
        self,
        target: N.Target,
        partitions: int | None,
        duplicate_window: float,
        timeout: float = 5.0,
        credentials: Credentials | None = None,
        keys: Keys | None = None,
    ):
        self.target = target
        self.credentials = credentials
        self.keys = keys  # each message signed with the first (nats_auth.py), when given
        self.want_partitions = partitions
        self.duplicate_window = duplicate_window
        self.timeout = timeout
        self.broker: N.Broker | None = None
        self.round: list[tuple[bytes, bytes, dict[str, str]]] = []
        self.published = 0
        self.duplicates = 0
        self.rep: Any = None

    def start(self, ctx: StageContext) -> None:
        self.rep = ctx.rep
        self.broker = N.Broker(
            self.target, self.timeout, say=self.rep.warn, inform=self.rep.info, credentials=self.credentials
        )
        try:  # a stream made with another number of partitions is said at once; a server down is waited for
            self.broker.call(self.broker.ensure_stream(self.want_partitions, self.duplicate_window))
        except ConfigError:
            raise
        except Exception as exc:
            self.rep.warn(f"{self.target.shown}: not reachable yet ({_why(exc)}); events wait until it is")

    def work(self, item: Item) -> Outcome:
        ev = item.event
        assert self.broker is not None
        # the partition needs the stream's number of partitions, known once connected: flush() names it
        headers = {N.HEADER_ID: N.message_id(ev, item.line), **N.upstream_order(ev)}
        data = N.payload(ev)
        size, limit = N.message_size(data, headers), self.broker.max_payload()
        if size > limit:
            # Sent, the server closes the connection (or the client refuses it), and the round is "not confirmed"
            # and tried again whole, for ever: every event published with it waited too, at every run.  Its
            # ``id`` and hop go into the headers too, so a line under --max-line-bytes can be one.
            self.rep.error(
                f"{E.display(E.get_path(ev, 'path'))}: not published: as a message it takes about {size} bytes, "
                f"more than the server takes ({limit}, its max_payload); the event is failed, not retried"
            )
            return Done([], failed=True)
        self.round.append((E.get_path(ev, "path"), data, headers))
        return Done([])

    def flush(self) -> str | None:
        if not self.round:
            return None
        batch, self.round = self.round, []
        assert self.broker is not None
        try:
            acks = self.broker.call(self._publish(batch), timeout=self.timeout * 3)
        except ConfigError:
            raise  # a stream with another number of partitions: retrying will not help (exit 3)
        except Exception as exc:  # a server down or restarting: the whole round is tried again
            reason = f"{self.target.shown}: not confirmed by the server ({_why(exc)})"
            self.rep.warn_once(f"publish:{type(exc).__name__}", f"{reason}; the events are kept and tried again")
            return reason
        self.published += len(batch)
        self.duplicates += sum(1 for a in acks if getattr(a, "duplicate", False))
        return None

    async def _publish(self, batch: list[tuple[bytes, bytes, dict[str, str]]]) -> list[Any]:
        assert self.broker is not None
        b = self.broker
        if b.partitions is None:
            await b.ensure_stream(self.want_partitions, self.duplicate_window)
        assert b.partitions is not None
        futures = []
        for path, data, headers in batch:
            subj = N.subject(self.target.stream, N.partition_of(path, b.partitions))
            if self.keys is not None:  # over the subject too: a copy moved to another partition or stream fails
                headers = {**headers, HEADER_SIG: self.keys.sign(subj, headers, data)}
            # one after another: the order of this connection's messages is the stream's order
            futures.append(await b.js.publish_async(subj, data, headers=dict(headers)))
        return list(await asyncio.wait_for(asyncio.gather(*futures), self.timeout * 2))

    def progress(self) -> str:
        return f"{self.published} published, {self.duplicates} dropped by the server as duplicates"

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."
