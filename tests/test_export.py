"""Export of any range: the JSON page and its Link cursor, streamed CSV, NDJSON and Parquet
(stored and resampled), the SQL view for other tools, ``feedctl export`` and ``feedd.client``.

A series the running feedd does not collect is written into its database before it starts,
so every format is compared with a known truth: 12,000 minutes with holes, REST and live
candles, values with trailing zeros and up to 8 decimals, missing trade counts.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio
from e2e import running_feedd
from hypothesis import given
from hypothesis import strategies as st
from test_feedctl import feedctl

from feedd.client import FeeddClient
from feedd.intervals import HOUR_MS, MINUTE_MS
from feedd.service import Service
from feedd.store.codec import decode_str, encode
from feedd.store.export import COLUMNS, decimal_text
from feedd.store.schema import FLAG_CLOSED, FLAG_REST, connect_writer

EX, SYMBOL = "binance_futures", "ETHUSDT"
T0 = 1_700_000_040_000 // HOUR_MS * HOUR_MS  # an hour's start
MINUTES = 12_000
HOLES = {range(100, 160), range(5_000, 5_001), range(9_000, 9_300)}
URL = f"/ohlcv/{EX}/{SYMBOL}"


def decimal(rng: random.Random, whole: int, places_from: tuple[int, ...] = (0, 1, 2, 3, 8)) -> str:
    # Mantissas stay below 2**53, where the stored float is the correctly rounded one.
    places = rng.choice(places_from)
    text = str(rng.randrange(whole))
    if places:
        text += "." + "".join(rng.choice("0123456789") for _ in range(places))
    return text


def truth() -> list[dict[str, Any]]:
    """The stored rows as the CSV export must write them (exact decimal text)."""
    rng = random.Random(7)
    rows = []
    for n in range(MINUTES):
        if any(n in hole for hole in HOLES):
            continue
        closed = n < MINUTES - 1
        rows.append(
            {
                "open_time": T0 + n * MINUTE_MS,
                **{k: decimal(rng, 100_000) for k in ("open", "high", "low", "close")},
                "volume": decimal(rng, 1000),
                "quote_volume": decimal(rng, 10**8, (0, 2, 5)),
                "trades": None if n % 7 == 0 else rng.randrange(5000),
                "closed": closed,
                "source": "rest" if n < 6000 else "ws",
            }
        )
    return rows


TRUTH = truth()


def prefill(db: Path) -> None:
    conn = connect_writer(db)
    conn.execute(
        "INSERT INTO series (exchange, symbol, interval) VALUES (?, ?, '1m')", (EX, SYMBOL)
    )
    (series,) = conn.execute("SELECT id FROM series").fetchone()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO candle_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                series,
                r["open_time"],
                *(encode(r[k]) for k in COLUMNS[1:7]),
                r["trades"],
                (FLAG_CLOSED if r["closed"] else 0) | (FLAG_REST if r["source"] == "rest" else 0),
            )
            for r in TRUTH
        ],
    )
    conn.execute("COMMIT")
    conn.close()


def as_floats(row: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if k in COLUMNS[1:7] else v for k, v in row.items()}


FLOAT_TRUTH = [as_floats(r) for r in TRUTH]


@asynccontextmanager
async def exporting_feedd(tmp_path: Path) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    prefill(tmp_path / "ohlcv.db")
    async with running_feedd(tmp_path, {EX: ["BTCUSDT"]}, bootstrap_load=5) as (_, service, client):
        yield service, client


async def json_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[Any]:
    """Every row, following the Link header from page to page."""
    rows: list[Any] = []
    url: str | None = path
    query: dict[str, Any] | None = params
    while url is not None:
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        rows += response.json()
        link = response.links.get("next") or response.links.get("prev")
        url, query = (link["url"], None) if link else (None, None)
    return rows


def parse_csv(text: str) -> list[dict[str, Any]]:
    def typed(row: dict[str, str]) -> dict[str, Any]:
        return {
            **row,
            "open_time": int(row["open_time"]),
            "trades": int(row["trades"]) if row["trades"] else None,
            "closed": {"true": True, "false": False}[row["closed"]],
        }

    return [typed(r) for r in csv.DictReader(io.StringIO(text))]


def parse_parquet(data: bytes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(pa.BufferReader(data)).to_pylist()
    return rows


async def test_every_format_equals_the_truth(tmp_path: Path) -> None:
    async with exporting_feedd(tmp_path) as (_service, client):
        pages = await json_pages(client, f"{URL}/1m", since=0, limit=5000)
        assert pages == FLOAT_TRUTH
        exported = await client.get(f"{URL}/1m", params={"format": "csv"})
        assert exported.headers["content-type"].startswith("text/csv")
        disposition = exported.headers["content-disposition"]
        assert disposition == 'attachment; filename="binance_futures-ETHUSDT-1m.csv"'
        assert parse_csv(exported.text) == TRUTH  # the exact decimal text that was stored
        ndjson = await client.get(f"{URL}/1m", params={"format": "ndjson"})
        assert [orjson.loads(line) for line in ndjson.content.splitlines()] == FLOAT_TRUTH
        parquet = await client.get(f"{URL}/1m", params={"format": "parquet"})
        assert parse_parquet(parquet.content) == FLOAT_TRUTH

        # a window, and a limit without since (the newest rows, as the JSON page)
        since, until = TRUTH[50]["open_time"], TRUTH[7000]["open_time"]
        window = [r for r in TRUTH if since <= r["open_time"] <= until]
        text = (await client.get(f"{URL}/1m", params={"format": "csv", "since": since,
                                                         "until": until})).text  # fmt: skip
        assert parse_csv(text) == window
        newest = await client.get(f"{URL}/1m", params={"format": "csv", "limit": 3})
        assert parse_csv(newest.text) == TRUTH[-3:]


async def test_resampled_intervals_stream_too(tmp_path: Path) -> None:
    async with exporting_feedd(tmp_path) as (_service, client):
        for interval in ("5m", "1h", "1d"):
            pages = await json_pages(client, f"{URL}/{interval}", since=0, limit=100)
            assert pages and T0 - 86_400_000 < pages[0]["open_time"] <= T0
            assert len({r["open_time"] for r in pages}) == len(pages)
            text = (await client.get(f"{URL}/{interval}", params={"format": "csv"})).text
            assert [as_floats(r) for r in parse_csv(text)] == pages, interval
            ndjson = (await client.get(f"{URL}/{interval}", params={"format": "ndjson"})).content
            assert [orjson.loads(line) for line in ndjson.splitlines()] == pages
            parquet = await client.get(f"{URL}/{interval}", params={"format": "parquet"})
            assert parse_parquet(parquet.content) == pages
        # the hour holding the 60-minute hole is not closed
        hours = await json_pages(client, f"{URL}/1h", since=0, limit=1000)
        assert [h["closed"] for h in hours[1:4]] == [False, False, True]


async def test_json_page_links(tmp_path: Path) -> None:
    async with exporting_feedd(tmp_path) as (_service, client):
        first = await client.get(f"{URL}/1m", params={"since": 0, "limit": 5000})
        assert first.links["next"]["url"] == (
            f"{URL}/1m?limit=5000&since={TRUTH[4999]['open_time'] + 1}"
        )
        newest = await client.get(f"{URL}/1m", params={"limit": 5000})
        assert newest.json() == FLOAT_TRUTH[-5000:]
        assert newest.links["prev"]["url"] == (
            f"{URL}/1m?limit=5000&until={TRUTH[-5000]['open_time'] - 1}"
        )
        backwards = await json_pages(client, f"{URL}/1m", limit=5000)
        assert sorted(backwards, key=lambda r: r["open_time"]) == FLOAT_TRUTH
        short = await client.get(f"{URL}/1m", params={"since": TRUTH[-10]["open_time"]})
        assert len(short.json()) == 10 and "link" not in short.headers


async def test_empty_series_and_bad_format(tmp_path: Path) -> None:
    async with exporting_feedd(tmp_path) as (_service, client):
        none = f"/ohlcv/{EX}/SOLUSDT/1m"
        assert (await client.get(none, params={"format": "csv"})).text == ",".join(COLUMNS) + "\n"
        assert (await client.get(none, params={"format": "ndjson"})).content == b""
        empty = parse_parquet((await client.get(none, params={"format": "parquet"})).content)
        assert empty == []
        bad = await client.get(f"{URL}/1m", params={"format": "xml"})
        assert bad.status_code == 400 and bad.json()["field"] == "format"
        huge = await client.get(f"{URL}/1m", params={"format": "csv", "limit": 10**10})
        assert huge.status_code == 400 and huge.json()["field"] == "limit"


async def test_sql_view_reads_real_numbers(tmp_path: Path) -> None:
    async with exporting_feedd(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / "ohlcv.db")
    rows = conn.execute(
        "SELECT open_time, open, high, low, close, volume, quote_volume, trades, closed, source,"
        " time FROM ohlcv WHERE exchange = ? AND symbol = ? AND interval = '1m'"
        " ORDER BY open_time",
        (EX, SYMBOL),
    ).fetchall()
    conn.close()
    view = [dict(zip(COLUMNS, r[:-1], strict=True)) for r in rows]
    assert [{**r, "closed": bool(r["closed"])} for r in view] == FLOAT_TRUTH
    assert rows[0][-1] == "2023-11-14T22:00:00Z"


async def test_feedctl_export_writes_a_whole_file(tmp_path: Path, capsys: Any) -> None:
    async with exporting_feedd(tmp_path) as (service, client):
        expected = (await client.get(f"{URL}/1m", params={"format": "csv"})).content
        for fmt in ("csv", "ndjson", "parquet"):
            target = tmp_path / f"out.{fmt}"
            run = await feedctl(
                capsys, "--url", service.url, "export", EX, SYMBOL, "1m", "--since",
                "2023-11-01", "--format", fmt, "-o", str(target), "--json",
            )  # fmt: skip
            assert run.code == 0, run.err
            summary = orjson.loads(run.out)
            assert summary["bytes"] == target.stat().st_size
            assert not target.with_name(target.name + ".part").exists()
            if fmt == "csv":
                assert target.read_bytes() == expected and summary["rows"] == len(TRUTH)
                # piped stderr: plain progress lines, no carriage returns
                assert "\r" not in run.err
            if fmt == "parquet":
                assert parse_parquet(target.read_bytes()) == FLOAT_TRUTH
        refused = await feedctl(
            capsys, "--url", service.url, "export", "kraken", SYMBOL, "1m", "--since", "0",
            "-o", str(tmp_path / "x.csv"),
        )  # fmt: skip
        assert refused.code == 1 and "unknown exchange" in refused.err
        assert not (tmp_path / "x.csv").exists()
        assert not (tmp_path / "x.csv.part").exists()


async def test_python_client_pages_and_frames(tmp_path: Path) -> None:
    async with exporting_feedd(tmp_path) as (service, _client):

        def use_client() -> tuple[list[dict[str, Any]], Any]:
            with FeeddClient(service.url) as feedd:
                rows = feedd.candles(EX, SYMBOL, "1m", since="2023-11-01T00:00")
                frame = feedd.dataframe(EX, SYMBOL, "1h")
                return rows, frame

        rows, frame = await trio.to_thread.run_sync(use_client)
        assert rows == FLOAT_TRUTH
        hourly = await json_pages(_client, f"{URL}/1h", since=0, limit=1000)
        assert frame.reset_index(drop=True).to_dict("records") == hourly
        assert str(frame.index[0]) == "2023-11-14 22:00:00+00:00"


@given(
    st.lists(st.tuples(st.integers(-(10**17), 10**17), st.integers(0, 15)), min_size=1, max_size=50)
)
def test_decimal_text_equals_the_codec(values: list[tuple[int, int]]) -> None:
    codes = [mantissa * 16 + places for mantissa, places in values]
    assert decimal_text(pa.array(codes, pa.int64())).to_pylist() == [decode_str(c) for c in codes]


@pytest.mark.parametrize("text", ["0", "0.00", "94172.40", "0.00000001", "-0.5", "12"])
def test_decimal_text_examples(text: str) -> None:
    assert decimal_text(pa.array([encode(text)], pa.int64())).to_pylist() == [text]


@given(
    st.integers(0, 15),
    st.lists(
        st.one_of(st.integers(-(10**17), 10**17), st.integers(-1000, 1000)), min_size=1, max_size=50
    ),
)
def test_decimal_text_of_one_scale_equals_the_codec(places: int, mantissas: list[int]) -> None:
    """A column with one scale takes the Arrow-decimal path: small values at large scales
    (which Arrow would print as 5E-8) must still read as the codec's text."""
    codes = [mantissa * 16 + places for mantissa in mantissas]
    assert decimal_text(pa.array(codes, pa.int64())).to_pylist() == [decode_str(c) for c in codes]


def test_feedd_starts_without_loading_pyarrow() -> None:
    """pyarrow is ~60 MB of feedd's resident memory (an import of feedd.service went from
    143 to 54 MB without it): it is loaded when a client first asks for an export."""
    code = "import sys, feedd.cli, feedd.service; print('pyarrow' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert found.stdout.strip() == "False"
