"""The console's cluster panel in a real browser (Debian's Chromium, as tests/test_browser.py):
this node listed, another node that fell silent marked stale."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, LiveFeedd, chromium_problem

from feedd.store import nodes
from feedd.store.schema import connect_writer

_problem = chromium_problem()
if _problem is None:
    from playwright.sync_api import Browser, expect, sync_playwright

    expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if _problem is not None:
        pytest.fail(_problem, pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_cluster_panel_lists_nodes_and_marks_stale_ones(browser: Browser, tmp_path: Path) -> None:
    with LiveFeedd(tmp_path, {"binance_futures": ["BTCUSDT"]}) as feedd:
        context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=feedd.url)
        errors: list[str] = []
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        try:
            page.goto("/")
            panel = page.locator("section.cluster")
            assert feedd.service is not None and feedd.service.state.cluster is not None
            cluster = feedd.service.state.cluster
            me = panel.locator(f'tr[data-node="{cluster.identity.node_id}"]')
            expect(me).to_have_attribute("data-role", "all")
            expect(me.locator('[title="this node"]')).to_have_count(1)
            expect(panel.locator('[data-field="node-count"]')).to_have_text("1 node")
            expect(me.locator('[data-field="age"]')).to_have_text(re.compile(r"^\d+\.\ds$"))

            doc = {"role": "collector", "host": "box-b", "pid": 7, "state": "running"}
            conn = connect_writer(feedd.db)
            try:
                at = int(time.time() * 1000) - 120_000
                nodes.record(conn, "gone", orjson.dumps(doc).decode(), at)
            finally:
                conn.close()
            trio.from_thread.run(cluster.beat, trio_token=feedd._token)
            gone = panel.locator('tr[data-node="gone"]')
            expect(gone).to_have_class(re.compile(r"\bstale\b"))
            expect(gone.locator('[data-field="state"]')).to_have_text("stale")
            expect(gone).to_contain_text("box-b:7")
            expect(panel.locator('[data-field="stale-count"]')).to_have_text("1 stale")
            expect(panel.locator('[data-field="node-count"]')).to_have_text("2 nodes")
            expect(me).not_to_have_class(re.compile(r"\bstale\b"))
            page.screenshot(path=str(tmp_path / "cluster.png"))
        finally:
            context.close()
        assert errors == []
