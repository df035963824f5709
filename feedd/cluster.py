"""Heartbeats: every node saves its status in the store every few seconds and reads back
every node's, which /status and the dashboard show as the cluster (stale ones marked).

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
from feedd.store.nodes import NodeRecord

log = logging.getLogger("feedd.cluster")

#: seconds between heartbeats
HEARTBEAT_S = 5.0
#: a node whose last heartbeat is older than this many intervals is marked stale
STALE_BEATS = 3


class NodeWriter(Protocol):
    async def record_node(self, node_id: str, doc: str, at_ms: int) -> int: ...


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
            stamp = await self._writer.record_node(
                self.identity.node_id, orjson.dumps(doc).decode(), self._clock()
            )
            self._stamp = (stamp, self._monotonic())
            self.nodes = await self._reader.nodes()
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
