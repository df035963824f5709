"""A symbol that is not ASCII, end to end: the simulated Binance lists and streams 币安人生USDT;
feedd collects it and serves it back over /ohlcv (JSON and CSV), /exchangeSymbols and feedctl.
The same run checks that a frame of another channel counts as ignored, not as a parse error.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import quote

import pytest
import trio
from e2e import running_feedd, wait_for_truth, wait_on_commits

from feedd.feedctl import main
from feedd.intervals import MINUTE_MS
from feedd.sim.symbols import UNICODE_SYMBOL

EX = "binance_futures"
SYMBOLS = ["BTCUSDT", UNICODE_SYMBOL]
#: a well-formed push of a channel feedd never subscribes to
AGG_TRADE = (
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1772462100021,"a":2741958612,'
    b'"s":"BTCUSDT","p":"94221.80","q":"0.012","f":7184541841,"l":7184541843,'
    b'"T":1772462100019,"m":false}}'
)


async def feedctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await trio.to_thread.run_sync(main, list(argv), abandon_on_cancel=True)
    return code, capsys.readouterr().out


async def test_unicode_symbol_collected_and_served(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with running_feedd(tmp_path, {EX: SYMBOLS}) as (sim, service, client):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        since, until = start - 3 * MINUTE_MS, start - MINUTE_MS
        with trio.fail_after(60):
            await wait_for_truth(service, sim, tmp_path / "ohlcv.db", EX, SYMBOLS, since, until)
        stats = service.state.supervisor.stats[EX]
        # The window's candles may all come from REST before the stream's first push:
        # wait for that push, which is what turns the stream live.
        with trio.fail_after(60):
            await wait_on_commits(
                service, lambda: stats.stream_states.get(f"{UNICODE_SYMBOL} 1m") == "live"
            )

        # The API path carries the symbol percent-encoded as UTF-8.
        path = f"/ohlcv/{EX}/{quote(UNICODE_SYMBOL)}/1m"
        window = {"since": since, "until": until}
        as_json = await client.get(path, params=window)
        as_csv = await client.get(path, params={**window, "format": "csv"})
        listed = (await client.get(f"/exchangeSymbols/{EX}")).json()
        status = (await client.get("/status")).json()
        code, ctl_json = await feedctl(
            capsys, "--url", service.url, "--json", "ohlcv", EX, UNICODE_SYMBOL.lower(), "1m",
            "--since", str(since), "--until", str(until),
        )  # fmt: skip
        ctl_code, ctl_csv = await feedctl(
            capsys, "--url", service.url, "ohlcv", EX, UNICODE_SYMBOL, "1m", "--csv",
            "--since", str(since), "--until", str(until),
        )  # fmt: skip

        # A push of a channel feedd never asked for is counted as ignored, not as an error.
        errors_before = stats.parse_errors
        assert sim.venues[EX].send_all_nowait(AGG_TRADE) >= 1
        with trio.fail_after(30):
            await wait_on_commits(service, lambda: stats.ignored_frames >= 1)
        assert stats.parse_errors == errors_before
        metrics = (await client.get("/metrics")).text

    truth = sim.truth(EX, UNICODE_SYMBOL, "1m", since, until)
    assert len(truth) == 3
    assert as_json.status_code == 200
    assert [(c["open_time"], c["close"], c["volume"]) for c in as_json.json()] == [
        (t.open_time, float(t.close), float(t.volume)) for t in truth
    ]
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    disposition = as_csv.headers["content-disposition"]
    assert "filename*=UTF-8''" + quote(f"{EX}-{UNICODE_SYMBOL}-1m.csv") in disposition
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(int(r["open_time"]), float(r["close"])) for r in rows] == [
        (t.open_time, float(t.close)) for t in truth
    ]
    assert UNICODE_SYMBOL in listed["listed"] and listed["configured"] == SYMBOLS
    [worker] = [e for e in status["exchanges"] if e["name"] == EX]
    assert {(s["symbol"], s["state"]) for s in worker["symbols"]} >= {(UNICODE_SYMBOL, "live")}
    assert "ignored_frames" in worker
    assert code == 0 and [c["open_time"] for c in json.loads(ctl_json)] == [
        t.open_time for t in truth
    ]
    assert ctl_code == 0 and ctl_csv == as_csv.text
    assert f'feedd_exchange_ignored_frames_total{{exchange="{EX}"}}' in metrics
