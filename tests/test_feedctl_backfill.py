"""``feedctl backfill`` against a running feedd and the simulator: start and follow (piped),
--json, --detach, list, cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from test_backfill_jobs import DAY_MS, exchanges_doc, feedd_with_jobs, manager, no_archive
from test_feedctl import feedctl

from feedd.intervals import MINUTE_MS
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDD_URL", raising=False)
    monkeypatch.delenv("FEEDD_TOKEN", raising=False)


async def test_backfill_follow_list_and_cancel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line every poll when piped: the test sees progress without waiting 5 s between lines.
    monkeypatch.setattr("feedd.ctl.progress.LINE_EVERY_S", 0.0)
    settings = SimSettings(venues=("bybit_futures", "binance_futures"), history_days=5)
    async with open_simulator(settings) as sim:
        doc = exchanges_doc(sim, {}, **no_archive(sim))
        async with feedd_with_jobs(tmp_path, sim, {}, exchanges=doc) as (service, _client):
            url = ["--url", service.url]
            now = sim.now_ms()
            since, until = str(now - 3 * DAY_MS), str(now - MINUTE_MS)
            with trio.fail_after(50):
                run = await feedctl(capsys, *url, "backfill", "bybit_futures", "btcusdt",
                                    "ethusdt", "--since", since, "--until", until)  # fmt: skip
            assert run.code == 0, run.err
            assert "Ctrl-C stops following, not the job" in run.err
            lines = [line for line in run.err.splitlines() if "rows/s" in line]
            assert lines and "\r" not in run.err, "piped: plain progress lines"
            assert "8,638/8,638 rows" in lines[-1] and "100.0%" in lines[-1]
            assert "rows stored" in run.out and " done:" in run.out

            run = await feedctl(capsys, *url, "--json", "backfill", "bybit_futures", "SOLUSDT",
                                "--since", since, "--until", until)  # fmt: skip
            final = json.loads(run.out)
            assert run.code == 0 and final["state"] == "done" and final["rows_done"] == 4319

            run = await feedctl(capsys, *url, "backfill", "binance_futures", "BTCUSDT",
                                "--since", since, "--until", until, "--detach")  # fmt: skip
            job_id = run.out.strip()
            assert run.code == 0 and len(job_id) == 8
            run = await feedctl(capsys, *url, "backfill", "cancel", job_id)
            assert run.code == 0
            assert f"job {job_id} cancelled" in run.out or "removed" in run.out
            run = await feedctl(capsys, *url, "backfill", "list")
            assert run.code == 0 and job_id in run.out and "STATE" in run.out
            assert len(run.out.splitlines()) == 4  # a header and three jobs
            assert manager(service).jobs[job_id].state in ("cancelled", "done")

            run = await feedctl(capsys, *url, "backfill", "cancel", "nope")
            assert run.code == 1 and "no backfill job" in run.err
            run = await feedctl(capsys, *url, "backfill", "bybit_futures", "BTCUSDT")
            assert run.code == 2 and "--since is required" in run.err
            run = await feedctl(capsys, *url, "backfill", "kraken", "BTCUSDT", "--since", since)
            assert run.code == 1 and "unknown exchange" in run.err
