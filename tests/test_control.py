"""A configuration change is never half-applied, whatever its caller does: cancelled at any
point of the change, disconnected by the dozen, or cut off by a shutdown; and a venue that
does not answer its instrument list is answered from a cached failure."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from e2e import running_feedd, wait_on_commits
from test_reconfig import settled, supervised_tasks

from feedd import config, control
from feedd.changes import ChangeQueue
from feedd.engine.supervisor import Supervisor, plans
from feedd.errors import ConfigError, FeeddError
from feedd.monitor.system import count_tasks
from feedd.service import Service, run_service
from feedd.web.app import GRACEFUL_TIMEOUT_S

BINANCE, OKX = "binance_futures", "okx_futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
VENUES = {BINANCE: SYMBOLS, OKX: SYMBOLS}


def assert_runs_as_file(service: Service, path: Path) -> None:
    """The running configuration, the exchanges that run and the file on disk agree."""
    on_disk = config.load(path).config
    assert service.state.controller.config == on_disk
    running = service.state.supervisor._running
    assert {name: r.plan for name, r in running.items()} == plans(on_disk)
    dead = [name for name, r in running.items() if r.done.is_set()]
    assert dead == [], f"said to run but stopped: {dead}"


class Trap:
    """Cancels the caller of a change the first time the change passes a given point."""

    def __init__(self) -> None:
        self.caller = trio.CancelScope()
        self.armed = False
        self.sprung = False
        #: set when the supervisor is done applying the change (returned or raised)
        self.applied = trio.Event()

    def spring(self) -> None:
        if self.armed and not self.sprung:
            self.sprung = True
            self.caller.cancel()

    async def cancel_caller_of(self, change: Callable[[], Awaitable[object]]) -> None:
        self.armed = True
        with trio.fail_after(20):
            with self.caller:
                await change()
            assert self.sprung and self.caller.cancelled_caught
            await self.applied.wait()


def set_trap(point: str, service: Service, monkeypatch: pytest.MonkeyPatch) -> Trap:
    trap = Trap()
    real_apply = Supervisor.apply

    async def apply(self: Supervisor, cfg: config.Config, *, restart_all: bool = False) -> Any:
        try:
            return await real_apply(self, cfg, restart_all=restart_all)
        finally:
            if trap.armed:
                trap.applied.set()

    monkeypatch.setattr(Supervisor, "apply", apply)
    if point == "before save":
        real_save = config.save

        def save(path: Path, cfg: config.Config) -> None:
            trio.from_thread.run_sync(trap.spring)
            real_save(path, cfg)

        monkeypatch.setattr(config, "save", save)
    else:
        # The supervisor tells its TaskCpu when an exchange's task starts and ends.
        cpu = service.state.supervisor._cpu
        assert cpu is not None
        if point == "between stop and start":
            real_unregister = cpu.unregister

            def unregister(task: trio.lowlevel.Task) -> None:
                real_unregister(task)
                trap.spring()  # an exchange stopped; none started yet

            monkeypatch.setattr(cpu, "unregister", unregister)
        else:
            real_register = cpu.register

            def register(task: trio.lowlevel.Task, group: str) -> None:
                real_register(task, group)
                trap.spring()  # inside the supervisor's nursery.start of an exchange

            monkeypatch.setattr(cpu, "register", register)
    return trap


@pytest.mark.parametrize("point", ["before save", "between stop and start", "during start"])
async def test_a_cancelled_caller_never_half_applies_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    async with running_feedd(tmp_path, VENUES, bootstrap_load=3) as (_sim, service, _client):
        controller = service.state.controller
        path = tmp_path / "config.json"
        with trio.fail_after(30):
            await wait_on_commits(service, lambda: all(settled(service, n) for n in VENUES))
        trap = set_trap(point, service, monkeypatch)
        if point == "before save":
            await trap.cancel_caller_of(lambda: controller.toggle(OKX, False))
            assert not config.load(path).config.exchanges[OKX].enabled
        else:
            await trap.cancel_caller_of(controller.restart)
        assert_runs_as_file(service, path)
        with trio.fail_after(30):
            await wait_on_commits(
                service, lambda: all(settled(service, n) for n in plans(controller.config))
            )
        # and the queue goes on with the next change
        enabled, applied = await controller.toggle(OKX, True)
        assert enabled and (applied.restarted == (OKX,)) == (point == "before save")
        assert_runs_as_file(service, path)


async def test_errors_of_a_change_reach_its_caller(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {BINANCE: SYMBOLS}) as (_sim, service, client):
        controller = service.state.controller
        path = tmp_path / "config.json"
        with pytest.raises(ConfigError, match="unknown exchange"):
            await controller.toggle("kraken_futures")
        with pytest.raises(ConfigError) as bad:
            await controller.set_symbols(BINANCE, ["btc-usdt"])
        assert bad.value.path == "symbols[0]"
        # raised inside the controller's task, answered to the caller
        good = path.read_bytes()
        data = json.loads(good)
        data["intervals"] = ["7m"]
        path.write_text(json.dumps(data))
        with pytest.raises(ConfigError) as invalid:
            await controller.restart()
        assert invalid.value.path.startswith("intervals")
        answer = await client.post("/restart", json={})
        assert answer.status_code == 400 and answer.json()["field"].startswith("intervals")
        path.write_bytes(good)
        assert (await controller.restart()).restarted == (BINANCE,)
        assert controller.pending == 0
        assert_runs_as_file(service, path)


async def test_shutdown_answers_the_change_in_progress_and_the_queued_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: dict[str, Any] = {}
    async with running_feedd(tmp_path, VENUES) as (_sim, service, client):
        controller = service.state.controller
        stuck = trio.Event()

        async def apply(self: Supervisor, cfg: config.Config, *, restart_all: bool = False) -> Any:
            stuck.set()
            await trio.sleep_forever()

        monkeypatch.setattr(Supervisor, "apply", apply)

        async def post(name: str, enabled: bool) -> None:
            body = {"exchange": OKX, "enabled": enabled}
            answers[name] = await client.post("/toggleExchange", json=body)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post, "in progress", False)
                await stuck.wait()
                nursery.start_soon(post, "queued", True)
                await wait_on_commits(service, lambda: controller.pending == 2)
                stopped_at = trio.current_time()
                service.stop.set()
    # running_feedd has returned: the service is down, not held up by the stuck change (the
    # web server would wait GRACEFUL_TIMEOUT_S for a request still running it)
    assert trio.current_time() - stopped_at < GRACEFUL_TIMEOUT_S
    assert {name: a.status_code for name, a in answers.items()} == {
        "in progress": 503,
        "queued": 503,
    }
    assert "change was interrupted" in answers["in progress"].json()["error"]
    assert "change was not made" in answers["queued"].json()["error"]
    # what the file holds is whole and valid: it runs at the next start
    config.load(tmp_path / "config.json")


async def next_commit(service: Service) -> None:
    with service.state.writer.open_commit_listener() as commits:
        await commits.receive()


def connections() -> int:
    """Connections feedd's web server is serving (trio.serve_listeners runs a task for each)."""

    def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    (web,) = (t for t in walk(root) if t.name.endswith("run_service.<locals>.run_web"))
    return sum(1 for t in walk(web) if t.name.endswith("._run_handler"))


async def test_fifty_clients_that_disconnect_mid_change_leave_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_feedd(tmp_path, VENUES, bootstrap_load=3) as (sim, service, client):
        controller = service.state.controller
        path = tmp_path / "config.json"
        assert (await client.get("/status")).status_code == 200  # the client's connection
        with trio.fail_after(30):
            await wait_on_commits(service, lambda: all(settled(service, n) for n in VENUES))
        await next_commit(service)  # the server is done with that request
        baseline = supervised_tasks(service), connections(), count_tasks()
        # Every change waits in its save until the clients have gone.
        # (a threading.Event: trio.from_thread.run would be cancelled with the caller)
        reached, release = trio.Event(), threading.Event()
        real_save = config.save
        saved: list[config.Config] = []

        def save(path: Path, cfg: config.Config) -> None:
            if not release.is_set():
                trio.from_thread.run_sync(reached.set)
                release.wait()
            real_save(path, cfg)
            saved.append(cfg)

        monkeypatch.setattr(config, "save", save)
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        body = json.dumps({"exchange": OKX}).encode()  # a flip
        request = (
            b"POST /toggleExchange HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        streams = []
        try:
            with trio.fail_after(20):
                try:
                    for _ in range(50):
                        stream = await trio.open_tcp_stream(host, int(port))
                        streams.append(stream)
                        await stream.send_all(request)
                    await reached.wait()
                finally:
                    for stream in streams:  # all at once, before any answer
                        await stream.aclose()
                # Gone, but for the one whose request may be the change waiting in its save.
                await wait_on_commits(service, lambda: connections() <= baseline[1] + 1)
                release.set()
                await wait_on_commits(
                    service, lambda: connections() == baseline[1] and controller.pending == 0
                )
        finally:
            release.set()
        assert saved and controller.pending == 0
        assert_runs_as_file(service, path)
        # back to OKX running, to count tasks and connections against the start
        await client.post("/toggleExchange", json={"exchange": OKX, "enabled": True})
        assert_runs_as_file(service, path)
        with trio.fail_after(30):
            await wait_on_commits(
                service,
                lambda: settled(service, OKX) and len(sim.venues[OKX].sessions) == 1,
            )
        assert len(sim.venues[BINANCE].sessions) == 1
        await next_commit(service)
        assert supervised_tasks(service) == baseline[0]
        assert connections() == baseline[1]
        # every trio task of the run (what /status samples as system.tasks)
        assert count_tasks() == baseline[2]


@asynccontextmanager
async def black_hole() -> AsyncIterator[tuple[str, list[trio.SocketStream]]]:
    """A loopback HTTP 'venue' that accepts connections and never answers."""
    accepted: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}", accepted
        nursery.cancel_scope.cancel()


async def test_an_unreachable_venue_listing_is_answered_from_a_cached_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "LISTING_TIMEOUT_S", 1.0)
    async with black_hole() as (url, accepted):
        cfg = config.parse(
            {"exchanges": {OKX: {"enabled": False, "rest_url": url}}, "port": 0}
        ).config
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, tmp_path / "ohlcv.db")
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                start = trio.current_time()
                first = await client.get(f"/exchangeSymbols/{OKX}")
                took = trio.current_time() - start
                assert first.status_code == 503, first.text
                assert "instrument list" in first.json()["error"]
                assert took >= 1.0 and accepted
                tried = len(accepted)
                # the next requests take the cached failure: fast, and the venue is not asked
                start = trio.current_time()
                for _ in range(5):
                    again = await client.get(f"/exchangeSymbols/{OKX}")
                    assert again.status_code == 503
                assert trio.current_time() - start < 1.0
                assert len(accepted) == tried
                assert "asked again in" in again.json()["error"]
                # once the failure is stale, the venue is asked again
                failures = service.state.controller._failures
                failures[OKX] = attrs.evolve(failures[OKX], until=trio.current_time())
                stale = await client.get(f"/exchangeSymbols/{OKX}")
                assert stale.status_code == 503 and len(accepted) > tried
            service.stop.set()


async def test_the_queue_runs_changes_in_order_and_drops_those_never_handed_over() -> None:
    queue = ChangeQueue(size=2)
    made: list[int] = []

    async def change(n: int) -> int:
        made.append(n)
        await trio.lowlevel.checkpoint()
        return n

    answers: list[int] = []

    async def submit(n: int) -> None:
        answers.append(await queue.submit(functools.partial(change, n)))

    async with trio.open_nursery() as nursery:
        for n in (1, 2):
            nursery.start_soon(submit, n)
            await trio.testing.wait_all_tasks_blocked()
        assert queue.pending == 2
        with trio.CancelScope() as gone:
            gone.cancel()
            await submit(3)  # the queue is full: cancelled while waiting for room
        nursery.start_soon(submit, 4)
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(queue.run)
        await trio.testing.wait_all_tasks_blocked()
        assert made == answers == [1, 2, 4] and queue.pending == 0
        nursery.cancel_scope.cancel()
    # the queue's task is gone: a change now is refused, not left waiting
    with pytest.raises(FeeddError, match="not made"):
        await queue.submit(functools.partial(change, 5))
