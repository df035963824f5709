"""CPU per row of feedd's ingest hot path in one process, without sockets: parse Binance
kline frames, fold them as the writer does, upsert them into SQLite in batches.

``scripts/bench_ingest.py`` measures the whole service against a reference reader, but on a
shared machine its figures drift by 2x; this one counts process CPU time (not wall time) of
each stage alone and keeps the best of several runs, so a change to parsing or the writer
shows up even on a busy box. Every frame closes a new candle (as ``--bench-closed`` does),
600 series, batches of 300 rows (the size 50 ms holds at ~6,000 rows/s).

    python scripts/bench_hotpath.py                    # best of 3
    python scripts/bench_hotpath.py --runs 5 --batch 100
    PYTHONPATH=/path/to/other/checkout python scripts/bench_hotpath.py   # compare a version
    python scripts/bench_hotpath.py --batch 2500 --floor   # what SQLite alone would cost

``--floor`` also times SQLite's share alone: the write stage's rows already encoded, appended
in the same commits by a plain multi-row INSERT into a table keyed by (open time, series), so
every commit only fills pages at its end. No row building, no coverage runs, no move into the
series-major ``candle_rows`` that readers need: a lower bound on any writer storing every row.
"""

from __future__ import annotations

import argparse
import itertools
import operator
import random
import tempfile
import time
from pathlib import Path

from feedd.candle import Candle
from feedd.exchanges import binance
from feedd.store import schema
from feedd.store.codec import encode
from feedd.store.database import ROWS_PER_STATEMENT, Database
from feedd.store.state import Pending

T0 = 1_700_000_000_000
FRAME = (
    '{"stream":"%s@kline_1m","data":{"e":"kline","E":%d,"s":"%s","k":{"t":%d,"T":%d,"s":"%s",'
    '"i":"1m","f":1,"L":2,"o":"%s","c":"%s","h":"%s","l":"%s","v":"%.3f","n":%d,"x":true,'
    '"q":"%.4f","V":"1","Q":"1","B":"0"}}}'
)


def frames(series: int, count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        symbol = f"S{i % series}USDT"
        open_time = T0 + (i // series) * 60_000
        price = rng.uniform(0.01, 90_000)
        o, h, low, c = (f"{price * (1 + rng.uniform(-0.01, 0.01)):.2f}" for _ in range(4))
        out.append(
            FRAME
            % (symbol.lower(), open_time, symbol, open_time, open_time + 59_999, symbol, o, c,
               h, low, rng.uniform(0, 1e5), rng.randrange(10_000), rng.uniform(0, 1e8))
        )  # fmt: skip
    return out


def run(texts: list[str], batch: int) -> tuple[list[list[Candle]], float, float, float]:
    """The batches written, and seconds of CPU per row: parse, fold, write."""
    cpu = time.process_time
    start = cpu()
    candles = [c for text in texts for c in binance.parse_frame(text) if isinstance(c, Candle)]
    parsed = cpu()
    batches: list[list[Candle]] = []
    for i in range(0, len(candles), batch):
        pending = Pending()
        for j in range(i, min(i + batch, len(candles)), 50):  # a session's burst at a time
            pending.add(candles[j : j + 50])
        batches.append(list(pending.take().values()))  # the writer commits it as it is
    folded = cpu()
    with tempfile.TemporaryDirectory() as folder:
        db = Database.open(Path(folder) / "bench.db")
        begin = cpu()
        for rows in batches:
            db.write(rows)
        written = cpu()
        db.close()
    n = len(texts)
    return batches, (parsed - start) / n, (folded - parsed) / n, (written - begin) / n


_FLOOR_TABLE = f"""CREATE TABLE floor_rows ({schema.ALL_COLUMNS},
    PRIMARY KEY (open_time, series)) WITHOUT ROWID"""


def floor(batches: list[list[Candle]]) -> float:
    """Seconds of CPU per row for SQLite alone to append ``batches``, already encoded, one
    commit each, on a connection set up as the writer's (WAL, checkpoints, page cache)."""
    ids: dict[str, int] = {}
    statements: list[tuple[list[tuple[int | None, ...]], list[tuple[int | None, ...]]]] = []
    n = ROWS_PER_STATEMENT
    for candles in batches:
        rows: list[tuple[int | None, ...]] = [
            (c.open_time, ids.setdefault(c.symbol, len(ids)), encode(c.open), encode(c.high),
             encode(c.low), encode(c.close), encode(c.volume), encode(c.quote_volume),
             c.trades, 1)
            for c in candles
        ]  # fmt: skip
        rows.sort(key=operator.itemgetter(0, 1))
        whole = len(rows) - len(rows) % n
        chunks = [tuple(itertools.chain.from_iterable(rows[i : i + n])) for i in range(0, whole, n)]
        statements.append((chunks, rows[whole:]))
    columns = "open_time, series, open, high, low, close, volume, quote_volume, trades, flags"
    one = f"INSERT INTO floor_rows ({columns}) VALUES ({', '.join('?' * 10)})"
    many = f"INSERT INTO floor_rows ({columns}) VALUES " + ", ".join(
        [f"({', '.join('?' * 10)})"] * n
    )
    with tempfile.TemporaryDirectory() as folder:
        conn = schema.connect_writer(Path(folder) / "floor.db")
        conn.execute(_FLOOR_TABLE)
        begin = time.process_time()
        for chunks, rest in statements:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(many, chunks)
            conn.executemany(one, rest)
            conn.execute("COMMIT")
        spent = time.process_time() - begin
        conn.close()
    return spent / sum(len(candles) for candles in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=600)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time SQLite alone appending the same rows, already encoded",
    )
    args = parser.parse_args()
    texts = frames(args.series, args.rows)
    best = [float("inf")] * 4
    for _ in range(args.runs):
        batches, *stages = run(texts, args.batch)
        stages.append(floor(batches) if args.floor else 0.0)
        best = [min(a, b) for a, b in zip(best, stages, strict=True)]
    parse, folding, write, sqlite_alone = (x * 1e6 for x in best)
    print(
        f"us of CPU per row (best of {args.runs}): parse {parse:.2f}  fold {folding:.2f}"
        f"  write {write:.2f}  total {parse + folding + write:.2f}"
        + (f"  (SQLite alone: {sqlite_alone:.2f})" if args.floor else "")
    )


if __name__ == "__main__":
    main()
