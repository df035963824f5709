"""The symbol rule (feedd/symbols.py) and its users: config, API path parameters, download
names and feedctl's request paths."""

from __future__ import annotations

import pytest

from feedd import config
from feedd.ctl import text
from feedd.ctl.client import api_path
from feedd.errors import ConfigError
from feedd.symbols import MAX_BASE_CHARS, is_symbol
from feedd.web import params
from feedd.web.errors import ApiError

VALID = [
    "BTCUSDT",
    "1000PEPEUSDT",
    "1INCHUSDT",
    "USDTUSDT",
    "币安人生USDT",  # listed by Binance (PROTOCOLS.md section 7)
    "我踏马来了USDT",
    "ミームUSDT",  # katakana with the prolonged sound mark (Lm)
    "\u0411\u0422\u041aUSDT",  # Cyrillic capitals (БТК)
    "ⅫUSDT",  # an upper-case Roman numeral (Nl)
    "A" * MAX_BASE_CHARS + "USDT",
]
INVALID = [
    "",
    "USDT",  # no base
    "BTCUSD",
    "btcusdt",  # lowercase ASCII: BTCUSDT is the symbol
    "BTCusdt",
    "币安人生usdt",
    "\u0431\u0442\u043aUSDT",  # lowercase Cyrillic
    "ßUSDT",  # lowercase letter without an upper-case form of one character
    "ǅUSDT",  # titlecase
    "ⅻUSDT",  # a lowercase Roman numeral (Nl, but lowercase)
    "BTC/USDT",
    "../USDT",
    "..USDT",
    "BTC%2FUSDT",
    "BTC%USDT",
    "BTC-USDT",
    "BTC_USDT",
    "BTC.USDT",
    "BTC USDT",
    " BTCUSDT",
    "BTC\tUSDT",
    "BTC\nUSDT",
    "BTC\x00USDT",
    "BTC\u200bUSDT",  # zero-width space (Cf)
    "\u200fBTCUSDT",  # right-to-left mark
    "BTC\u0301USDT",  # a combining mark: may be invisible
    "BTC\ufe0fUSDT",  # a variation selector
    "🐸USDT",  # a symbol (So), not a letter
    "BTCUSDT\n",
    "A" * (MAX_BASE_CHARS + 1) + "USDT",
]


@pytest.mark.parametrize("symbol", VALID)
def test_valid_symbols(symbol: str) -> None:
    assert is_symbol(symbol)
    assert params.symbol(symbol) == symbol
    document = {"exchanges": {"binance_futures": {"symbols": [symbol]}}}
    assert config.parse(document).config.exchanges["binance_futures"].symbols == (symbol,)


@pytest.mark.parametrize("symbol", INVALID)
def test_invalid_symbols(symbol: str) -> None:
    assert not is_symbol(symbol)
    with pytest.raises(ApiError) as info:
        params.symbol(symbol)
    assert info.value.status == 400
    document = {"exchanges": {"binance_futures": {"symbols": [symbol]}}}
    with pytest.raises(ConfigError, match="malformed symbol"):
        config.parse(document)


@pytest.mark.parametrize("value", [None, 5, b"BTCUSDT", ["BTCUSDT"]])
def test_non_strings_are_not_symbols(value: object) -> None:
    assert not is_symbol(value)


def test_download_name() -> None:
    assert params.attachment("binance_futures-BTCUSDT-1m.csv") == (
        'attachment; filename="binance_futures-BTCUSDT-1m.csv"'
    )
    disposition = params.attachment("binance_futures-币安人生USDT-1m.csv")
    assert disposition.isascii()
    assert disposition == (
        'attachment; filename="binance_futures-____USDT-1m.csv"; '
        "filename*=UTF-8''binance_futures-%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT-1m.csv"
    )


def test_feedctl_paths_encode_each_segment() -> None:
    assert api_path("ohlcv", "binance_futures", "BTCUSDT", "1m") == (
        "/ohlcv/binance_futures/BTCUSDT/1m"
    )
    assert api_path("ohlcv", "binance_futures", "币安人生USDT", "1m") == (
        "/ohlcv/binance_futures/%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT/1m"
    )
    # A slash, question mark or percent sign stays inside its segment, to be refused there.
    assert api_path("ohlcv", "x", "BTC/USDT?a=1#f%", "1m") == (
        "/ohlcv/x/BTC%2FUSDT%3Fa%3D1%23f%25/1m"
    )


def test_feedctl_tables_align_wide_characters() -> None:
    table = text.table(["SYMBOL", "LISTED"], [["BTCUSDT", "yes"], ["币安人生USDT", "yes"]])
    lines = table.splitlines()
    # Each Han character takes two terminal columns: the LISTED column lines up.
    assert [text.width(line[: line.rindex("yes")]) for line in lines[1:]] == [14, 14]
    assert lines[2] == "币安人生USDT  yes"
