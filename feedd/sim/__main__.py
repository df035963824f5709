"""``python -m feedd.sim``: run the simulator in its own process and print one JSON line per
venue with the URLs to point feedd at; ``--fault`` schedules misbehaviour for a demo.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import attrs
import orjson
import trio

from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import VENUES, SimSettings


@attrs.frozen(slots=True)
class ScheduledFault:
    """``VENUE:ACTION[:k=v,…]@T[/P]``: apply at T seconds after start, then every P seconds."""

    venue: str
    spec: dict[str, Any]
    at_s: float
    every_s: float | None


def _value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # a bare word such as a symbol name


def parse_fault(text: str) -> ScheduledFault:
    body, _, timing = text.partition("@")
    parts = body.split(":", 2)
    if len(parts) < 2 or parts[0] not in VENUES:
        raise argparse.ArgumentTypeError(f"expected VENUE:ACTION[:k=v,...]@T[/P], got {text!r}")
    spec: dict[str, Any] = {"action": parts[1]}
    if len(parts) == 3 and parts[2]:
        for pair in parts[2].split(","):
            key, _, raw = pair.partition("=")
            spec[key] = _value(raw)
    at, _, every = (timing or "0").partition("/")
    try:
        return ScheduledFault(parts[0], spec, float(at), float(every) if every else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad timing in {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m feedd.sim", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed", type=float, default=1.0, help="sim ms per real ms (60: 1 min/s)")
    p.add_argument("--start-ms", type=int, default=None, help="sim start (default: now)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port-base", type=int, default=0, help="venue i on PORT+i (0: ephemeral)")
    p.add_argument("--venues", default=",".join(VENUES), help="comma-separated venue names")
    p.add_argument("--update-interval", type=float, default=0.25, help="real s between updates")
    p.add_argument("--ping-interval", type=float, default=180.0, help="Binance ping period, s")
    p.add_argument("--pong-timeout", type=float, default=600.0)
    p.add_argument("--max-inbound", type=int, default=10, help="Binance msgs/s (0: no limit)")
    p.add_argument("--bybit-idle", type=float, default=600.0)
    p.add_argument("--okx-idle", type=float, default=30.0)
    p.add_argument("--symbols", type=int, default=600, help="size of the instrument lists")
    p.add_argument("--unlisted", default="", help="comma-separated symbols to delist")
    p.add_argument("--history-days", type=float, default=30.0, help="candle history kept")
    p.add_argument("--lifetime", type=float, default=None, help="close connections after s")
    p.add_argument(
        "--hole",
        type=parse_hole,
        action="append",
        default=[],
        metavar="SYMBOL:FIRST:LAST",
        help="no candle of SYMBOL opens in [FIRST, LAST] (sim ms) on any venue: REST, archive,"
        " live and truth leave it out (repeatable)",
    )
    p.add_argument("--bench", action="store_true", help="benchmark frames from templates")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="benchmark: total updates/s per venue (implies --bench; 0 = unpaced)",
    )
    p.add_argument(
        "--bench-closed",
        action="store_true",
        help="benchmark: every frame a new closed candle, so every update is a new row",
    )
    p.add_argument(
        "--fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="VENUE:ACTION[:k=v,...]@T[/P]",
        help="e.g. binance_futures:drop_connections@30/60, okx_futures:stall:seconds=5@20",
    )
    return p


def settings_from(args: argparse.Namespace) -> SimSettings:
    return SimSettings(
        seed=args.seed,
        speed=args.speed,
        start_ms=args.start_ms,
        venues=tuple(v for v in args.venues.split(",") if v),
        host=args.host,
        port_base=args.port_base,
        update_interval_s=args.update_interval,
        ping_interval_s=args.ping_interval,
        pong_timeout_s=args.pong_timeout,
        max_inbound_per_s=args.max_inbound,
        bybit_idle_s=args.bybit_idle,
        okx_idle_s=args.okx_idle,
        universe_size=args.symbols,
        unlisted=frozenset(s for s in args.unlisted.split(",") if s),
        bench=args.bench or args.rate is not None or args.bench_closed,
        bench_closed=args.bench_closed,
        bench_rate=args.rate or 0.0,
        lifetime_s=args.lifetime,
        history_days=args.history_days,
        holes=tuple(args.hole),
    )


def parse_hole(text: str) -> tuple[str, int, int]:
    """``SYMBOL:FIRST:LAST`` (open times in ms, LAST inclusive) for ``--hole``."""
    symbol, _, span = text.partition(":")
    first, _, last = span.partition(":")
    if not (symbol and first.isdigit() and last.isdigit()) or int(first) > int(last):
        raise argparse.ArgumentTypeError(f"expected SYMBOL:FIRST:LAST in ms, got {text!r}")
    return symbol, int(first), int(last)


async def run_fault(sim: Simulator, fault: ScheduledFault) -> None:
    await trio.sleep(fault.at_s)
    while True:
        result = sim.venues[fault.venue].faults.apply(fault.spec)
        line = {
            "fault": fault.spec["action"],
            "exchange": fault.venue,
            "result": result,
            "sim_ms": sim.now_ms(),
        }
        print(orjson.dumps(line).decode(), file=sys.stderr, flush=True)
        if fault.every_s is None:
            return
        await trio.sleep(fault.every_s)


async def run(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    for fault in args.fault:
        if fault.venue not in settings.venues:
            raise SystemExit(f"--fault names {fault.venue}, which is not running")
    async with open_simulator(settings) as sim, trio.open_nursery() as nursery:
        for line in sim.urls():
            print(orjson.dumps(line).decode(), flush=True)
        for fault in args.fault:
            nursery.start_soon(run_fault, sim, fault)
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        trio.run(run, args)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
