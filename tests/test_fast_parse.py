"""The typed fast path of each venue's frame parser answers exactly as its general path.

A frame the fast path decodes must give the events the general path gives; one it does not
take falls through to the general path, so errors read the same too. Mutations of real kline
frames (retyped, dropped and extra fields at any depth, duplicated keys, lone surrogates,
nasty values) check both.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedd.errors import ParseError
from feedd.exchanges import binance, bybit, okx
from feedd.exchanges.common import parse_guard

FIXTURES = Path(__file__).parent / "fixtures"
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)
CASES = {
    "binance": (binance, "binance/ws_candle_combined.json", '"x":'),
    "bybit": (bybit, "bybit/ws_candle_closed.json", '"confirm":'),
    "okx": (okx, "okx/ws_candle_closed.json", '"channel":'),
}

NASTY = st.sampled_from(
    [
        None, True, False, 0, -1, 2**63 - 1, 2**63, 2**64, -(2**63), 1.0, 1e300, "", "1", "1.5",
        "-1", "1e5", "١٢٣", "9" * 40, "9" * 41, "1.", ".1", "\ud800", "kline", "1m", "7m",
        "kline.1.BTCUSDT", "candle1m", "candle7m", "subscribe", "error", "0", [], {}, [[]],
        ["1", "2"],
    ]
)  # fmt: skip

Path_ = tuple[str | int, ...]


def outcome(parse: Any, text: str) -> object:
    try:
        return ("events", parse(text))
    except ParseError as exc:
        # parse_guard names the function it guards: the same error either way.
        return ("error", str(exc).replace("_parse_general:", "parse_frame:"))


def _paths(doc: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    yield prefix
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, fixture: str, duplicate: str) -> str:
    doc = json.loads((FIXTURES / fixture).read_text())
    for _ in range(draw(st.integers(0, 3))):
        doc = copy.deepcopy(doc)
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent["event"] = draw(NASTY)  # OKX: an event key makes any frame an event
        else:
            parent[path[-1]] = draw(NASTY)
    # ensure_ascii off: lone surrogates reach the parser as they would from a str frame
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    if draw(st.booleans()):  # a duplicated key: the last one counts, for both decoders
        text = text.replace(duplicate, duplicate + '"1",' + duplicate, 1)
    return text


@pytest.mark.parametrize("venue", sorted(CASES))
def test_fast_path_takes_the_real_frame(venue: str) -> None:
    module, fixture, _ = CASES[venue]
    text = (FIXTURES / fixture).read_text()
    general = parse_guard(module._parse_general)
    events = module.parse_frame(text)
    assert events and events == general(text)


@pytest.mark.parametrize("venue", sorted(CASES))
def test_fast_path_answers_as_the_general_path(venue: str) -> None:
    module, fixture, duplicate = CASES[venue]
    general = parse_guard(module._parse_general)

    @FUZZ
    @given(mutated(fixture, duplicate))
    def check(text: str) -> None:
        assert outcome(module.parse_frame, text) == outcome(general, text)

    check()


def test_fast_paths_decode_typed() -> None:
    """The frames as the venues send them go through the typed decoders, not the fallback."""
    assert binance._COMBINED_KLINE.decode(
        (FIXTURES / "binance/ws_candle_combined.json").read_text()
    ).data.k.closed
    assert bybit._KLINE_FRAME.decode((FIXTURES / "bybit/ws_candle_closed.json").read_text()).data
    assert okx._CANDLE_FRAME.decode((FIXTURES / "okx/ws_candle_closed.json").read_text()).data
