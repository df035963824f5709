"""The sans-IO subscription tracker: requests, acks (with and without ids), refusals, retries,
data-proven subscriptions and silent streams. Plain functions: no trio, no sockets."""

from __future__ import annotations

from pathlib import Path

import orjson

from feedd.engine.subscriptions import Rejection, Subscriptions
from feedd.exchanges import binance, bybit, okx
from feedd.exchanges.contract import Stream, SubscribeAck, SubscribeRejected

BTC = Stream("BTCUSDT", "1m")
ETH = Stream("ETHUSDT", "1m")
SOL = Stream("SOLUSDT", "1m")


def okx_streams(count: int) -> list[Stream]:
    return [Stream(f"C{i}USDT", "1m") for i in range(count)]


def okx_ack_without_id(stream: Stream) -> SubscribeAck:
    """An OKX ack shaped like ../shared/real-frames/okx/ws_subscribe_acks_public_2022-05-13.log"""
    frame = {"event": "subscribe", "arg": okx.channel_arg(stream)}
    [event] = okx.parse_frame(orjson.dumps(frame).decode())
    assert isinstance(event, SubscribeAck)
    assert event.request_id is None
    return event


def test_requests_get_fresh_ids_and_stay_pending_until_answered() -> None:
    subs = Subscriptions(binance.subscribe_requests)
    assert subs.all_answered
    first = subs.subscribe([BTC, ETH], now=0.0)
    second = subs.subscribe([SOL], now=0.0)
    ids = [r.request_id for r in first + second]
    assert len(set(ids)) == len(ids) == 2
    assert not subs.all_answered
    assert subs.subscribed_count == 0


def test_a_request_ack_subscribes_every_stream_of_it() -> None:
    subs = Subscriptions(binance.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH], now=0.0)
    [ack] = binance.parse_frame(f'{{"result":null,"id":{request.request_id}}}')
    assert subs.on_ack(ack, now=1.0) == [BTC, ETH]
    assert subs.all_answered
    assert subs.subscribed_count == 2
    assert subs.on_ack(ack, now=2.0) == []  # a repeated ack changes nothing


def test_an_ack_for_an_unknown_id_answers_nothing() -> None:
    subs = Subscriptions(binance.subscribe_requests)
    subs.subscribe([BTC], now=0.0)
    assert subs.on_ack(SubscribeAck("999"), now=1.0) == []
    assert not subs.all_answered


def test_an_ack_without_id_or_stream_answers_the_only_open_request() -> None:
    subs = Subscriptions(bybit.subscribe_requests)
    subs.subscribe([BTC, ETH], now=0.0)
    assert subs.on_ack(SubscribeAck(None), now=1.0) == [BTC, ETH]
    assert subs.all_answered


def test_an_ack_without_id_or_stream_is_ambiguous_between_two_requests() -> None:
    subs = Subscriptions(binance.subscribe_requests)
    subs.subscribe([BTC], now=0.0)
    subs.subscribe([ETH], now=0.0)
    assert subs.on_ack(SubscribeAck(None), now=1.0) == []
    assert not subs.all_answered


def test_per_stream_acks_with_id_answer_the_request_once_all_arrived() -> None:
    subs = Subscriptions(okx.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH], now=0.0)
    assert subs.on_ack(SubscribeAck(request.request_id, BTC), now=1.0) == [BTC]
    assert not subs.all_answered
    assert subs.on_ack(SubscribeAck(request.request_id, ETH), now=1.0) == [ETH]
    assert subs.all_answered


def test_the_captured_okx_ack_without_id_answers_its_request() -> None:
    subs = Subscriptions(okx.subscribe_requests)
    subs.subscribe([BTC], now=0.0)
    subs.subscribe([ETH], now=0.0)  # two open requests: the arg must tell which
    text = (Path(__file__).parent / "fixtures" / "okx" / "ws_ack_no_id.json").read_text()
    [ack] = okx.parse_frame(text.strip())
    assert ack == SubscribeAck(None, BTC)
    assert subs.on_ack(ack, now=1.0) == [BTC]
    assert subs.on_ack(okx_ack_without_id(ETH), now=1.0) == [ETH]
    assert subs.all_answered


def test_okx_acks_without_id_are_matched_on_their_arg() -> None:
    """Issue #11.4: 2022 OKX acks echo no id; each names its arg, which tells the request."""
    subs = Subscriptions(okx.subscribe_requests)
    streams = okx_streams(150)
    first, second = subs.subscribe(streams, now=0.0)  # OKX takes 100 args per request
    assert (len(first.streams), len(second.streams)) == (100, 50)
    # interleaved, and the second request's acks complete first
    order = list(second.streams) + list(first.streams[:99])
    for stream in order:
        assert subs.on_ack(okx_ack_without_id(stream), now=1.0) == [stream]
    assert not subs.all_answered  # one arg of the first request is still unacked
    assert subs.on_ack(okx_ack_without_id(first.streams[99]), now=1.0) == [first.streams[99]]
    assert subs.all_answered
    assert subs.subscribed_count == 150


def test_a_stream_proven_by_data_counts_towards_its_requests_ack() -> None:
    subs = Subscriptions(okx.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH], now=0.0)
    assert subs.heard("BTCUSDT", "1m", now=1.0) == BTC
    assert subs.confirm([BTC], now=1.0) == [BTC]
    assert subs.confirm([BTC], now=1.0) == []  # once
    assert not subs.all_answered
    assert subs.on_ack(SubscribeAck(request.request_id, ETH), now=2.0) == [ETH]
    assert subs.all_answered


def test_candles_of_streams_not_asked_for_here_are_not_wanted() -> None:
    subs = Subscriptions(binance.subscribe_requests)
    subs.subscribe([BTC], now=0.0)
    assert subs.heard("ETHUSDT", "1m", now=1.0) is None
    assert subs.heard("BTCUSDT", "5m", now=1.0) is None
    assert subs.heard("BTCUSDT", "1m", now=1.0) == BTC


def test_an_unnamed_refusal_of_one_stream_rejects_it() -> None:
    subs = Subscriptions(binance.subscribe_requests)
    [request] = subs.subscribe([BTC], now=0.0)
    [event] = binance.parse_frame(
        f'{{"error":{{"code":2,"msg":"Invalid request"}},"id":{request.request_id}}}'
    )
    assert isinstance(event, SubscribeRejected)
    assert subs.on_rejected(event, now=1.0) == Rejection((BTC,), ())
    assert subs.all_answered
    assert subs.heard("BTCUSDT", "1m", now=2.0) is None  # its candles are ignored from now on


def test_an_unnamed_refusal_of_several_streams_asks_for_each_on_its_own() -> None:
    subs = Subscriptions(binance.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH, SOL], now=0.0)
    rejection = subs.on_rejected(SubscribeRejected(request.request_id, (), "2", "bad"), now=1.0)
    assert rejection.bad == ()
    assert [r.streams for r in rejection.retry] == [(BTC,), (ETH,), (SOL,)]
    assert len({r.request_id for r in rejection.retry} | {request.request_id}) == 4
    assert not subs.all_answered  # the retries are pending now
    for retry in rejection.retry:
        subs.on_ack(SubscribeAck(retry.request_id), now=2.0)
    assert subs.all_answered


def test_a_named_refusal_retries_the_rest_in_one_request() -> None:
    subs = Subscriptions(bybit.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH, SOL], now=0.0)
    rejection = subs.on_rejected(
        SubscribeRejected(request.request_id, (ETH,), "error", "topic:kline.1.ETHUSDT"), now=1.0
    )
    assert rejection.bad == (ETH,)
    [retry] = rejection.retry
    assert retry.streams == (BTC, SOL)


def test_a_refusal_spares_streams_already_subscribed() -> None:
    subs = Subscriptions(okx.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH, SOL], now=0.0)
    subs.on_ack(SubscribeAck(request.request_id, BTC), now=1.0)
    rejection = subs.on_rejected(SubscribeRejected(request.request_id, (ETH,), "60018", ""), 1.0)
    assert rejection.bad == (ETH,)
    assert [r.streams for r in rejection.retry] == [(SOL,)]


def test_an_okx_refusal_without_id_is_matched_on_the_stream_it_names() -> None:
    subs = Subscriptions(okx.subscribe_requests)
    first, second = subs.subscribe(okx_streams(150), now=0.0)
    bad = second.streams[3]
    [event] = okx.parse_frame(
        orjson.dumps(
            {
                "event": "error",
                "code": "60018",
                "msg": f"Wrong URL or channel:candle1m,instId:{okx.to_native(bad.symbol)}"
                " doesn't exist. Please use the correct URL, channel and parameters.",
            }
        ).decode()
    )
    assert isinstance(event, SubscribeRejected)
    assert event.request_id is None
    rejection = subs.on_rejected(event, now=1.0)
    assert rejection.bad == (bad,)
    [retry] = rejection.retry
    assert retry.streams == tuple(s for s in second.streams if s != bad)
    for stream in first.streams + retry.streams:
        subs.on_ack(okx_ack_without_id(stream), now=2.0)
    assert subs.all_answered


def test_a_refusal_for_an_unknown_request_rejects_what_it_names() -> None:
    subs = Subscriptions(bybit.subscribe_requests)
    subs.subscribe([BTC], now=0.0)
    subs.subscribe([ETH], now=0.0)
    rejection = subs.on_rejected(SubscribeRejected("999", (SOL, SOL), "x", "y"), now=1.0)
    assert rejection == Rejection((SOL,), ())
    assert not subs.all_answered


def test_silent_streams_are_the_subscribed_ones_not_heard_from_in_time() -> None:
    subs = Subscriptions(okx.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH, SOL], now=0.0)
    for stream in (BTC, ETH):
        subs.on_ack(SubscribeAck(request.request_id, stream), now=0.0)  # SOL never acked
    assert subs.silent(now=10.0, timeout=10.0, exempt=()) == []
    subs.heard("BTCUSDT", "1m", now=5.0)
    assert subs.silent(now=10.5, timeout=10.0, exempt=()) == [ETH]
    assert subs.silent(now=10.5, timeout=10.0, exempt={ETH}) == []
    assert subs.silent(now=15.5, timeout=10.0, exempt=()) == [BTC, ETH]


def test_a_rejected_stream_is_never_silent() -> None:
    subs = Subscriptions(okx.subscribe_requests)
    [request] = subs.subscribe([BTC, ETH], now=0.0)
    subs.on_ack(SubscribeAck(request.request_id, BTC), now=0.0)
    subs.on_rejected(SubscribeRejected(request.request_id, (BTC,), "60018", ""), now=0.0)
    assert subs.silent(now=100.0, timeout=10.0, exempt=()) == []
