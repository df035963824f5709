"""Ingest benchmark: feedd against a bare reference reader, on the same simulator, in one run.

Each measurement starts a fresh simulator process (``python -m feedd.sim --bench-closed``: every
frame is a new closed candle, so every update is a new row) and runs one of:

- **reader**: the bare reference reader, in a process of its own: the fastest WebSocket client
  installed (websockets' trio client if importable, else trio-websocket) plus a typed msgspec
  decode of each frame, storing nothing. It counts kline frames decoded.
- **feedd**: the service in a process of its own, started for this run alone: WebSocket,
  parse, writer thread, SQLite commit, /ws. ``updates`` are candles the sessions handed to the
  writer (every kline frame accepted), ``rows`` are rows committed (equal to updates here,
  since no two frames share a key). ``peak_rss_mb`` is that process's (feedd plus the
  benchmark's bookkeeping): run after run in one process, the heap kept what earlier runs
  left, and the figure climbed from 70 to 96 MB over six runs.

at full load (simulator unpaced: it sends as fast as the client reads) and at a fixed rate
(default 2,000 updates/s). CPU is the process's user + system time over the measured window
(writer thread included), divided by the frames it took in. At the fixed rate a /ws client in
its own process records when each candle arrived, and the simulator's send log gives when its
frame left: frame -> /ws client latency, and frame -> commit (seen in feedd's process, for one
symbol in eight, so that the bookkeeping stays small against what it measures). Send and
receive times are both CLOCK_MONOTONIC, so they compare across processes.

Because a shared machine's speed drifts, runs alternate (reader, feedd, reader, feedd, ...)
and the summary gives feedd as a ratio of the reader next to it (median over the pairs).

    python scripts/bench_ingest.py                       # 3 pairs at full load and 2,000/s
    python scripts/bench_ingest.py --pairs 5 --seconds 10 --symbols 600
    python scripts/bench_ingest.py --only feedd --exchange all --ws-clients 200
    python scripts/bench_ingest.py --connector trio-websocket,websockets   # both, in turn

``--connector`` names feedd's WebSocket client (feedd/engine/connector.py) and ``--writer``
where its store connection runs (``thread``, the default, or ``process``: a child process,
whose CPU is counted with feedd's and whose memory is reported on its own), ``--storage`` its
store (``sqlite``, the default, or ``postgresql``: a fresh database on a throwaway server
started from tests/pgserver.py, whose processes' CPU per row is reported on its own as
``server_cpu_us_per_row``); with several of any, each pair becomes the reader followed by
feedd once per combination, each a ratio of that reader.

    python scripts/bench_ingest.py --writer thread,process   # both writers, in turn
    python scripts/bench_ingest.py --storage sqlite,postgresql   # socket -> row on each store
    python scripts/bench_ingest.py --cryptofeed .venv-cryptofeed/bin/python   # and cryptofeed

``--cryptofeed PYTHON`` adds cryptofeed to every pair (scripts/cryptofeed_client.py, run under a
Python that has cryptofeed installed; it is not a dependency of feedd): its Binance feed on
the same simulator, each candle to an empty callback, storing nothing. The summary gives
feedd's CPU per committed row over cryptofeed's CPU per frame, and the rates' ratio.

``--ws-clients N`` adds N /ws clients subscribed to every candle, in a process of their own
(like real dashboards elsewhere), to show what fan-out costs ingest.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import psutil
import trio

from feedd import config as config_module
from feedd.engine import connector
from feedd.service import Service, run_service
from feedd.sim.symbols import universe
from feedd.store.backend import open_backend

if TYPE_CHECKING:
    from pgserver import PgServer

VENUES = ("binance_futures", "bybit_futures", "okx_futures")
CRYPTOFEED_CLIENT = Path(__file__).resolve().parent / "cryptofeed_client.py"
WARM_UP_S = 3.0
#: how long the /ws client keeps listening after the window, for frames sent at its end
ARRIVALS_GRACE_S = 1.0
#: frame -> commit is timed on every COMMIT_SAMPLE-th symbol: the recording runs inside the
#: measured feedd process, and timing every candle cost it ~1.5 us of CPU per row at 2,000/s
#: and ~10 MB of peak RSS (a dict entry per candle); one in eight still gives ~2,500 samples
#: in a 10-second window
COMMIT_SAMPLE = 8
SIM_SEED = 1
#: instruments the simulator lists; feedd only subscribes to listed symbols
SIM_UNIVERSE = 2000


def symbols(count: int) -> list[str]:
    return list(universe(SIM_SEED, SIM_UNIVERSE)[:count])


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def start_sim(
    venues: Sequence[str], rate: float, *, closed: bool = True
) -> tuple[trio.Process, dict[str, Any]]:
    """The simulator in its own process; ``closed``: every update a new closed candle, else
    forming frames (each a new close of the stream's candle)."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "feedd.sim",
            "--venues",
            ",".join(venues),
            "--speed",
            "1",
            "--rate",
            str(rate),
            *(["--bench-closed"] if closed else []),
            "--max-inbound",
            "0",
            "--seed",
            str(SIM_SEED),
            "--symbols",
            str(SIM_UNIVERSE),
        ],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    urls: dict[str, Any] = {}
    buffer = b""
    while len(urls) < len(venues):
        chunk = await process.stdout.receive_some()
        if not chunk:
            raise SystemExit("simulator exited before printing its URLs")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                entry = json.loads(line)
                if "exchange" in entry:
                    urls[entry["exchange"]] = entry
    return process, urls


def writer_processes(me: psutil.Process) -> list[psutil.Process]:
    """feedd's store writer child processes (``"writer": "process"``), if any."""
    found = []
    for child in me.children():
        try:
            if "feedd.store.writeprocess" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


def feedd_config(
    urls: dict[str, Any],
    count: int,
    db: Path,
    writer: str = "thread",
    storage: dict[str, str] | None = None,
) -> config_module.Config:
    doc = {
        "exchanges": {
            name: {
                "symbols": symbols(count),
                "ws_url": u["ws_url"],
                "rest_url": u["rest_url"],
                "silence_timeout": 30,
            }
            for name, u in urls.items()
        },
        "intervals": ["1m"],
        "storage": {**(storage or {"backend": "sqlite", "path": str(db)}), "writer": writer},
        "bootstrap_load": 0,
        "batch_interval": 50,
        "port": 0,
    }
    return config_module.parse(doc).config


# ----------------------------------------------------------------------------- the bare reader


def run_reader(venue: str, ws_base: str, count: int, seconds: float) -> None:
    """Child-process mode: read ``venue``'s kline frames with the fastest client installed,
    decode each with msgspec into typed structs, store nothing; print one JSON line."""
    import msgspec

    from feedd.engine.supervisor import shard_streams
    from feedd.exchanges import REGISTRY

    module = REGISTRY[venue]
    shards = shard_streams(module, symbols(count), ["1m"])
    decode = _frame_decoder(venue, msgspec)
    decoded = [0]
    try:
        from websockets.trio.client import connect

        client = "websockets " + __import__("websockets").__version__
    except ImportError:
        connect = None
        client = "trio-websocket " + __import__("trio_websocket").__version__

    async def read(streams: Sequence[Any], task_status: trio.TaskStatus[None]) -> None:
        url = module.ws_url(ws_base)
        frames = [r.frame for r in module.subscribe_requests(streams, 1)]
        if connect is not None:
            async with connect(
                url, compression=None, proxy=None, ping_interval=None, max_size=None
            ) as ws:
                for frame in frames:
                    await ws.send(frame)
                task_status.started()
                async for message in ws:
                    if decode(message):
                        decoded[0] += 1
        else:
            import trio_websocket

            async with trio_websocket.open_websocket_url(url, max_message_size=2**24) as tws:
                for frame in frames:
                    await tws.send_message(frame)
                task_status.started()
                while True:
                    if decode(await tws.get_message()):
                        decoded[0] += 1

    async def main() -> None:
        me = psutil.Process()
        async with trio.open_nursery() as nursery:
            for streams in shards:
                await nursery.start(read, streams)
            await trio.sleep(WARM_UP_S)
            n0, c0, t0 = decoded[0], cpu_seconds(me), time.monotonic()
            await trio.sleep(seconds)
            n1, c1, t1 = decoded[0], cpu_seconds(me), time.monotonic()
            print(json.dumps({"client": client, "frames": n1 - n0, "cpu_s": c1 - c0, "s": t1 - t0}))
            nursery.cancel_scope.cancel()

    trio.run(main)


def _frame_decoder(venue: str, msgspec: Any) -> Any:
    """A function from one frame to whether it carried a kline, decoding into typed structs
    (Binance's combined-stream payload); other venues decode untyped."""
    if venue != "binance_futures":
        untyped = msgspec.json.Decoder()
        return lambda frame: "data" in untyped.decode(frame)

    # defstruct: class bodies here would be evaluated lazily (postponed annotations)
    strs = [(name, str) for name in ("s", "i", "o", "c", "h", "l", "v", "q")]
    k = msgspec.defstruct("K", [("t", int), *strs, ("n", int), ("x", bool)])
    data = msgspec.defstruct("Data", [("e", str), ("k", k)])
    frame = msgspec.defstruct("Frame", [("data", data | None, None)])
    decoder = msgspec.json.Decoder(frame)
    return lambda frame: decoder.decode(frame).data is not None


async def measure_reader(venue: str, count: int, seconds: float, rate: float) -> dict[str, Any]:
    result, sim_cpu = await _run_client_on_sim(
        venue, rate, lambda ws, _rest: [sys.executable, __file__, "--reader-process", venue, ws,
                                        str(count), str(seconds)],
    )  # fmt: skip
    return {
        "who": "reader",
        "client": result["client"],
        **_client_figures(result, rate),
        # over warm-up and window: only to see whether the simulator was the bottleneck
        "simulator_cpu_s": round(sim_cpu, 1),
    }


async def _run_client_on_sim(
    venue: str, rate: float, argv: Callable[[str, str], list[str]], cwd: str | None = None
) -> tuple[dict[str, Any], float]:
    """Run a client child (``argv(ws_url, rest_url)``) against a fresh simulator: the last JSON
    line it prints, and the simulator's CPU seconds meanwhile."""
    sim, urls = await start_sim([venue], rate)
    sim_proc = psutil.Process(sim.pid)
    try:
        sim0 = cpu_seconds(sim_proc)
        out = await trio.run_process(
            argv(urls[venue]["ws_url"], urls[venue]["rest_url"]), capture_stdout=True, cwd=cwd
        )
        sim_cpu = cpu_seconds(sim_proc) - sim0
    finally:
        sim.kill()
        await sim.wait()
    return json.loads(out.stdout.decode().strip().splitlines()[-1]), sim_cpu


def _client_figures(result: dict[str, Any], rate: float) -> dict[str, Any]:
    """Rates and CPU of a client child's line (``frames`` counted in ``s``, ``cpu_s``)."""
    frames, elapsed = result["frames"], result["s"]
    return {
        "rate": rate or "unpaced",
        "frames_per_s": round(frames / elapsed),
        "cpu_us_per_frame": round(result["cpu_s"] / max(frames, 1) * 1e6, 1),
        "cpu_percent": round(result["cpu_s"] / elapsed * 100, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


# ----------------------------------------------------------------------------- /ws clients


SUBSCRIBE_ALL = b'{"op":"subscribe","topic":"candles"}'


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask; the key can be anything)."""
    assert len(payload) < 126
    key = os.urandom(4)
    masked = bytes(b ^ key[n % 4] for n, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


async def run_ws_clients(url: str, count: int) -> None:
    """Child-process mode: ``count`` clients subscribed to every candle, reading until
    terminated. They read raw bytes without decoding frames, so that on a shared 2-core
    machine the clients' own CPU does not stand in for feedd's cost."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    received = [0]

    async def client(task_status: trio.TaskStatus[None]) -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        assert head.startswith(b"HTTP/1.1 101"), head[:80]
        await stream.send_all(masked_text_frame(SUBSCRIBE_ALL))
        task_status.started()
        while chunk := await stream.receive_some(65536):
            received[0] += len(chunk)

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                await nursery.start(client)
            print("connected", flush=True)
            async for _ in signals:
                print(json.dumps({"bytes": received[0]}), flush=True)
                nursery.cancel_scope.cancel()
                break


async def run_ws_timer(url: str) -> None:
    """Child-process mode: one /ws client that notes when each candle arrived, keyed as the
    simulator's send log keys frames; at SIGTERM it prints them as one JSON line."""
    import orjson
    import trio_websocket

    arrived: list[tuple[str, str, int, float, float]] = []
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        # max size: a /ws message carries every candle of a commit, which can pass 1 MiB
        async with trio_websocket.open_websocket_url(
            url.replace("http", "ws") + "/ws", max_message_size=2**28
        ) as ws:
            await ws.send_message(SUBSCRIBE_ALL.decode())
            print("connected", flush=True)
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    while True:
                        message = await ws.get_message()
                        now = time.monotonic()
                        body = orjson.loads(message)
                        if body.get("type") == "candles":
                            for c in body["data"]:
                                key = (c["exchange"], c["symbol"], c["open_time"], c["close"])
                                arrived.append((*key, now))

                nursery.start_soon(read)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    sys.stdout.write(orjson.dumps(arrived).decode() + "\n")
    sys.stdout.flush()


async def start_child(mode: str, *args: str) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, mode, *args], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    with trio.fail_after(60):
        line = await process.stdout.receive_some(100)
    assert line.startswith(b"connected"), line
    return process


async def stop_child(process: trio.Process) -> bytes:
    assert process.stdout is not None
    process.terminate()
    out = b""
    while chunk := await process.stdout.receive_some():
        out += chunk
    await process.wait()
    return out


async def measure_cryptofeed(
    python: str, count: int, seconds: float, rate: float
) -> dict[str, Any]:
    """cryptofeed (scripts/cryptofeed_client.py under ``python``) on a fresh simulator:
    Binance candles of ``count`` symbols to an empty callback, storing nothing."""
    # in a folder of its own: cryptofeed writes feedhandler.log where it runs
    with tempfile.TemporaryDirectory() as tmp:
        result, _ = await _run_client_on_sim(
            "binance_futures", rate, lambda ws, rest: [python, str(CRYPTOFEED_CLIENT), rest, ws,
                                                        str(seconds), str(WARM_UP_S),
                                                        json.dumps(symbols(count))],
            cwd=tmp,
        )  # fmt: skip
    return {"who": "cryptofeed", "symbols": result["symbols"], **_client_figures(result, rate)}


# ----------------------------------------------------------------------------- feedd


class PgDatabase(NamedTuple):
    """A fresh database of the throwaway server, as a feedd run in its own process sees it."""

    dsn: str
    #: the server's data directory, for its processes' CPU time
    data: str

    def cpu_seconds(self) -> float:
        from pgserver import server_cpu_seconds

        return float(server_cpu_seconds(Path(self.data)))


async def measure_feedd_apart(
    venues: Sequence[str],
    count: int,
    seconds: float,
    rate: float,
    ws_clients: int,
    client: str,
    writer_kind: str,
    pg: PgServer | None,
) -> dict[str, Any]:
    """``measure_feedd`` in a process started for this run alone (see the module's doc)."""
    database = None if pg is None else PgDatabase(pg.dsn(pg.create_database()), str(pg.data))
    params = [list(venues), count, seconds, rate, ws_clients, client, writer_kind, database]
    done = await trio.run_process(
        [sys.executable, __file__, "--feedd-process", json.dumps(params)], capture_stdout=True
    )
    lines = done.stdout.decode().splitlines()
    return dict(json.loads(next(line for line in reversed(lines) if line.startswith('{"who"'))))


def run_feedd_process(params: str) -> None:
    """The child's side of ``measure_feedd_apart``: one run, its row on stdout."""
    venues, count, seconds, rate, ws_clients, client, writer_kind, database = json.loads(params)
    if database is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # pgserver
        database = PgDatabase(*database)
    row = trio.run(
        measure_feedd, venues, count, seconds, rate, ws_clients, client, writer_kind, database
    )
    print(json.dumps(row), flush=True)


async def measure_feedd(
    venues: Sequence[str],
    count: int,
    seconds: float,
    rate: float,
    ws_clients: int = 0,
    client: str = connector.DEFAULT,
    writer_kind: str = "thread",
    pg: PgDatabase | None = None,
) -> dict[str, Any]:
    """One feedd run in this process; on ``pg`` instead of SQLite when given."""
    connector.use(client)
    sim, urls = await start_sim(venues, rate)
    clients: trio.Process | None = None
    timer: trio.Process | None = None
    commits: dict[tuple[str, str, int, str], float] = {}
    timed = frozenset(symbols(count)[::COMMIT_SAMPLE])
    arrivals: list[list[Any]] = []
    peak_rss = peak_writer_rss = 0
    me = psutil.Process()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            storage = None
            if pg is not None:
                storage = {"backend": "postgresql", "dsn": pg.dsn}
            cfg = feedd_config(urls, count, db, writer_kind, storage)
            async with trio.open_nursery() as nursery:
                store = open_backend(cfg.storage, db.parent)
                service: Service = await nursery.start(run_service, cfg, store)
                writer = service.state.writer

                recording = trio.CancelScope()

                async def record_commits() -> None:
                    with recording, writer.open_commit_listener(max_buffer=100_000) as listener:
                        async for batch in listener:
                            now = time.monotonic()
                            for c in batch:
                                if c.symbol in timed:
                                    key = (c.exchange, c.symbol, c.open_time, c.close)
                                    commits.setdefault(key, now)

                if rate:
                    nursery.start_soon(record_commits)
                    timer = await start_child("--ws-timer-process", service.url)
                if ws_clients:
                    clients = await start_child("--ws-client-process", service.url, str(ws_clients))
                await trio.sleep(WARM_UP_S)  # connect, subscribe, first commits
                sim_proc = psutil.Process(sim.pid)
                children = writer_processes(me)
                sim0 = cpu_seconds(sim_proc)
                child0 = sum(cpu_seconds(c) for c in children)
                cpu0 = cpu_seconds(me) + child0
                server0 = pg.cpu_seconds() if pg is not None else 0.0
                received0, committed0 = writer.stats.received, writer.stats.committed
                t0 = time.monotonic()
                end = t0 + seconds
                while time.monotonic() < end:
                    await trio.sleep(0.5)
                    peak_rss = max(peak_rss, me.memory_info().rss)
                    writer_rss = sum(c.memory_info().rss for c in children)
                    peak_writer_rss = max(peak_writer_rss, writer_rss)
                elapsed = time.monotonic() - t0
                child_cpu = sum(cpu_seconds(c) for c in children)
                cpu_s = cpu_seconds(me) + child_cpu - cpu0
                sim_cpu = cpu_seconds(sim_proc) - sim0
                server_cpu = pg.cpu_seconds() - server0 if pg is not None else 0.0
                received = writer.stats.received - received0
                committed = writer.stats.committed - committed0
                if timer is not None:
                    # Frames sent just before the window closed are still in a commit batch:
                    # stopping the /ws client at once lost one burst in some runs (19,800 of
                    # 20,000 frames) and left the latest out of the percentiles.
                    await trio.sleep(ARRIVALS_GRACE_S)
                    arrivals = json.loads((await stop_child(timer)).decode().strip() or "[]")
                    timer = None
                sent = await _send_log(urls, t0, end) if rate else {}
                overflows = service.state.hub.overflows
                if clients is not None:
                    await stop_child(clients)
                    clients = None
                recording.cancel()
                service.stop.set()
    finally:
        sim.kill()
        await sim.wait()
        for child in (clients, timer):
            if child is not None:
                child.kill()
                await child.wait()
    result: dict[str, Any] = {
        "who": "feedd",
        "connector": client,
        "writer": writer_kind,
        "storage": "sqlite" if pg is None else "postgresql",
        "venues": list(venues),
        "symbols": count,
        "rate": rate or "unpaced",
        "updates_per_s": round(received / elapsed),
        "rows_committed_per_s": round(committed / elapsed),
        "cpu_us_per_update": round(cpu_s / max(received, 1) * 1e6, 1),
        "cpu_us_per_row": round(cpu_s / max(committed, 1) * 1e6, 1),
        "cpu_percent": round(cpu_s / elapsed * 100, 1),
        "simulator_cpu_s": round(sim_cpu, 1),
        "peak_rss_mb": round(peak_rss / 2**20, 1),
        "writer_process_rss_mb": round(peak_writer_rss / 2**20, 1),
        "writer_process_cpu_s": round(child_cpu - child0, 1),
        # PostgreSQL's own processes (feedd's CPU above leaves them out; SQLite runs inside)
        "server_cpu_us_per_row": round(server_cpu / max(committed, 1) * 1e6, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if ws_clients:
        result["ws_clients"] = ws_clients
        result["ws_clients_dropped"] = overflows
    if sent:
        sent_timed = {key: t for key, t in sent.items() if key[1] in timed}
        to_commit = [
            commits[key] - t
            for key, t in sent_timed.items()
            if key in commits and commits[key] >= t
        ]
        # /ws sends prices as numbers: the close string becomes a float on the way.
        by_float = {(v, s, o, float(c)): t for (v, s, o, c), t in sent.items()}
        to_ws = [now - by_float[(v, s, o, c)] for v, s, o, c, now in arrivals
                 if (v, s, o, c) in by_float]  # fmt: skip
        result["frame_to_commit_ms"] = _percentiles(to_commit, len(sent_timed))
        result["frame_to_ws_ms"] = _percentiles(to_ws, len(sent))
    return result


def _percentiles(samples: list[float], sent: int) -> dict[str, Any]:
    if not samples:
        return {"samples": 0, "sent": sent}
    samples.sort()
    return {
        "samples": len(samples),
        "sent": sent,
        "p50": round(samples[len(samples) // 2] * 1000, 2),
        "p99": round(samples[int(len(samples) * 0.99)] * 1000, 2),
        "max": round(samples[-1] * 1000, 2),
    }


async def _send_log(
    urls: dict[str, Any], t0: float, end: float
) -> dict[tuple[str, str, int, str], float]:
    """When each frame sent inside [t0, end] left the simulator, keyed like a candle."""
    out: dict[tuple[str, str, int, str], float] = {}
    async with httpx.AsyncClient() as client:
        for venue, entry in urls.items():
            after = 0
            while True:
                body = (
                    await client.get(entry["rest_url"] + "/_sim/sendlog", params={"after": after})
                ).json()
                for symbol, open_ms, close, sent in body["rows"]:
                    if t0 <= sent <= end:
                        out[(venue, symbol, open_ms, close)] = sent
                # The simulator keeps sending while we read: stop past the window.
                if not body["rows"] or body["rows"][-1][3] > end:
                    break
                after = body["next"]
    return out


# ----------------------------------------------------------------------------- the run


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """feedd over the reader next to it, per load: the median of the pairs' ratios."""
    out: dict[str, Any] = {}
    variants = sorted({_variant(r) for r in rows if r["who"] == "feedd"})
    for rate, variant in [(r, v) for r in sorted({str(r["rate"]) for r in rows}) for v in variants]:
        readers = [r for r in rows if str(r["rate"]) == rate and r["who"] == "reader"]
        feedds = [
            r
            for r in rows
            if str(r["rate"]) == rate and r["who"] == "feedd" and _variant(r) == variant
        ]
        pairs = list(zip(readers, feedds, strict=False))
        if not pairs:
            continue
        client, writer, storage = variant
        key = rate if len(variants) == 1 else f"{rate} {client} {writer}-writer {storage}"
        out[key] = {
            "connector": client,
            "writer": writer,
            "storage": storage,
            "pairs": len(pairs),
            # rows committed, not updates received: a writer behind holds what it received
            "rate_ratio": _median(
                [f["rows_committed_per_s"] / r["frames_per_s"] for r, f in pairs]
            ),
            "cpu_per_msg_ratio": _median(
                [_cpu_per_row(f) / r["cpu_us_per_frame"] for r, f in pairs]
            ),
            "reader_frames_per_s": _median([r["frames_per_s"] for r, _ in pairs]),
            "reader_cpu_us": _median([r["cpu_us_per_frame"] for r, _ in pairs]),
            "feedd_updates_per_s": _median([f["updates_per_s"] for _, f in pairs]),
            "feedd_rows_per_s": _median([f["rows_committed_per_s"] for _, f in pairs]),
            "feedd_cpu_us_per_row": _median([_cpu_per_row(f) for _, f in pairs]),
            "feedd_cpu_percent": _median([f["cpu_percent"] for _, f in pairs]),
            "feedd_peak_rss_mb": _median([f["peak_rss_mb"] for _, f in pairs]),
            "writer_process_rss_mb": _median([f.get("writer_process_rss_mb", 0) for _, f in pairs]),
            "server_cpu_us_per_row": _median([f.get("server_cpu_us_per_row", 0) for _, f in pairs]),
            "loadavg_1m": _median([r["loadavg_1m"] for r in rows if str(r["rate"]) == rate]),
        }
        peers = [r for r in rows if str(r["rate"]) == rate and r["who"] == "cryptofeed"]
        if peers:
            with_peer = list(zip(peers, feedds, strict=False))
            out[key]["cryptofeed_frames_per_s"] = _median([p["frames_per_s"] for p in peers])
            out[key]["cryptofeed_cpu_us"] = _median([p["cpu_us_per_frame"] for p in peers])
            # feedd stores and serves what cryptofeed only parses: CPU per row over per frame
            out[key]["cpu_over_cryptofeed"] = _median(
                [_cpu_per_row(f) / p["cpu_us_per_frame"] for p, f in with_peer]
            )
            out[key]["rate_over_cryptofeed"] = _median(
                [f["rows_committed_per_s"] / p["frames_per_s"] for p, f in with_peer]
            )
        ws = [f["frame_to_ws_ms"] for _, f in pairs if f.get("frame_to_ws_ms", {}).get("samples")]
        if ws:
            out[key]["frame_to_ws_p50_ms"] = _median([w["p50"] for w in ws])
            out[key]["frame_to_ws_p99_ms"] = _median([w["p99"] for w in ws])
    return out


def _variant(feedd: dict[str, Any]) -> tuple[str, str, str]:
    return (
        feedd.get("connector", connector.DEFAULT),
        feedd.get("writer", "thread"),
        feedd.get("storage", "sqlite"),
    )


def _rows(feedd: dict[str, Any]) -> float:
    return float(feedd["rows_committed_per_s"])


def _cpu_per_row(feedd: dict[str, Any]) -> float:
    """feedd's CPU per row committed: its work includes committing what it took in."""
    return float(feedd["cpu_percent"]) * 1e4 / max(_rows(feedd), 1)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3 if max(values) < 10 else 1)


async def run_all(args: argparse.Namespace, pg: PgServer | None) -> list[dict[str, Any]]:
    venues = VENUES if args.exchange == "all" else (args.exchange,)
    rates = [0.0] if args.rate is None else []
    rates += [args.latency_rate] if args.latency_rate else []
    if args.rate is not None:
        rates = [args.rate]
    rows = []
    for rate in rates:
        for _ in range(args.pairs):
            if args.only in (None, "reader"):
                row = await measure_reader(venues[0], args.symbols, args.seconds, rate)
                print(json.dumps(row), flush=True)
                rows.append(row)
            if args.cryptofeed:
                row = await measure_cryptofeed(args.cryptofeed, args.symbols, args.seconds, rate)
                print(json.dumps(row), flush=True)
                rows.append(row)
            variants = [
                (client, writer, storage)
                for client in args.connector.split(",")
                for writer in args.writer.split(",")
                for storage in args.storage.split(",")
            ]
            for client, writer, storage in variants if args.only in (None, "feedd") else ():
                server = pg if storage == "postgresql" else None
                row = await measure_feedd_apart(
                    venues, args.symbols, args.seconds, rate, args.ws_clients, client, writer,
                    server,
                )  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--exchange", default="binance_futures", help="venue name, or 'all' for the three at once"
    )
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--pairs", type=int, default=3, help="alternating reader/feedd pairs")
    parser.add_argument("--latency-rate", type=float, default=2000.0, help="0: skip")
    parser.add_argument("--rate", type=float, default=None, help="only this rate (0: unpaced)")
    parser.add_argument("--only", choices=("reader", "feedd"), default=None)
    parser.add_argument(
        "--connector",
        default=connector.DEFAULT,
        help="feedd's WebSocket client(s), comma-separated: "
        + ", ".join(sorted(connector.CLIENTS)),
    )
    parser.add_argument(
        "--writer",
        default="thread",
        help="where feedd's store writer runs, comma-separated: thread, process",
    )
    parser.add_argument(
        "--storage",
        default="sqlite",
        help="feedd's store, comma-separated: sqlite, postgresql (a throwaway server, fsync on,"
        " synchronous_commit off: durable like SQLite's WAL with synchronous=NORMAL)",
    )
    parser.add_argument(
        "--cryptofeed",
        metavar="PYTHON",
        help="also measure cryptofeed (scripts/cryptofeed_client.py) under this Python, which"
        " has it installed, in every pair",
    )
    parser.add_argument("--ws-clients", type=int, default=0, help="/ws clients reading all candles")
    parser.add_argument("--summarise", metavar="FILE", help="summarise the rows of a past run")
    parser.add_argument("--ws-client-process", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--ws-timer-process", nargs=1, help=argparse.SUPPRESS)
    parser.add_argument("--reader-process", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--feedd-process", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feedd_process:
        run_feedd_process(args.feedd_process)
        return
    if args.ws_client_process:
        url, count = args.ws_client_process
        trio.run(run_ws_clients, url, int(count))
        return
    if args.ws_timer_process:
        trio.run(run_ws_timer, args.ws_timer_process[0])
        return
    if args.reader_process:
        venue, ws_base, count, seconds = args.reader_process
        run_reader(venue, ws_base, int(count), float(seconds))
        return
    if args.summarise:
        lines = Path(args.summarise).read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.startswith('{"who"')]
    else:
        rows = _run_with_storage(args)
    print(json.dumps({"summary": summarise(rows)}, indent=1))


def _run_with_storage(args: argparse.Namespace) -> list[dict[str, Any]]:
    storages = args.storage.split(",")
    unknown = set(storages) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"--storage: unknown {', '.join(sorted(unknown))}")
    if "postgresql" not in storages:
        return trio.run(run_all, args, None)
    # tests/ holds the throwaway server; only this mode needs it (and pytest, which it imports)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pgserver import PgServer

    pg = PgServer({"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off"})
    try:
        pg.start()
        return trio.run(run_all, args, pg)
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
