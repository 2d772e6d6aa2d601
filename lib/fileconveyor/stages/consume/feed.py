"""fc-consume's input: messages pulled from the partitions it owns, as event lines for the common runner.

One durable pull consumer per partition (``fc-STREAM-pK``), explicit acknowledgements.  Each message
becomes the event it carries plus a field ``fc_broker`` (partition, stream sequence, the reply subject
that acknowledges it, and the writer's order from the publisher's headers), which the stage takes off
again; a payload that is not a valid event is reported and terminated (never redelivered), as a bad line
is skipped.

The feed is an iterable of lines with no file descriptor: the runner reads it as it reads an in-memory
stream (delivery/streams.py), and its end (``--idle-exit``) is the end of the input.  While a message is
held (read and not yet emitted, or emitted and not yet acknowledged by the next stage) the feed tells the
server it is in progress (``+WPI``) every third of the ack wait, so a slow destination does not make it
redeliver; a consumer that dies stops doing so, and its messages come again after the ack wait.

With ``--partitions auto`` the partitions pulled are those whose lease this worker holds
(delivery/nats_leases.py), looked at every third of the lease: a partition gained starts a pull, one lost
stops it at once, and nothing of a partition no longer ours is acknowledged or kept in progress (its new
owner gets the messages again after the ack wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ... import events as E
from ...delivery import nats_hop as N
from ...delivery.nats_auth import Keys
from ...delivery.nats_leases import Leases
from ...errors import ConfigError

FIELD = "fc_broker"  # the message's identity on the line between the feed and the stage
END = b""  # queued by the feed when the input ends (--idle-exit)
PULL_WAIT = 1.0  # seconds a pull request waits on the server for messages


class Feed:
    def __init__(
        self,
        broker: N.Broker,
        partitions: str | None,
        ack_wait: float,
        max_pending: int,
        idle_exit: float | None,
        rep: Any,
        batch: int = 256,
        leases: Leases | None = None,
        keys: Keys | None = None,
    ):
        self.broker = broker
        self.keys = keys  # with keys, only messages one of them signed are applied (nats_auth.py)
        self.spec = partitions
        self.ack_wait = ack_wait
        self.max_pending = max_pending
        self.idle_exit = idle_exit
        self.rep = rep
        self.batch = batch
        self.leases = leases
        self.owned: frozenset[int] = frozenset()  # with leases: the partitions ours now (read from any thread)
        self.draining: set[int] = set()  # with leases: more than our share, given back once none is held
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.lock = threading.Lock()
        self.held: dict[tuple[int, int], str] = {}  # (partition, stream seq) -> reply subject, until acknowledged
        self.partitions: list[int] = []
        self.stopping = False
        self.last_message = time.monotonic()
        self.bad = 0
        self.refused = 0  # not signed by one of our keys
        # why the feed ended on its own: a ConfigError (fc-consume's exit status 3), or a bug of ours (5)
        self.failure: Exception | None = None
        self.redelivered = 0  # messages the server delivered more than once (the ack wait passed, a restart)
        self._tasks: list[asyncio.Task[None]] = []
        self._pulls: dict[int, asyncio.Task[None]] = {}

    # -- the runner's side ---------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.lines.get()
            if line == END:
                return
            yield line

    # -- the stage's side ----------------------------------------------------------------

    def hold(self, key: tuple[int, int], reply: str) -> None:
        with self.lock:
            self.held[key] = reply

    def owns(self, partition: int) -> bool:
        """Is this partition ours now?  Always, for a static assignment (--partitions LIST)."""
        return self.leases is None or (partition in self.owned and self.leases.fresh(partition))

    def ack(self, keys: list[tuple[int, int]], wait: bool = False) -> None:
        """Acknowledge these messages; without waiting unless ``wait`` (at the end): an acknowledgement the
        server loses makes it deliver the message again, which the stage's fence drops.  Never for a partition
        whose lease we lost: its new owner has the messages, and decides."""
        with self.lock:
            replies = [r for k in keys if (r := self.held.pop(k, None)) and self.owns(k[0])]
        if not replies:
            return
        if wait:
            try:
                self.broker.call(self._send(replies, b"+ACK"), timeout=10)
            except Exception:  # the server gone: it redelivers them, the fence drops them
                pass
        else:
            self.broker.submit(self._send(replies, b"+ACK"))

    # -- the broker's side ---------------------------------------------------------------

    def start(self, on_ready: Callable[[int, list[int]], None]) -> None:
        """Wait for the stream (made by fc-publish), then pull from each partition we own."""
        self.broker.submit(self._main(on_ready))

    async def _main(self, on_ready: Callable[[int, list[int]], None]) -> None:
        warned = False
        while not self.stopping:
            try:
                total = await self.broker.ensure_stream(None, create=False)
                break
            except ConfigError as exc:
                self._refuse(exc)
                return
            except Exception as exc:
                if not warned:
                    self.rep.warn(f"{self.broker.target.shown}: not ready yet ({exc or type(exc).__name__}); waiting")
                    warned = True
                await asyncio.sleep(1.0)
        else:
            return
        self.last_message = time.monotonic()
        if self.leases is not None:
            try:
                lease = await self.leases.open()
            except Exception as exc:
                self._refuse(ConfigError(f"{self.broker.target.shown}: the lease bucket: {exc or type(exc).__name__}"))
                return
            on_ready(total, [])
            self.rep.info(f"worker {self.leases.worker}: leases of {lease:g} s, renewed every {lease / 3:g} s")
            self._tasks = [asyncio.ensure_future(self._hold_leases(total))]
        else:
            try:
                self.partitions = N.parse_partitions(self.spec, total) if self.spec else list(range(total))
            except ConfigError as exc:  # raised in this task, it was seen by nobody: the worker waited for ever
                self._refuse(exc)
                return
            on_ready(total, self.partitions)
            self._pulls = {k: asyncio.ensure_future(self._pull(k)) for k in self.partitions}
            self._tasks = list(self._pulls.values())
        self._tasks.append(asyncio.ensure_future(self._in_progress()))
        if self.idle_exit is not None:
            self._tasks.append(asyncio.ensure_future(self._watch_idle()))

    def _refuse(self, exc: ConfigError) -> None:
        """A configuration that pulling cannot fix: the input ends, and fc-consume exits with it (status 3)."""
        self.failure = exc
        self.stop(end=True)

    async def _hold_leases(self, total: int) -> None:
        """Every third of the lease: renew, take, give back (nats_leases.Leases.beat); pulls follow."""
        assert self.leases is not None
        while not self.stopping:
            began = time.monotonic()
            try:
                gained, lost, excess = await self.leases.beat(total)
            except Exception as exc:  # the server away: the renewals retry, a lease unrenewed too long is lost
                gained, lost, excess = [], [], []
                self.rep.warn_once("leases", f"{self.broker.target.shown}: leases: {exc or type(exc).__name__}")
            for k in lost:
                self.rep.warn(f"partition {k}: lease lost (not renewed in time, or taken): no longer pulled")
                self._drop(k)
            for k in gained:
                self.rep.info(f"partition {k}: lease taken, pulling")
                self.owned = self.owned | {k}
                self._pulls[k] = asyncio.ensure_future(self._pull(k))
            self.partitions = sorted(self.owned)
            for k in excess:
                if k not in self.draining:
                    self.rep.info(f"partition {k}: more than our share, given back once its messages are done")
                    self.draining.add(k)
                    self._stop_pull(k)
            for k in list(self.draining):
                with self.lock:
                    busy = any(p == k for p, _ in self.held)
                if not busy:
                    self.draining.discard(k)
                    self._drop(k)
                    await self.leases.release(k)
            # every third of the lease from start to start: a slow round does not eat the margin (fresh())
            await asyncio.sleep(max(0.05, self.leases.interval - (time.monotonic() - began)))

    def _stop_pull(self, k: int) -> None:
        task = self._pulls.pop(k, None)
        if task is not None:
            task.cancel()

    def _drop(self, k: int) -> None:
        """Partition ``k`` is not ours: not pulled, and what we hold of it neither acknowledged nor kept in
        progress (its lines already emitted stay with the next stages; the new owner's fence decides)."""
        self._stop_pull(k)
        self.draining.discard(k)
        self.owned = self.owned - {k}
        with self.lock:
            for key in [key for key in self.held if key[0] == k]:
                del self.held[key]

    async def _subscribe(self, k: int, first: bool = False) -> Any:
        from nats.js import api

        stream, name = self.broker.target.stream, N.consumer_name(self.broker.target.stream, k)
        config = api.ConsumerConfig(
            durable_name=name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=N.subject(stream, k),
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_pending,
            max_deliver=-1,  # redelivered until acknowledged: an event is never given up on
        )
        try:  # made, or updated to this run's --ack-wait and --max-pending
            await self.broker.js.add_consumer(stream, config)
        except Exception as exc:  # an update the server refuses: the consumer as it is still serves
            self.rep.warn_once(f"consumer:{k}", f"partition {k}: consumer {name} kept as it is ({exc})")
        if first:
            await self._nobody_else(stream, name, k)
        return await self.broker.js.pull_subscribe_bind(durable=name, stream=stream)

    async def _nobody_else(self, stream: str, name: str, k: int) -> None:
        """Another fc-consume pulling from this partition would take half its messages: the events of a path
        split between two workers, each with its own fence, are applied out of order.  Its pull requests are
        seen on the server (a killed one's expire within PULL_WAIT): ConfigError if they are there after that.
        A live puller leaves a gap of milliseconds between its requests: two looks apart without one are enough."""
        start, idle_looks = time.monotonic(), 0
        while True:
            waiting = (await self.broker.js.consumer_info(stream, name)).num_waiting
            idle_looks = 0 if waiting else idle_looks + 1
            if idle_looks == 2:
                return
            if waiting and time.monotonic() - start > PULL_WAIT * 1.2:
                break
            await asyncio.sleep(0.2)
        raise ConfigError(
            f"{self.broker.target.shown}: partition {k} is being consumed by another process (consumer {name} has "
            "its pull requests): give each partition to one worker (--partitions)"
        )

    async def _pull(self, k: int) -> None:
        """Pull partition ``k`` until we stop.  A failure of ours in it (a bug: a message our code cannot take)
        ends the feed and fc-consume with it (exit 5): the task ended unseen, its partition no longer pulled and
        the worker exiting 0 at --idle-exit with that partition's events never applied."""
        try:
            await self._pulling(k)
        except Exception as exc:
            self.rep.error(f"partition {k}: unexpected failure while pulling: {exc or type(exc).__name__}")
            if self.failure is None:
                self.failure = exc
            self.stop(end=True)

    async def _pulling(self, k: int) -> None:
        import nats.errors

        sub = None
        failures = 0
        # another puller is looked for at the first subscription only (later, a pull of ours from before a
        # reconnection may still be waiting), and with static --partitions only: with leases, the lease says whose
        # it is (an owner that lost it stops pulling), and a refusal would end the worker's other partitions too
        first = self.leases is None
        while not self.stopping:
            # read no further ahead than the runner takes: what waits here is held (in progress) too
            if self.lines.qsize() > 4 * self.batch or not self.owns(k):  # or a renewal overdue: wait for it
                await asyncio.sleep(0.05)
                continue
            try:
                if sub is None:
                    sub, first = await self._subscribe(k, first), False
                    self.last_message = time.monotonic()  # --idle-exit counts from when we pull
                msgs = await sub.fetch(self.batch, timeout=PULL_WAIT)
                failures = 0
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except ConfigError as exc:
                self._refuse(exc)
                return
            except Exception as exc:  # the server restarting: the subscription is made again
                failures += 1
                if failures == 3:
                    self.rep.warn(f"{self.broker.target.shown}: partition {k}: {exc or type(exc).__name__}; retrying")
                if sub is not None:
                    try:
                        await sub.unsubscribe()
                    except Exception:
                        pass
                sub = None
                await asyncio.sleep(min(2.0, 0.2 * failures))
                continue
            taken = [ev for ev in (self._take(k, msg) for msg in msgs) if ev is not None]
            if self.leases is not None and taken:
                # the shared fence of each path, read here for the batch at once (one round trip per event
                # from the stage costs more); only we write it while we own the partition, and the stage's own
                # fence has what we emitted since
                paths = [E.get_path(ev, "path") for ev in taken]
                fences = await asyncio.gather(*map(self.leases.fence_get, paths), return_exceptions=True)
                for ev, fence in zip(taken, fences, strict=True):
                    if not isinstance(fence, BaseException):  # else the stage reads it again itself
                        ev[FIELD]["fence"] = fence
                if not self.owns(k):
                    continue
            for ev in taken:
                meta = ev[FIELD]
                self.hold((k, meta["sseq"]), meta["reply"])
                self.lines.put(E.encode(ev))

    def _take(self, k: int, msg: Any) -> dict | None:
        """The event a message carries, with FIELD (held and queued by the caller); None if there is none."""
        self.last_message = time.monotonic()
        if not self.owns(k):  # fetched as the lease was lost: the new owner gets it
            return None
        try:
            sseq = int(msg.metadata.sequence.stream)
        except (ValueError, AttributeError, TypeError):
            sseq = None
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            if int(msg.metadata.num_delivered) > 1:
                self.redelivered += 1
        where = f"partition {k}, stream seq {sseq}" if sseq is not None else f"partition {k}"
        # before anything of it is read: an unsigned message's headers (Fc-Epoch, Fc-Seq) would move the fence
        why = None if self.keys is None else self.keys.check(msg.subject, msg.headers, msg.data)
        if why is not None:
            self.refused += 1
            self.rep.error(f"{where}: a message {why}: terminated, not applied")
            self._terminate(msg)
            return None
        try:
            if sseq is None:
                raise ValueError("no stream sequence")
            ev = E.decode(msg.data)
            if ev["kind"] not in E.KINDS:
                # a pass-through's word to its reader (resend, dropped), no file: taken as a line, it made no item,
                # and its message was held in progress for ever (--idle-exit never came)
                raise ValueError(f"a {ev['kind']!r} line is no file event")
        except (E.EventError, ValueError) as exc:
            self.bad += 1
            self.rep.error(f"{where}: a message that is not an event ({exc}): terminated, not redelivered")
            self._terminate(msg)
            return None
        headers = msg.headers or {}
        try:
            oseq = int(headers.get(N.HEADER_SEQ, "-1"))
        except ValueError:
            oseq = -1
        ev.pop("hop", None)  # a hop of the publisher's host (or a forged one): never acknowledged to from here
        # for fc-record's fence (stages/record/stage.py): when the server stored it, in microseconds.  The events of
        # a path are stored in their order (one partition) and a stale copy stored later never gets past our
        # fence; an ``order`` from before the hop (anyone's) is replaced: this one is the path's order from here
        ev.pop("order", None)
        with contextlib.suppress(AttributeError, TypeError, ValueError, OverflowError):
            ev["order"] = round(msg.metadata.timestamp.timestamp() * 1_000_000)
        ev[FIELD] = {"p": k, "sseq": sseq, "reply": msg.reply, "epoch": headers.get(N.HEADER_EPOCH, ""), "oseq": oseq}
        return ev

    def _terminate(self, msg: Any) -> None:
        """The server never delivers this message again (and the partition goes on)."""
        if msg.reply:
            self.broker.submit(self._send([msg.reply], b"+TERM"))

    async def _in_progress(self) -> None:
        every = max(0.2, self.ack_wait / 3)
        while not self.stopping:
            await asyncio.sleep(every)
            with self.lock:
                replies = [r for (k, _), r in self.held.items() if self.owns(k)]
            await self._send(replies, b"+WPI")

    async def _watch_idle(self) -> None:
        assert self.idle_exit is not None
        held, since = 0, time.monotonic()  # how many we hold, unchanged since when
        while not self.stopping:
            await asyncio.sleep(0.2)
            with self.lock:
                if self.held:  # not idle while we hold messages: acknowledging them lets the server send more
                    self.last_message = time.monotonic()
                now_held = len(self.held)
            if now_held != held:
                held, since = now_held, time.monotonic()
            elif held and self.lines.empty() and time.monotonic() - since > max(self.idle_exit, 5.0):
                # a plain --output file, or `| cat`, never acknowledges: the run would wait for ever, saying nothing
                self.rep.warn_once(
                    "idle-held",
                    f"--idle-exit: {held} message(s) emitted, not acknowledged by the next stage for "
                    f"{time.monotonic() - since:.0f} s: is a File Conveyor stage reading our output? (a plain file or "
                    "a program such as cat never acknowledges; fc-consume waits for it before finishing)",
                )
            if time.monotonic() - self.last_message > self.idle_exit and self.lines.empty():
                self.rep.info(f"no new message for {self.idle_exit:g} s (--idle-exit): finishing")
                self.stop(end=True)

    async def _send(self, replies: list[str], verb: bytes) -> None:
        nc = self.broker.nc
        if nc is None or not nc.is_connected:
            return  # not now; the in-progress loop or the redelivery comes back to it
        try:
            for reply in replies:
                await nc.publish(reply, verb)
            await nc.flush(timeout=5)
        except Exception:  # lost with the connection: redelivered later, dropped by the fence
            pass

    def close(self) -> None:
        """Stop pulling and wait for the pulls to end (before the connection closes)."""
        self.stopping = True

        async def _cancel() -> None:
            tasks = self._tasks + list(self._pulls.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.leases is not None:  # given back at once rather than after the lease: the others take them
                await self.leases.release_all()

        try:
            self.broker.call(_cancel(), timeout=5)
        except Exception:
            pass

    def stop(self, end: bool = False) -> None:
        """Stop pulling; ``end``: and end the input (what was queued before is still taken)."""
        self.stopping = True
        if end:
            self.lines.put(END)
