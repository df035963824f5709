"""What the web app can reach: control, store, writer, supervisor, monitor and live hub."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import attrs
import trio
from quart import current_app

from feedd.cluster import Cluster
from feedd.config import Config
from feedd.control import Controller
from feedd.engine.supervisor import Supervisor
from feedd.jobs.manager import JobManager
from feedd.monitor.logring import LogRing
from feedd.monitor.system import Monitor
from feedd.store.backend import ReadStore
from feedd.store.writer import Writer
from feedd.web.live import LiveHub
from feedd.web.peer import Connections

if TYPE_CHECKING:
    # Imported where publishing starts (feedd/service.py): nats-py only when configured.
    from feedd.publish.publisher import Publisher


@attrs.define(eq=False)
class AppState:
    controller: Controller
    reader: ReadStore
    writer: Writer
    supervisor: Supervisor
    monitor: Monitor
    logs: LogRing
    hub: LiveHub
    started_at: float = attrs.field(factory=time.time)
    #: backfill jobs (None in apps built without them, as some tests do)
    jobs: JobManager | None = None
    #: this node's heartbeats and every node's latest (None in apps built without them)
    cluster: Cluster | None = None
    #: set before the server shuts down so long-lived handlers close cleanly themselves
    closing: trio.Event = attrs.field(factory=trio.Event)
    #: the web server's open connections (caps, and cutting one off)
    connections: Connections = attrs.field(factory=Connections)
    #: live candles to NATS (None: publish.nats not configured)
    publisher: Publisher | None = None

    @property
    def config(self) -> Config:
        """The configuration running now (changes with every applied change)."""
        return self.controller.config

    @property
    def security(self) -> Config:
        """The configuration the process started with: host, token and allowed names are
        read once, so a config change cannot lock the operator out mid-session."""
        return self.controller.started_with


def current_state() -> AppState:
    """The state of the app serving the current request."""
    return cast(AppState, current_app.config["FEEDD_STATE"])
