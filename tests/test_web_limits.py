"""Admission of HTTP requests (feedd.web.limits), coalesced /ws sends, and connections closed
after a refusal that may leave a body unread."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
import trio.testing
from e2e import running_feedd
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from feedd.web.limits import BODY_TIMEOUT_S, RequestLimits
from feedd.web.live import coalesce


class HeldApp:
    """An ASGI app whose requests stay in progress until released, noting who got in."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.release = trio.Event()
        self.changed = trio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.entered.append(scope["path"])
        self.changed.set()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def wait_entered(self, count: int) -> None:
        while len(self.entered) < count:
            self.changed = trio.Event()
            await self.changed.wait()


def scope(path: str, client: str = "10.0.0.1", kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "path": path, "headers": [], "client": (client, 40000)}


async def call(app: RequestLimits, request: dict[str, Any], statuses: list[int]) -> None:
    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(request, receive, send)  # type: ignore[arg-type]


async def test_requests_over_the_cap_wait_their_turn_in_order() -> None:
    held = HeldApp()
    limits = RequestLimits(held, per_client=1, overall=8, waiting=8)
    statuses: list[int] = []
    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(call, limits, scope(f"/{n}"), statuses)
            await trio.testing.wait_all_tasks_blocked()
        assert held.entered == ["/0"]  # the others wait, unrefused
        held.release.set()
    assert held.entered == ["/0", "/1", "/2"]
    assert statuses == [200, 200, 200]
    assert limits.addresses == 0  # nothing kept for an address with nothing in progress


async def test_the_overall_cap_holds_across_addresses() -> None:
    held = HeldApp()
    limits = RequestLimits(held, per_client=2, overall=2, waiting=8)
    statuses: list[int] = []
    async with trio.open_nursery() as nursery:
        for path, client in (("/a1", "10.0.0.1"), ("/a2", "10.0.0.1"), ("/b", "10.0.0.2")):
            nursery.start_soon(call, limits, scope(path, client), statuses)
            await trio.testing.wait_all_tasks_blocked()
        assert held.entered == ["/a1", "/a2"]
        assert limits.addresses == 2
        held.release.set()
    assert held.entered == ["/a1", "/a2", "/b"]


async def test_a_slow_download_does_not_hold_a_slot() -> None:
    """The slot bounds a handler's work: once its answer starts, the next request gets in
    even while the first client is still taking the body."""
    downloaded = trio.Event()
    entered: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def slow_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await downloaded.wait()  # a client that reads slowly

    limits = RequestLimits(app, per_client=1, overall=1, waiting=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limits, scope("/big"), None, slow_send)
        await trio.testing.wait_all_tasks_blocked()
        statuses: list[int] = []
        with trio.fail_after(5):  # with the slot held it would wait for the download
            await call(limits, scope("/next"), statuses)
        assert entered == ["/big", "/next"] and statuses == [200]
        downloaded.set()
    assert limits.addresses == 0


async def test_websockets_are_not_counted() -> None:
    held = HeldApp()
    limits = RequestLimits(held, per_client=1, overall=1, waiting=0)
    statuses: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, limits, scope("/busy"), statuses)
        await held.wait_entered(1)
        nursery.start_soon(call, limits, scope("/ws", kind="websocket"), statuses)
        await held.wait_entered(2)
        held.release.set()
    assert held.entered == ["/busy", "/ws"]


async def test_a_client_with_too_many_waiting_gets_429_over_http() -> None:
    """Real sockets: one request in progress, none may wait, so the next is refused at once
    with Retry-After; the first still completes and the address is admitted again after."""
    held = HeldApp()
    limits = RequestLimits(held, per_client=1, overall=4, waiting=0)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            functools.partial(serve, limits, config, shutdown_trigger=stop.wait)
        )
        async with httpx.AsyncClient(base_url=binds[0]) as client:
            first: list[httpx.Response] = []

            async def slow() -> None:
                first.append(await client.get("/first"))

            async with trio.open_nursery() as inner:
                inner.start_soon(slow)
                await held.wait_entered(1)
                refused = await client.get("/second")
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "1"
                assert "connection" not in refused.headers  # no body left unread: keep-alive
                assert "too many requests" in orjson.loads(refused.content)["error"]
                refused_post = await client.post("/third", content=b"{}")
                assert refused_post.status_code == 429
                assert refused_post.headers["connection"] == "close"
                held.release.set()
            assert first[0].status_code == 200
            assert (await client.get("/again")).status_code == 200
        assert held.entered == ["/first", "/again"]
        assert limits.refused == 2
        stop.set()


async def test_refusals_of_requests_with_a_body_close_the_connection(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {"binance_futures": ["BTCUSDT"]}) as (_sim, _svc, client):
        unread = await client.post(
            "/deleteDatabase", content=b"confirm", headers={"content-type": "text/plain"}
        )
        assert unread.status_code == 415
        assert unread.headers["connection"] == "close"
        bad = await client.post("/deleteDatabase", json={"confirm": "no"})
        assert bad.status_code == 400 and bad.headers["connection"] == "close"
        missing = await client.get("/nowhere")
        assert missing.status_code == 404 and "connection" not in missing.headers
        ok = await client.get("/health")
        assert ok.status_code == 200 and "connection" not in ok.headers


def candles(*names: str) -> str:
    return orjson.dumps({"type": "candles", "data": [{"n": n} for n in names]}).decode()


def test_coalesce_merges_runs_of_candle_messages_in_order() -> None:
    status = orjson.dumps({"type": "status", "data": {}}).decode()
    merged = coalesce([candles("a"), candles("b", "c"), status, candles("d")])
    assert [orjson.loads(m) for m in merged] == [
        {"type": "candles", "data": [{"n": "a"}, {"n": "b"}, {"n": "c"}]},
        {"type": "status", "data": {}},
        {"type": "candles", "data": [{"n": "d"}]},
    ]


def test_coalesce_keeps_merged_messages_under_the_limit() -> None:
    parts = [candles(str(n)) for n in range(10)]
    merged = coalesce(parts, limit=len(parts[0]) * 3)
    assert [len(orjson.loads(m)["data"]) for m in merged] == [3, 3, 3, 1]
    assert [d["n"] for m in merged for d in orjson.loads(m)["data"]] == [str(n) for n in range(10)]


async def test_a_slow_body_is_refused_408_without_holding_a_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The body is received before the request asks for a slot: a client sending its body
    slowly holds no slot while it does, and past the deadline it is answered 408."""
    held = HeldApp()
    limits = RequestLimits(held, per_client=1, overall=1, waiting=8, body_timeout=2.0)
    first_part = trio.Event()
    statuses: list[int] = []
    sent: list[dict[str, Any]] = []

    async def trickle() -> dict[str, Any]:
        if not first_part.is_set():
            first_part.set()
            return {"type": "http.request", "body": b"{", "more_body": True}
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    slow = {**scope("/slow"), "headers": [(b"content-length", b"100")]}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limits, slow, trickle, send)
        await first_part.wait()
        nursery.start_soon(call, limits, scope("/quick", "10.0.0.2"), statuses)
        await held.wait_entered(1)
        assert held.entered == ["/quick"]  # the slow body holds no slot
        held.release.set()
    assert statuses == [200]
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert held.entered == ["/quick"] and limits.slow_bodies == 1


async def test_a_body_over_the_limit_is_refused_413_unread() -> None:
    held = HeldApp()
    limits = RequestLimits(held, max_body=10)
    statuses: list[int] = []
    big = {**scope("/big"), "headers": [(b"content-length", b"11")]}
    await call(limits, big, statuses)  # its receive never returns: nothing was read
    assert statuses == [413] and held.entered == [] and limits.big_bodies == 1


async def test_the_app_gets_the_whole_body_at_once() -> None:
    got: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    parts = iter([b'{"a"', b": 1}"])

    async def receive() -> dict[str, Any]:
        body = next(parts)
        return {"type": "http.request", "body": body, "more_body": body != b": 1}"}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    chunked = {**scope("/post"), "headers": [(b"transfer-encoding", b"chunked")]}
    await RequestLimits(app)(chunked, receive, send)  # type: ignore[arg-type]
    assert got == [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}]
    assert statuses == [200]


async def slow_post(port: int, source: str) -> trio.SocketStream:
    """A POST announcing a 100-byte body that sends one byte of it."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        b"POST /deleteDatabase HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    return stream


async def test_slow_bodies_from_several_addresses_do_not_block_the_api(tmp_path: Path) -> None:
    """Eight POSTs from four addresses that send one byte of their bodies: /health still
    answers at once (before, they held every slot for Quart's 60 s body timeout), and past
    the body deadline each slow client is answered 408 and loses its connection."""
    async with running_feedd(tmp_path, {"binance_futures": ["BTCUSDT"]}) as (_sim, svc, client):
        port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
        slow = [await slow_post(port, f"127.0.0.{2 + n % 4}") for n in range(8)]
        with trio.fail_after(3):
            await svc.state.connections.wait_until(lambda c: c.busy >= 8)
        with trio.fail_after(5):  # generous: it takes milliseconds
            assert (await client.get("/health")).status_code == 200
        with trio.fail_after(BODY_TIMEOUT_S * 3):
            for stream in slow:
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 408"), answer
                assert b"connection: close" in answer.lower()


async def test_bodies_held_at_once_are_bounded() -> None:
    """Bodies are read before the token is checked, so what they may hold in all is capped:
    past the budget a body is refused 503 with Retry-After; the budget is given back when
    each request ends."""
    held = HeldApp()
    limits = RequestLimits(held, per_client=4, overall=4, buffer_budget=10)

    def body_of(size: int) -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"x" * size, "more_body": False}

        return receive

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    posted = {**scope("/post"), "headers": [(b"content-length", b"6")]}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limits, posted, body_of(6), send)
        await held.wait_entered(1)
        assert limits.buffered == 6
        await limits(posted, body_of(6), send)  # type: ignore[arg-type]
        assert statuses == [503]
        held.release.set()
    assert statuses == [503, 200] and limits.buffered == 0
    await limits(posted, body_of(6), send)  # type: ignore[arg-type]
    assert statuses == [503, 200, 200] and limits.buffered == 0
