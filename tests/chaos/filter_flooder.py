"""The filter flood of ``test_filter_flood``, in a process of its own so that its work does
not slow the test's event loop (which runs the simulator and the measuring client).

    python tests/chaos/filter_flooder.py PORT CONNECTIONS

opens CONNECTIONS /ws clients, each sending candle subscriptions for new symbols as fast as
its socket takes them while it reads the answers; when stdin closes it prints one JSON line
with the answers counted by type and error text.
"""

from __future__ import annotations

import sys

import orjson
import trio
import trio_websocket


async def flood(port: int, number: int, counts: dict[str, int]) -> None:
    async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False) as ws:

        async def read() -> None:
            while True:
                message = orjson.loads(await ws.get_message())
                key = message["type"]
                if key == "error":
                    key += ": " + message["error"].split(":")[0]
                counts[key] = counts.get(key, 0) + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            n = 0
            while True:
                n += 1
                message = {"op": "subscribe", "topic": "candles", "symbol": f"F{number}N{n}USDT"}
                await ws.send_message(orjson.dumps(message).decode())


async def main(port: int, connections: int) -> None:
    counts: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        for number in range(connections):
            nursery.start_soon(flood, port, number, counts)
        await trio.to_thread.run_sync(sys.stdin.read)  # flood until told
        nursery.cancel_scope.cancel()
    print(orjson.dumps(counts).decode(), flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
