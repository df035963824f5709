"""/ws latency benchmark: where the time from an exchange frame to a /ws client goes.

One simulator process sends forming frames at a fixed rate (``--rate``, default 2,000/s) over
``--symbols`` streams; feedd runs in this process; /ws clients subscribed to every candle run
in processes of their own:

- **bare**: a plain blocking socket, no event loop: the arrival time is taken as ``recv``
  returns, so the client adds next to nothing;
- **tws**: trio-websocket, as a typical trio client (what ``bench_ingest`` used).

Per frame (its send time from the simulator's send log, CLOCK_MONOTONIC across processes):
``frame_to_ingest`` (the writer took the candle in: socket, parse, channel hops), then
``ingest_to_<client>`` and ``frame_to_<client>``, as p50/p90/p99/max over the frames the client
saw (a forming update superseded within one message is not sent, so not every frame is seen).
Also: the event-loop thread's share of the window on CPU and runnable but waiting for a CPU
(``/proc`` schedstat: on a shared machine the second one sets the tail), GC pauses and what a
full collection costs. ``--probe`` adds ``ingest_to_hub``, ``hub_to_socket`` (the bytes reach
the kernel) and ``socket_to_<client>``, a 1 ms sleep's lateness, and CPU per task with the
steps over 1 ms (wall against CPU); it costs the loop CPU, so compare figures without it.

The simulator sends a burst of frames (one per stream) per tick and takes its send time as
the burst is written to the socket, after it is built: ``frame_to_ingest`` starts at the
socket write. Within a burst feedd parses frame after frame, so the last one's wait for the
others is in it (feedd's latency, as with a venue that sends several frames at once).

    python scripts/bench_ws.py                        # 20 symbols, 2,000/s, 3 runs of 8 s
    python scripts/bench_ws.py --symbols 600 --runs 2 --clients bare --probe
    python scripts/bench_ws.py --switch-interval 5,1 --hog-ms 0,10   # A/B, runs alternate
    python scripts/bench_ws.py --forming-every 0,1,2 --clients bare

``--writer-rate R`` adds a second simulator (Bybit) sending R closed candles a second, every one
a new row: the writer thread binds and commits while the forming updates are timed.
``--switch-interval``, ``--forming-every`` and ``--hog-ms`` (a thread running pure Python for
that long every 50 ms: a busy writer's stand-in) take comma-separated values; every
combination runs once per run, in turn. On a loaded machine the loop's wait for a CPU sets the
tail (``waiting_for_cpu``); ``chrt -f 5 python scripts/bench_ws.py ...`` (root) gives the
benchmark's processes the CPU first, as on a quiet box: say so next to its figures.
"""

from __future__ import annotations

import argparse
import base64
import gc
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import (
    SUBSCRIBE_ALL,
    WARM_UP_S,
    _send_log,
    feedd_config,
    masked_text_frame,
    run_ws_timer,
    start_sim,
    stop_child,
)

import feedd.service
import feedd.web.live
from feedd.service import Service, run_service
from feedd.store.backend import open_backend

Key = tuple[str, str, int, float]


# ----------------------------------------------------------------------------- clients


def run_bare(url: str) -> None:
    """Child-process mode: a /ws client on a blocking socket; at SIGTERM it prints each
    candle's arrival as one JSON line."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(4096)
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    sock.sendall(masked_text_frame(SUBSCRIBE_ALL))
    stop = [False]

    def on_term(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    print("connected", flush=True)
    arrived: list[tuple[str, str, int, float, float]] = []
    sock.settimeout(0.1)
    while not stop[0]:
        try:
            chunk = sock.recv(1 << 20)
        except (TimeoutError, InterruptedError):
            continue
        now = time.monotonic()
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 2:
            size, at = buffer[1] & 0x7F, 2
            if size == 126:
                size, at = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, at = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < at + size:
                break
            opcode, payload = buffer[0] & 0x0F, buffer[at : at + size]
            buffer = buffer[at + size :]
            if opcode != 1:
                continue
            body = orjson.loads(payload)
            if body.get("type") == "candles":
                for c in body["data"]:
                    arrived.append((c["exchange"], c["symbol"], c["open_time"], c["close"], now))
    sys.stdout.write(orjson.dumps(arrived).decode() + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- the run


async def start_child(mode: str, url: str) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, mode, url], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    with trio.fail_after(60):
        line = await process.stdout.receive_some(100)
    assert line.startswith(b"connected"), line
    return process


class GcWatch:
    """GC pauses of this process: count, total and longest (ms)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.generations: list[int] = []
        self.full_collect_ms = 0.0
        self.tracked = self.frozen = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._start)
            self.generations.append(info["generation"])

    def summary(self) -> dict[str, Any]:
        p = self.pauses
        gen2 = [t for t, g in zip(p, self.generations, strict=True) if g == 2]
        return {
            "n": len(p),
            "total_ms": round(sum(p) * 1e3, 1),
            "max_ms": round(max(p or [0]) * 1e3, 2),
            "gen2": len(gen2),
            "gen2_ms": [round(t * 1e3, 1) for t in gen2],
            "tracked": self.tracked,
            "frozen": self.frozen,
            "full_collect_cpu_ms": self.full_collect_ms,
        }


def _schedstat() -> list[int]:
    """This thread's ns on CPU and ns runnable but waiting (Linux)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        on_cpu, waiting, _ = f.read().split()
    return [int(on_cpu), int(waiting)]


def _threads_cpu() -> dict[str, int]:
    """ns on CPU of each thread of this process, by name and id."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[f"{name}/{task.name}"] = int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue  # the thread ended
    return out


class Steps(trio.abc.Instrument):
    """Task steps of 1 ms or more: wall and CPU time, by task name."""

    def __init__(self) -> None:
        self.long: list[tuple[str, float, float]] = []
        self.n = 0
        self.on = True
        #: -1: no step timed yet (the step running when the instrument came is not)
        self._t, self._c = -1.0, 0.0
        #: CPU seconds of every step, by task name
        self.cpu: dict[str, float] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._t, self._c = time.perf_counter(), time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if not self.on or self._t < 0:
            return
        self.n += 1
        wall = time.perf_counter() - self._t
        name = task.name.rsplit(".", 1)[-1]
        self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - self._c
        if wall >= 0.001:
            self.long.append((task.name.rsplit(".", 1)[-1], wall, time.thread_time() - self._c))

    def summary(self) -> dict[str, Any]:
        by: dict[str, list[float]] = {}
        for name, wall, cpu in self.long:
            by.setdefault(name, [0, 0.0, 0.0, 0.0])
            e = by[name]
            e[0] += 1
            e[1] += wall * 1e3
            e[2] += cpu * 1e3
            e[3] = max(e[3], wall * 1e3)
        top = sorted(by.items(), key=lambda kv: -kv[1][1])[:6]
        per_task = sorted(self.cpu.items(), key=lambda kv: -kv[1])[:8]
        return {
            "steps": self.n,
            "long": len(self.long),
            "cpu_ms_by_task": {k: round(v * 1e3) for k, v in per_task},
            "by_task": {
                k: f"n={v[0]:.0f} wall={v[1]:.0f}ms cpu={v[2]:.0f}ms max={v[3]:.1f}" for k, v in top
            },
        }


def percentiles(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    samples.sort()
    n = len(samples)
    return {
        "n": n,
        "p50": round(samples[n // 2] * 1e3, 2),
        "p90": round(samples[int(n * 0.9)] * 1e3, 2),
        "p99": round(samples[int(n * 0.99)] * 1e3, 2),
        "max": round(samples[-1] * 1e3, 2),
    }


def hog(stop: threading.Event, busy_s: float, every_s: float = 0.05) -> None:
    """A thread that runs pure Python for ``busy_s`` every ``every_s``: a stand-in for a busy
    writer thread binding a large batch (it holds the GIL while the loop wants it)."""
    while not stop.wait(every_s):
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            sum(range(200))


async def measure(
    count: int,
    seconds: float,
    rate: float,
    clients: list[str],
    probe: bool,
    hog_ms: float = 0.0,
    writer_rate: float = 0.0,
    writer: str = "thread",
) -> dict[str, Any]:
    venue = "binance_futures"
    hog_stop = threading.Event()
    if hog_ms:
        threading.Thread(target=hog, args=(hog_stop, hog_ms / 1e3), daemon=True).start()
    sim, urls = await start_sim([venue], rate, closed=False)
    # closed candles of another venue: rows for the writer thread to bind and commit (they
    # reach the /ws clients after their commit and are left out of the latencies)
    rows_sim = None
    if writer_rate:
        rows_sim, rows_urls = await start_sim(["bybit_futures"], writer_rate)
        urls = {**urls, **rows_urls}
    ingested: dict[Key, float] = {}
    published: dict[Key, float] = {}
    publishes: list[float] = []
    on_socket: dict[Key, float] = {}
    lags: list[float] = []
    children: dict[str, trio.Process] = {}
    arrivals: dict[str, list[list[Any]]] = {}
    watch = GcWatch()
    steps = Steps()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            async with trio.open_nursery() as nursery:
                cfg = feedd_config(urls, count, db, writer)
                service: Service = await nursery.start(
                    run_service, cfg, open_backend(cfg.storage, db.parent)
                )
                recording = trio.CancelScope()
                lag_done = trio.Event()

                async def record_ingest() -> None:
                    with recording, service.state.writer.open_ingest_listener(100_000) as recv:
                        async for batch in recv:
                            now = time.monotonic()
                            for c in batch:
                                ingested.setdefault(
                                    (c.exchange, c.symbol, c.open_time, float(c.close)), now
                                )

                nursery.start_soon(record_ingest)
                hub = service.state.hub
                publish = hub.publish_ingested

                def probe_publish(batch: Any) -> None:
                    now = time.monotonic()
                    publishes.append(now)
                    for c in batch:
                        published.setdefault(
                            (c.exchange, c.symbol, c.open_time, float(c.close)), now
                        )
                    publish(batch)

                if probe:
                    hub.publish_ingested = probe_publish  # type: ignore[method-assign]
                send_all = trio.SocketStream.send_all

                async def probe_send(self: trio.SocketStream, data: Any) -> None:
                    # the bytes reach the kernel before send_all's closing checkpoint
                    now = time.monotonic()
                    await send_all(self, data)
                    # a server frame: 2-10 bytes of header, then (here) a JSON text
                    at = bytes(data[:32]).find(b'{"type":"candles"')
                    if at >= 0:
                        for c in orjson.loads(bytes(data[at:]))["data"]:
                            key = (c["exchange"], c["symbol"], c["open_time"], c["close"])
                            on_socket.setdefault(key, now)

                if probe:
                    trio.SocketStream.send_all = probe_send  # type: ignore[method-assign]

                async def loop_lag() -> None:
                    # how late a 1 ms sleep wakes: the loop's own delay for any task
                    while not lag_done.is_set():
                        at = time.monotonic() + 0.001
                        await trio.sleep(0.001)
                        lags.append(time.monotonic() - at)

                if probe:
                    nursery.start_soon(loop_lag)
                for name in clients:
                    children[name] = await start_child(f"--{name}-process", service.url)
                await trio.sleep(WARM_UP_S)
                # what one full collection costs this process now (best of 3, CPU time)
                full = []
                for _ in range(3):
                    c0 = time.thread_time()
                    gc.collect()
                    full.append(time.thread_time() - c0)
                watch.full_collect_ms = round(min(full) * 1e3, 2)
                watch.tracked, watch.frozen = len(gc.get_objects()), gc.get_freeze_count()
                gc.callbacks.append(watch)
                if probe:
                    trio.lowlevel.add_instrument(steps)
                t0 = time.monotonic()
                sched0 = _schedstat()
                threads0 = _threads_cpu()
                lags.clear()
                load0 = os.getloadavg()[0]
                await trio.sleep(seconds)
                end = time.monotonic()
                sched = [b - a for a, b in zip(sched0, _schedstat(), strict=True)]
                threads = {
                    tid: round((ns - threads0.get(tid, 0)) / 1e9 / (time.monotonic() - t0) * 100, 1)
                    for tid, ns in _threads_cpu().items()
                }
                lag_done.set()
                steps.on = False
                gc.callbacks.remove(watch)
                for name, child in list(children.items()):
                    arrivals[name] = json.loads((await stop_child(child)).decode() or "[]")
                    del children[name]
                sent = await _send_log(urls, t0, end)
                recording.cancel()
                service.stop.set()
                trio.SocketStream.send_all = send_all  # type: ignore[method-assign]
    finally:
        hog_stop.set()
        for process in (sim, rows_sim):
            if process is not None:
                process.kill()
                await process.wait()
        for child in children.values():
            child.kill()
            await child.wait()
    by_float = {(v, s, o, float(c)): t for (v, s, o, c), t in sent.items() if v == venue}
    result: dict[str, Any] = {
        "symbols": count,
        "rate": rate,
        "load": round(load0, 2),
        "switch_interval_ms": getattr(feedd.service, "SWITCH_INTERVAL_S", 0.005) * 1e3,
        "forming_every_ms": feedd.web.live.FORMING_EVERY_S * 1e3,
        "hog_ms": hog_ms,
        "writer_rate": writer_rate,
        "sent": len(by_float),
        "gc": watch.summary(),
        # the event loop thread over the window: on CPU, and runnable but waiting for one
        "loop_thread_pct": {
            "on_cpu": round(sched[0] / 1e9 / (end - t0) * 100, 1),
            "waiting_for_cpu": round(sched[1] / 1e9 / (end - t0) * 100, 1),
        },
        # every thread of this process (the loop's and the writer's among them): % of a CPU
        "threads_cpu_pct": {k: v for k, v in threads.items() if v >= 0.5},
        "loop_lag": percentiles(lags),
        "long_steps": steps.summary(),
        "frame_to_ingest": percentiles(
            [ingested[k] - t for k, t in by_float.items() if k in ingested]
        ),
        "ingest_to_hub": percentiles(
            [published[k] - ingested[k] for k in by_float if k in published and k in ingested]
        ),
        # time between the hub's forming messages (bursts come every 10 ms at 20 symbols)
        "hub_publish_gap": percentiles(
            [b - a for a, b in itertools.pairwise(publishes) if t0 <= a and b <= end]
        ),
        "hub_to_socket": percentiles(
            [on_socket[k] - published[k] for k in by_float if k in published and k in on_socket]
        ),
    }
    for name, rows in arrivals.items():
        seen = [(tuple(r[:4]), r[4]) for r in rows if tuple(r[:4]) in by_float]
        result[f"frame_to_{name}"] = percentiles([now - by_float[k] for k, now in seen])
        result[f"ingest_to_{name}"] = percentiles(
            [now - ingested[k] for k, now in seen if k in ingested]
        )
        result[f"socket_to_{name}"] = percentiles(
            [now - on_socket[k] for k, now in seen if k in on_socket]
        )
    return result


def _floats(text: str | None) -> list[float | None]:
    return [None] if text is None else [float(v) for v in text.split(",")]


async def run_all(args: argparse.Namespace) -> None:
    # Settings to compare run alternately, so that each sees the same drift of the machine.
    combos = list(
        itertools.product(
            _floats(args.switch_interval),
            _floats(args.forming_every),
            _floats(args.hog_ms),
            args.writer.split(","),
        )
    )
    for _ in range(args.runs):
        for switch, forming, hog_ms, writer in combos:
            if switch is not None:
                feedd.service.SWITCH_INTERVAL_S = switch / 1e3
            if forming is not None:
                feedd.web.live.FORMING_EVERY_S = forming / 1e3
                # 0: no grouping at all, not even the floor per client
                feedd.web.live.FORMING_SENDS_PER_S = 1000.0 if forming else float("inf")
            row = await measure(
                args.symbols,
                args.seconds,
                args.rate,
                args.clients.split(","),
                args.probe,
                hog_ms or 0.0,
                args.writer_rate,
                writer,
            )
            print(json.dumps({"writer": writer, **row}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default="bare,tws", help="bare, tws, or both")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also time the hub, socket sends, loop lag and long task steps (costs the loop"
        " CPU: compare figures without it)",
    )
    parser.add_argument(
        "--switch-interval", help="ms, comma-separated to compare (feedd.service.SWITCH_INTERVAL_S)"
    )
    parser.add_argument(
        "--forming-every", help="ms, comma-separated to compare (live.FORMING_EVERY_S)"
    )
    parser.add_argument(
        "--hog-ms",
        help="ms of pure Python every 50 ms in another thread (a busy writer's stand-in),"
        " comma-separated to compare",
    )
    parser.add_argument(
        "--writer-rate",
        type=float,
        default=0.0,
        help="closed candles per second from a second simulator (Bybit): rows for the writer",
    )
    parser.add_argument(
        "--writer",
        default="thread",
        help="where the store writer runs (storage.writer), comma-separated to compare:"
        " thread, process",
    )
    parser.add_argument("--bare-process", nargs=1, help=argparse.SUPPRESS)
    parser.add_argument("--tws-process", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_process:
        run_bare(args.bare_process[0])
    elif args.tws_process:
        trio.run(run_ws_timer, args.tws_process[0])  # the trio-websocket client
    else:
        trio.run(run_all, args)


if __name__ == "__main__":
    main()
