"""Heartbeats: every node saves its status in the store every few seconds and reads back
every node's, which /status and the dashboard show as the cluster (stale ones marked), and
learns from them of wipes of the shared store by other nodes (``StoreEpochs``).

The list is read once per heartbeat, not per request: /status stays free of queries. Ages
are measured on the store's clock (a heartbeat's stamp, and the store's time at this node's
last beat plus the monotonic time since): a node whose wall clock is off looks neither dead
nor alive wrongly.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import orjson
import trio

from feedd import __version__
from feedd.errors import StoreError
from feedd.store.backend import ReadStore
from feedd.store.nodes import WIPE_ID, NodeRecord

log = logging.getLogger("feedd.cluster")

#: seconds between heartbeats
HEARTBEAT_S = 5.0
#: a node whose last heartbeat is older than this many intervals is marked stale
STALE_BEATS = 3


class NodeWriter(Protocol):
    async def record_node(self, node_id: str, doc: str, at_ms: int) -> int: ...


class Generations(Protocol):
    """The writer's count of stores made anew (feedd/engine/backfill.py's StoreGenerations),
    and of its own wipes."""

    @property
    def generation(self) -> int: ...

    @property
    def wipes(self) -> int: ...

    async def wait_recreated(self, seen: int) -> int: ...


class StoreEpochs:
    """How often the store lost its history: made anew under the writer (its file deleted),
    plus wiped by another node (POST /deleteDatabase there), as the heartbeats tell. The
    engine bootstraps every stream again at each (its ``StoreGenerations``), the job manager
    forgets its jobs at each wipe: nothing here goes on believing rows exist."""

    def __init__(self, writer: Generations) -> None:
        self._writer = writer
        #: wipes by other nodes seen
        self.wipes = 0
        self._wiped = trio.Event()

    @property
    def generation(self) -> int:
        return self._writer.generation + self.wipes

    @property
    def emptied(self) -> int:
        """Times the store lost its rows: wiped here or elsewhere, or made anew."""
        return self._writer.wipes + self.generation

    def wiped(self) -> None:
        self.wipes += 1
        wiped, self._wiped = self._wiped, trio.Event()
        wiped.set()

    async def wait_wiped(self, seen: int) -> int:
        """Return the count of wipes once it is past ``seen``."""
        while self.wipes <= seen:
            await self._wiped.wait()
        return self.wipes

    async def wait_recreated(self, seen: int) -> int:
        """Return the generation once it is past ``seen``."""
        while self.generation <= seen:
            async with trio.open_nursery() as nursery:

                async def recreated() -> None:
                    await self._writer.wait_recreated(self._writer.generation)
                    nursery.cancel_scope.cancel()

                async def wiped() -> None:
                    await self.wait_wiped(self.wipes)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(recreated)
                nursery.start_soon(wiped)
        return self.generation


def wall_ms() -> int:
    return int(time.time() * 1000)


@attrs.frozen
class NodeIdentity:
    """Who this process is: a new id at every start, so a restarted node is a new row."""

    node_id: str
    role: str
    host: str
    pid: int
    #: epoch ms
    started_at: int
    version: str = __version__

    @classmethod
    def of_this_process(cls, role: str, started_at: float) -> NodeIdentity:
        return cls(
            node_id=uuid.uuid4().hex,
            role=role,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=int(started_at * 1000),
        )


class Cluster:
    """This node's heartbeat task and the latest list of every node."""

    def __init__(
        self,
        identity: NodeIdentity,
        writer: NodeWriter,
        reader: ReadStore,
        status: Callable[[], dict[str, Any]],
        *,
        interval_s: float = HEARTBEAT_S,
        clock: Callable[[], int] = wall_ms,
        monotonic: Callable[[], float] = trio.current_time,
        epochs: StoreEpochs | None = None,
    ) -> None:
        self.identity = identity
        self.interval_s = interval_s
        self._writer = writer
        self._reader = reader
        self._status = status
        #: this node's wall clock: a heartbeat's stamp only where the store has no clock
        #: of its own (SQLite, on this machine)
        self._clock = clock
        self._monotonic = monotonic
        #: the store's clock at this node's last saved heartbeat, and ``monotonic()`` then
        self._stamp: tuple[int, float] | None = None
        #: every node's latest heartbeat, as last read
        self.nodes: list[NodeRecord] = []
        #: why the last heartbeat could not be saved or read (None: it was)
        self.last_error: str | None = None
        #: set (and replaced) after every heartbeat attempt
        self._beaten = trio.Event()
        #: told of wipes by other nodes
        self._epochs = epochs
        #: the wipe token last seen in the store (None: none there; unset before the first read)
        self._wipe: str | None = None
        self._wipe_read = False
        #: tokens of wipes made here, and one not saved yet (saved at the next heartbeat)
        self._own_wipes: set[str] = set()
        self._unsaved_wipe: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat until cancelled; the first heartbeat is attempted before reporting started."""
        await self.beat()
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.beat()

    async def beat(self, state: str = "running") -> None:
        """Save this node's status, then read every node's. A store that fails is logged
        (once per new error) and tried again at the next beat: the node looks stale meanwhile,
        which is the truth."""
        doc = {**attrs.asdict(self.identity), "state": state, **self._status()}
        del doc["node_id"]
        try:
            if self._unsaved_wipe is not None:
                await self._save_wipe(self._unsaved_wipe)
            stamp = await self._writer.record_node(
                self.identity.node_id, orjson.dumps(doc).decode(), self._clock()
            )
            self._stamp = (stamp, self._monotonic())
            self._take_nodes(await self._reader.nodes())
        except StoreError as exc:
            if str(exc) != self.last_error:
                log.warning("heartbeat not saved: %s", exc)
            self.last_error = str(exc)
        else:
            if self.last_error is not None:
                log.info("heartbeats saved again")
            self.last_error = None
        beaten, self._beaten = self._beaten, trio.Event()
        beaten.set()

    def _take_nodes(self, records: list[NodeRecord]) -> None:
        """Keep the nodes; a new wipe token (one this node did not write) is a wipe by
        another node. A token gone (rows silent for a day are deleted) is no news."""
        self.nodes = [r for r in records if r.node_id != WIPE_ID]
        token = next((_wipe_token(r.doc) for r in records if r.node_id == WIPE_ID), None)
        if not self._wipe_read:
            self._wipe_read = True
            self._wipe = token
            return
        if token is None or token == self._wipe:
            return
        self._wipe = token
        if token in self._own_wipes:
            return
        log.warning("the store was wiped by another node: bootstrapping again, jobs forgotten")
        if self._epochs is not None:
            self._epochs.wiped()

    async def announce_wipe(self) -> None:
        """Tell the other nodes that this one just wiped the store (through a new wipe
        token); if the store fails now, the next heartbeats try again."""
        token = uuid.uuid4().hex
        self._own_wipes.add(token)
        self._unsaved_wipe = token
        try:
            await self._save_wipe(token)
        except StoreError as exc:
            log.warning("wipe not announced to the other nodes yet: %s", exc)

    async def _save_wipe(self, token: str) -> None:
        await self._writer.record_node(
            WIPE_ID, orjson.dumps({"wipe": token}).decode(), self._clock()
        )
        if self._unsaved_wipe == token:
            self._unsaved_wipe = None

    async def wait_beat(self) -> None:
        """Return after the next heartbeat attempt."""
        await self._beaten.wait()

    def store_now(self) -> int:
        """The store's clock now: its stamp of this node's last heartbeat plus the time since
        on the monotonic clock (this node's wall clock only before any heartbeat was saved)."""
        if self._stamp is None:
            return self._clock()
        stamp, at = self._stamp
        return stamp + int((self._monotonic() - at) * 1000)

    def document(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Every node for /status: its saved status plus when it was heard and whether it is
        stale (a stopped node is not stale: it said goodbye). ``now_ms`` is on the store's
        clock (``store_now()`` when not given)."""
        now = self.store_now() if now_ms is None else now_ms
        limit_ms = STALE_BEATS * self.interval_s * 1000
        out = []
        for record in self.nodes:
            try:
                doc = orjson.loads(record.doc)
            except orjson.JSONDecodeError:
                doc = {}
            if not isinstance(doc, dict):
                doc = {}
            # One clock stamps every heartbeat; the monotonic part of ``now`` may lag a beat
            # saved by another node a moment ago by a few milliseconds.
            age_ms = max(0, now - record.at_ms)
            out.append(
                {
                    "node_id": record.node_id,
                    **doc,
                    "self": record.node_id == self.identity.node_id,
                    "last_heartbeat": record.at_ms,
                    "age_s": round(age_ms / 1000, 1),
                    "stale": doc.get("state") != "stopped" and age_ms > limit_ms,
                }
            )
        return out


def _wipe_token(doc: str) -> str | None:
    try:
        token = orjson.loads(doc).get("wipe")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return token if isinstance(token, str) else None
