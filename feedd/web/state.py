"""What the web app can reach: the running config, the store, the writer and the supervisor."""

from __future__ import annotations

import time

import attrs
import trio

from feedd.config import Config
from feedd.engine.supervisor import Supervisor
from feedd.store.reader import Reader
from feedd.store.writer import Writer


@attrs.define(eq=False)
class AppState:
    config: Config
    reader: Reader
    writer: Writer
    supervisor: Supervisor
    started_at: float = attrs.field(factory=time.time)
    #: set before the server shuts down so long-lived handlers close cleanly themselves
    closing: trio.Event = attrs.field(factory=trio.Event)
