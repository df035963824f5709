"""The web server's connections (issue #12.A): closed after ``Connection: close`` and after the
keep-alive timeout, capped per client address and overall at accept, and a feedd under a low
descriptor limit that keeps ingesting and answering while twice its cap of idle connections
is held open."""

from __future__ import annotations

import functools
import os
import re
import resource
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
import trio
from chaos.harness import FeeddProcess, config_doc, crash_lines, poll_until, write_config
from quart_trio import QuartTrio

from feedd.monitor.system import Monitor
from feedd.monitor.taskcpu import TaskCpu
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.sqlite import SqliteBackend
from feedd.web.app import serve_web
from feedd.web.peer import MAX_CONNECTIONS, RESERVED_FDS, Connections, caps_for

#: generous: each of these happens within a second when it happens at all
WITHIN_S = 10
LONG_KEEP_ALIVE_S = 3600.0


def tiny_app() -> tuple[QuartTrio, trio.Event]:
    """An app with a quick route and one that holds its request until released."""
    app = QuartTrio("connections-test")
    release = trio.Event()

    @app.get("/")
    async def quick() -> str:
        return "ok"

    @app.get("/hold")
    async def hold() -> str:
        await release.wait()
        return "released"

    return app, release


@asynccontextmanager
async def served(
    app: QuartTrio, connections: Connections, keep_alive_s: float = LONG_KEEP_ALIVE_S
) -> AsyncIterator[int]:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(
            functools.partial(
                serve_web,
                app,
                "127.0.0.1",
                0,
                stop,
                connections=connections,
                keep_alive_s=keep_alive_s,
            )
        )
        try:
            yield int(url.rsplit(":", 1)[1])
        finally:
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + WITHIN_S


async def connect(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    """A raw client socket from ``source`` (any 127.x address works on Linux loopback)."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    data = b""
    with trio.fail_after(WITHIN_S):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset is a close too
                return data
            if not chunk:
                return data
            data += chunk


async def read_response(stream: trio.SocketStream) -> bytes:
    """One whole response (headers and a short body) on a connection left open."""
    data = b""
    with trio.fail_after(WITHIN_S):
        while b"\r\n\r\n" not in data or not data.endswith((b"ok", b"released")):
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
    return data


def request(path: str = "/", *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def test_connection_close_is_honoured() -> None:
    """After an answer to a request that says ``Connection: close`` the server closes, long
    before any keep-alive timeout (hypercorn 0.18 under quart-trio never did)."""
    app, _ = tiny_app()
    connections = Connections(total=8, per_client=8)
    async with served(app, connections) as port:
        stream = await connect(port)
        await stream.send_all(request("/", "Connection: close"))
        answer = await read_to_end(stream)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        with trio.fail_after(WITHIN_S):
            await connections.wait_until(lambda c: c.open == 0)


async def test_idle_keep_alive_connections_are_closed_after_the_timeout() -> None:
    """A keep-alive connection left idle after an answer, and one that never sends a request,
    are both closed once the keep-alive timeout passes."""
    app, _ = tiny_app()
    connections = Connections(total=8, per_client=8)
    async with served(app, connections, keep_alive_s=0.5) as port:
        used = await connect(port)
        await used.send_all(request("/"))
        assert (await read_response(used)).startswith(b"HTTP/1.1 200")
        silent = await connect(port)
        assert await read_to_end(used) == b""
        assert await read_to_end(silent) == b""


async def test_headers_sent_slowly_are_cut_off_at_the_keep_alive_timeout() -> None:
    app, _ = tiny_app()
    connections = Connections(total=8, per_client=8)
    async with served(app, connections, keep_alive_s=0.5) as port:
        stream = await connect(port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert await read_to_end(stream) == b""


async def test_an_address_at_its_cap_is_closed_before_a_byte_is_parsed() -> None:
    app, release = tiny_app()
    connections = Connections(total=8, per_client=2)
    async with served(app, connections) as port:
        first, second = await connect(port), await connect(port)
        for stream in (first, second):  # both answered once, now idle
            await stream.send_all(request("/"))
            await read_response(stream)
        refused = await connect(port)
        await refused.send_all(request("/"))
        assert await read_to_end(refused) == b""  # closed unanswered
        assert connections.refused == 1 and connections.evicted == 0
        # Another address still gets in, and the address's own connections still work.
        other = await connect(port, "127.0.0.2")
        await other.send_all(request("/"))
        assert (await read_response(other)).startswith(b"HTTP/1.1 200")
        await first.send_all(request("/hold"))
        release.set()
        assert (await read_response(first)).endswith(b"released")


async def test_the_total_cap_evicts_the_oldest_idle_connection_never_a_busy_one() -> None:
    app, release = tiny_app()
    connections = Connections(total=3, per_client=3)
    async with served(app, connections) as port:
        busy, idle = await connect(port, "127.0.0.3"), await connect(port, "127.0.0.4")
        newer = await connect(port, "127.0.0.4")
        await busy.send_all(request("/hold"))
        for stream in (idle, newer):
            await stream.send_all(request("/"))
            await read_response(stream)
        with trio.fail_after(WITHIN_S):
            await connections.wait_until(lambda c: c.open == 3 and c.busy == 1)
        newcomer = await connect(port, "127.0.0.5")
        await newcomer.send_all(request("/"))
        assert (await read_response(newcomer)).startswith(b"HTTP/1.1 200")
        assert await read_to_end(idle) == b""  # the oldest idle one made room
        assert connections.evicted == 1
        # Now two idle (newer, newcomer) and one busy: evict again, then nothing is idle.
        await newer.send_all(request("/hold"))
        await newcomer.send_all(request("/hold"))
        with trio.fail_after(WITHIN_S):
            await connections.wait_until(lambda c: c.open == c.busy == 3)
        refused = await connect(port, "127.0.0.6")
        await refused.send_all(request("/"))
        assert await read_to_end(refused) == b""
        assert connections.refused == 1
        release.set()
        for stream in (busy, newer, newcomer):
            assert (await read_response(stream)).endswith(b"released")


@contextmanager
def no_descriptor_left() -> Iterator[None]:
    """Lower this process's descriptor limit to the lowest free descriptor, for a while."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_running_out_of_descriptors_degrades(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With no descriptor left, accept() fails and psutil cannot read /proc: the server says so
    once and waits, the monitor keeps its last figures; both recover when descriptors free up
    (before, the monitor raised EMFILE and took feedd down)."""
    app, _ = tiny_app()
    connections = Connections(total=8, per_client=8)
    monitor = Monitor(SqliteBackend(tmp_path / "ohlcv.db"), dict, TaskCpu(), time.time())
    figures = monitor.system
    async with served(app, connections) as port:
        sock = trio.socket.socket()  # made while there is room
        with no_descriptor_left():
            monitor.sample()
            monitor.sample()
            await sock.connect(("127.0.0.1", port))  # the kernel's backlog takes it
            with trio.fail_after(WITHIN_S):
                await connections.wait_until(lambda c: c.accept_errors >= 2)
        stream = trio.SocketStream(sock)
        await stream.send_all(request("/"))
        assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
    assert monitor.system is figures and monitor.sample_errors == 2
    monitor.sample()
    assert monitor.system is not figures
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if m.startswith("cannot accept")] != []
    assert len([m for m in messages if m.startswith("cannot accept")]) == 1
    assert len([m for m in messages if m.startswith("cannot read system figures")]) == 1
    assert any(m.startswith("accepting connections again") for m in messages)
    assert not [r for r in caplog.records if r.name == "trio.serve_listeners"]


def test_caps_follow_the_descriptor_limit() -> None:
    assert caps_for(1024) == (768, 384)
    assert caps_for(20000) == (2048, 1024)
    assert caps_for(100) == (16, 8)  # never below a usable minimum


FD_LIMIT = 512


def limit_descriptors() -> None:
    """In feedd's child process, before it starts: systemd's kind of limit, only lower."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


async def test_idle_connections_cannot_exhaust_descriptors(tmp_path: Path) -> None:
    """feedd limited to 512 descriptors (so capped at 256 connections, 128 per address) while
    four addresses hold twice that many idle keep-alive connections open: ingest goes on
    (candles keep being committed), /health answers a new client, nothing crashes."""
    total, per_client = caps_for(FD_LIMIT)
    assert (total, per_client) == (256, 128)
    settings = SimSettings(venues=("binance_futures",), update_interval_s=0.25)
    async with open_simulator(settings) as sim:
        doc = config_doc(sim, {"binance_futures": ["BTCUSDT", "ETHUSDT"]}, bootstrap_load=5)
        config = write_config(tmp_path / "config.json", doc)
        feedd = FeeddProcess(config, tmp_path / "feedd.log", preexec_fn=limit_descriptors)
        try:
            await feedd.start()
            port = int(feedd.url.rsplit(":", 1)[1])
            held: list[trio.SocketStream] = []
            async with httpx.AsyncClient(base_url=feedd.url) as api:

                async def committed() -> int:
                    return int((await api.get("/status")).json()["writer"]["committed"])

                before = await committed()
                limiter = trio.CapacityLimiter(64)

                async def hold(n: int) -> None:
                    async with limiter:
                        stream = await connect(port, f"127.0.0.{2 + n % 4}")
                        await stream.send_all(request("/health"))
                        held.append(stream)

                # All at once: within the 5 s keep-alive timeout that would close them.
                async with trio.open_nursery() as nursery:
                    for n in range(2 * total):
                        nursery.start_soon(hold, n)
                values: dict[str, float] = {}

                async def pressed() -> bool:
                    # Held: the kernel queues connections until feedd accepts them.
                    metrics = (await api.get("/metrics")).text
                    for name in ("", "_evicted_total", "_refused_total"):
                        found = re.search(rf"^feedd_web_connections{name} (\S+)$", metrics, re.M)
                        values[name] = float(found[1]) if found else -1.0
                    return values["_evicted_total"] + values["_refused_total"] >= total // 2

                await poll_until(pressed, 30, "feedd to feel the pressure")
                # A client from an address of its own, on a fresh connection.
                transport = httpx.AsyncHTTPTransport(local_address="127.0.0.9")
                async with httpx.AsyncClient(base_url=feedd.url, transport=transport) as fresh:
                    health = await fresh.get("/health")
                    assert health.status_code == 200, health.text
                status = (await api.get("/status")).json()
                assert status["system"]["open_fds"] < FD_LIMIT

                async def committed_more() -> bool:
                    return await committed() > before

                await poll_until(committed_more, 30, "candles committed under the attack")
            assert values[""] <= total + total // 16, values  # the cap and its slack
            assert feedd.alive, "feedd exited by itself"
            for stream in held:
                await stream.aclose()
            assert await feedd.stop() == 0
        finally:
            await feedd.aclose()
    log = feedd.log_text()
    assert crash_lines(log) == [], log[-3000:]
    assert "Too many open files" not in log


def test_the_service_unit_gives_the_full_caps() -> None:
    """scripts/feedd.service sets LimitNOFILE on purpose: enough for the full connection caps
    plus the descriptors kept for the rest of feedd."""
    unit = (Path(__file__).parents[1] / "scripts" / "feedd.service").read_text()
    values = re.findall(r"^LimitNOFILE=(\d+)$", unit, re.M)
    assert len(values) == 1, "one LimitNOFILE= line"
    assert caps_for(int(values[0]))[0] == MAX_CONNECTIONS
    assert int(values[0]) >= MAX_CONNECTIONS + RESERVED_FDS
