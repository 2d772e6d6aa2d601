"""Who owns which partition (``fc-consume --partitions auto``), and the per-path fence every owner shares.

Two key-value buckets on the broker (a KV bucket is a stream ``KV_<name>``; nats-server 2.9 has them):

- ``fc-STREAM-leases``, made with a TTL of the lease length (``--lease``): the server itself forgets a key
  not written again within it, so expiry needs no clock but the server's.  ``p.K`` is the lease of partition
  K: taken with ``create`` (refused while anyone holds it), renewed every third of the lease with
  ``update(last=revision)`` (refused once it expired or someone else took it).  ``w.ID`` says a worker is
  alive (the same TTL), which gives the fair share: ceil(partitions / live workers).
- ``fc-STREAM-fence``, no TTL: per path (``f.`` + BLAKE2b-128 of the path), the order of the last event of that
  path the next stages applied (the writer's epoch and seq, the partition and stream seq).  It is written
  before the message is acknowledged to the server, so a new owner reads it after a takeover: a redelivery
  whose acknowledgement was lost, or a stale copy re-published later, is fenced whoever applied the newer one.

A worker killed for good stops renewing: its leases are gone ``lease`` seconds after its last renewal, and
the others look every third of it, so its partitions have a new owner within lease + lease/3.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import time
from typing import Any

from . import nats_hop as N

Order = tuple[str, int, int, int]  # writer's epoch, writer's seq, partition, stream seq


def lease_bucket(stream: str) -> str:
    return f"fc-{stream}-leases"


def fence_bucket(stream: str) -> str:
    return f"fc-{stream}-fence"


def fence_key(path: bytes) -> str:
    return "f." + hashlib.blake2b(path, digest_size=16).hexdigest()


def worker_id() -> str:
    """Unique per process and readable in the bucket (``nats kv ls``): host, pid, and a random tail."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


class Leases:
    """Runs on the broker's loop (its methods are coroutines); the feed calls ``beat`` every ``interval``."""

    def __init__(self, broker: N.Broker, lease: float, worker: str | None = None):
        self.broker = broker
        self.lease = lease
        self.worker = worker or worker_id()
        self.owned: dict[int, int] = {}  # partition -> revision of our lease
        self.renewed: dict[int, float] = {}  # partition -> when its lease was last written (monotonic)
        self.beats = 0
        self.kv: Any = None
        self.fence: Any = None

    @property
    def interval(self) -> float:
        return self.lease / 3

    def fresh(self, k: int) -> bool:
        """Is our lease of ``k`` sure to be still valid?  Counted from before the renewal was sent, and a third
        of the lease short of its end: the server may only have written it later, and forgets it a lease after.
        Read from any thread (a dict read)."""
        at = self.renewed.get(k)
        return at is not None and time.monotonic() - at < self.lease - self.interval

    async def open(self) -> float:
        """Both buckets, made when missing; the lease length is the bucket's (the first worker's --lease)."""
        from nats.js import api
        from nats.js.errors import BucketNotFoundError

        stream = self.broker.target.stream

        async def bucket(name: str, ttl: float | None) -> Any:
            try:
                return await self.broker.js.key_value(name)
            except BucketNotFoundError:
                config = api.KeyValueConfig(bucket=name, history=1, ttl=ttl, storage=api.StorageType.FILE)
                return await self.broker.js.create_key_value(config)

        self.kv = await bucket(lease_bucket(stream), self.lease)
        self.fence = await bucket(fence_bucket(stream), None)
        ttl = (await self.kv.status()).ttl
        if ttl:
            self.lease = float(ttl)
        return self.lease

    def _value(self) -> bytes:
        return json.dumps({"worker": self.worker, "lease": self.lease}).encode()

    async def beat(self, total: int) -> tuple[list[int], list[int], list[int]]:
        """Renew ours, say we are alive, take free partitions up to the fair share.  Returns (gained, lost,
        excess): lost ones must no longer be pulled nor acknowledged; excess ones are more than our share
        (a worker joined) and should be given back once nothing of them is held (``release``)."""
        from nats.js.errors import KeyWrongLastSequenceError, NoKeysError

        self.beats += 1
        now = time.monotonic()
        lost = []
        for k, rev in list(self.owned.items()):
            try:
                self.owned[k] = await self.kv.update(f"p.{k}", self._value(), last=rev)
                self.renewed[k] = now
            except KeyWrongLastSequenceError:  # expired, or taken: not ours any more
                lost.append(k)
            except Exception:  # no answer: ours until it may have expired (a renewal before that ends the doubt)
                if now - self.renewed[k] > self.lease - self.interval:
                    lost.append(k)
        for k in lost:
            self.owned.pop(k, None)
            self.renewed.pop(k, None)
        try:  # the lost ones are said whatever happens next: they must stop being pulled now
            await self.kv.put(f"w.{self.worker}", self._value())
            if self.beats == 1:  # one round for workers started together to see each other before taking any
                return [], lost, []
            keys = set(await self.kv.keys())
        except NoKeysError:
            keys = set()
        except Exception:  # the server away: nothing taken this round
            return [], lost, []
        live = max(1, sum(1 for key in keys if key.startswith("w.")))
        share = math.ceil(total / live)
        gained = []
        # start from a place of our own, so that workers starting together do not all try the same ones
        first = int(hashlib.blake2b(self.worker.encode(), digest_size=4).hexdigest(), 16) % total
        for i in range(total):
            if len(self.owned) >= share:
                break
            k = (first + i) % total
            if k in self.owned or f"p.{k}" in keys:
                continue
            with contextlib.suppress(KeyWrongLastSequenceError):
                sent = time.monotonic()
                self.owned[k] = await self.kv.create(f"p.{k}", self._value())
                self.renewed[k] = sent
                gained.append(k)
        excess = sorted(self.owned)[share:] if len(self.owned) > share else []
        return gained, lost, excess

    async def release(self, k: int) -> None:
        """Give partition ``k`` back (nothing of it held any more): another worker may take it at once."""
        rev = self.owned.pop(k, None)
        self.renewed.pop(k, None)
        if rev is not None:
            with contextlib.suppress(Exception):  # not deleted: it expires after the lease
                await self.kv.delete(f"p.{k}", last=rev)

    async def release_all(self) -> None:
        for k in list(self.owned):
            await self.release(k)
        with contextlib.suppress(Exception):
            await self.kv.delete(f"w.{self.worker}")

    async def fence_get(self, path: bytes) -> Order | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.fence.get(fence_key(path))
        except KeyNotFoundError:  # also a deleted key
            return None
        try:
            epoch, oseq, part, sseq = json.loads(entry.value)
            return str(epoch), int(oseq), int(part), int(sseq)
        except (ValueError, TypeError):  # not ours (written by hand?): as if there were none
            return None

    async def fence_put(self, items: list[tuple[bytes, Order]]) -> None:
        """The orders of events the next stages applied; all stored when this returns (raises otherwise)."""
        latest = {fence_key(path): order for path, order in items}  # in order: the last one of a path wins
        await asyncio.gather(*(self.fence.put(key, json.dumps(list(order)).encode()) for key, order in latest.items()))
