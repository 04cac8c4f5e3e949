"""kalshi.wire.frames: real captures, every documented frame shape, legacy eras, and bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalshi.wire import frames
from kalshi.wire.errors import WireError
from kalshi.wire.frames import (
    EventLifecycle,
    Fill,
    Frame,
    MarketLifecycle,
    MarketPosition,
    Ok,
    OrderbookDelta,
    OrderbookSnapshot,
    OrderGroupUpdate,
    Subscribed,
    Ticker,
    Trade,
    UnknownFrame,
    Unsubscribed,
    UserOrder,
    WsError,
    decode_frame,
    deprecated_fields_seen,
    reset_deprecated_fields,
)

T = "KXHIGHNY-26NOV25-T55"
CAPTURE_TICKER = "KXWTACHALLENGERMATCH-26JUN11JIMLEP-LEP"


def frame(obj: dict) -> bytes:
    return json.dumps(obj).encode()


def read_jsonl(path) -> list[bytes]:
    return [line.rstrip(b"\n") for line in path.read_bytes().split(b"\n") if line.strip()]


# ---------------------------------------------------------------------------------------------
# Real demo captures


def test_every_capture_decodes(wire_dir):
    paths = sorted(wire_dir.glob("ws__*.jsonl"))
    assert paths, "no ws__*.jsonl captures"
    for path in paths:
        for line in read_jsonl(path):
            assert isinstance(decode_frame(line), Frame)
            assert isinstance(decode_frame(line.decode()), Frame)  # str input too


def test_capture_noleg_values(wire_dir):
    out = [decode_frame(line) for line in read_jsonl(wire_dir / "ws__orderbook_trade_noleg.jsonl")]
    assert out[0] == Subscribed(1, "orderbook_delta", 1)
    assert out[1] == Subscribed(1, "trade", 2)
    snap = out[2]
    assert isinstance(snap, OrderbookSnapshot)
    assert (snap.sid, snap.seq, snap.market_ticker, snap.id) == (1, 1, CAPTURE_TICKER, None)
    assert snap.yes == ((4700, 300),) and snap.no == ((4800, 200),)
    deltas = out[3:]
    assert [(d.seq, d.side, d.price, d.delta) for d in deltas] == [
        (2, "yes", 4700, -300),
        (3, "no", 4800, -200),
        (4, "yes", 4700, 300),
        (5, "no", 4800, 100),
    ]
    assert deltas[0].ts_ms == 1781159489957 and deltas[0].client_order_id is None


def test_capture_yes_price_values(wire_dir):
    # use_yes_price=true: the NO side comes re-expressed in YES price; the decoder passes it as sent.
    out = [decode_frame(line) for line in read_jsonl(wire_dir / "ws__orderbook_trade_yes.jsonl")]
    snap = out[2]
    assert snap.yes == ((4700, 300),) and snap.no == ((5200, 100),)
    assert (out[3].price, out[3].delta, out[3].side, out[3].seq) == (5200, -100, "no", 2)
    assert (out[4].price, out[4].delta, out[4].seq, out[4].ts_ms) == (5200, 200, 3, 1781159387427)


# ---------------------------------------------------------------------------------------------
# Every documented shape (protocol doc §4), era C


def test_control_replies():
    assert decode_frame(b'{"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}') == Subscribed(
        1, "orderbook_delta", 1
    )
    assert decode_frame(b'{"id":4,"sid":2,"seq":7,"type":"unsubscribed"}') == Unsubscribed(4, 2, 7)
    ok = decode_frame(b'{"id":5,"type":"ok","msg":[{"channel":"orderbook_delta","sid":1},{"channel":"ticker","sid":3}]}')
    assert ok == Ok(5, None, None, None, (("orderbook_delta", 1), ("ticker", 3)))
    ok = decode_frame(
        b'{"id":6,"sid":1,"seq":40,"type":"ok","msg":{"market_tickers":["KXHIGHNY-26NOV25-T55","KXHIGHNY-26NOV25-T56"]}}'
    )
    assert ok == Ok(6, 1, 40, ("KXHIGHNY-26NOV25-T55", "KXHIGHNY-26NOV25-T56"), None)
    assert decode_frame(b'{"id":7,"type":"ok"}') == Ok(7, None, None, None, None)
    err = decode_frame(b'{"id":9,"type":"error","msg":{"code":8,"msg":"Unknown channel name"}}')
    assert err == WsError(9, None, None, 8, "Unknown channel name", None)
    err = decode_frame(frame({"id": 3, "sid": 1, "seq": 4, "type": "error", "msg": {"code": 16, "msg": "Market not found", "market_ticker": T}}))
    assert (err.sid, err.seq, err.code, err.market_tickers) == (1, 4, 16, (T,))
    err = decode_frame(frame({"type": "error", "msg": {"code": 1, "msg": "bad\nline"}}))
    assert err.msg == "bad\\nline" and err.id is None  # control characters escaped


def test_orderbook_snapshot_and_deltas():
    snap = decode_frame(frame({
        "type": "orderbook_snapshot", "sid": 1, "seq": 1,
        "msg": {"market_ticker": T, "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
                "yes_dollars_fp": [["0.4500", "50.00"], ["0.4700", "300.00"]],
                "no_dollars_fp": [["0.3000", "10.00"], ["0.4800", "150.00"]]}}))
    assert snap == OrderbookSnapshot(1, 1, T, ((4500, 5000), (4700, 30000)), ((3000, 1000), (4800, 15000)))
    # get_snapshot reply: carries the command id; the NO side omitted → empty
    snap = decode_frame(frame({"type": "orderbook_snapshot", "id": 8, "sid": 1, "seq": 41,
                               "msg": {"market_ticker": T, "yes_dollars_fp": [["0.4700", "300.00"]]}}))
    assert snap.id == 8 and snap.no == () and snap.yes == ((4700, 30000),)
    # descending (one unofficial fixture) → sorted ascending; subpenny price and fractional size
    snap = decode_frame(frame({"type": "orderbook_snapshot", "sid": 1, "seq": 2,
                               "msg": {"market_ticker": T, "yes_dollars_fp": [["0.0450", "1.50"], ["0.0010", "0.01"]]}}))
    assert snap.yes == ((10, 1), (450, 150))

    d = decode_frame(frame({"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {
        "market_ticker": T, "market_id": "9b0f", "price_dollars": "0.4800", "delta_fp": "-50.00", "side": "no",
        "ts": "2026-11-24T15:02:03.123456Z", "ts_ms": 1764000123123}}))
    assert d == OrderbookDelta(1, 2, T, 4800, -5000, "no", 1764000123123, None)
    d = decode_frame(frame({"type": "orderbook_delta", "sid": 1, "seq": 3, "msg": {
        "market_ticker": T, "price_dollars": "0.4600", "delta_fp": "5.00", "side": "yes",
        "client_order_id": "bot-000125", "subaccount": 0, "ts_ms": 1764000124000}}))
    assert (d.price, d.delta, d.side, d.client_order_id) == (4600, 500, "yes", "bot-000125")
    d = decode_frame(frame({"type": "orderbook_delta", "sid": 1, "seq": 4, "msg": {
        "market_ticker": T, "price_dollars": "0.4600", "delta_fp": "0.00", "side": "yes"}}))
    assert d.delta == 0 and d.ts_ms is None


TRADE = {"type": "trade", "sid": 2, "seq": 5, "msg": {
    "trade_id": "5a3c0e1e-0c1b-4c5e-9f61-2b7d1d8c7a10", "market_ticker": T,
    "yes_price_dollars": "0.5100", "no_price_dollars": "0.4900", "count_fp": "2.00", "taker_side": "yes",
    "taker_outcome_side": "yes", "taker_book_side": "bid", "is_block_trade": False, "ts": 1764000123,
    "ts_ms": 1764000123123}}


def test_trade():
    assert decode_frame(frame(TRADE)) == Trade(
        2, 5, "5a3c0e1e-0c1b-4c5e-9f61-2b7d1d8c7a10", T, 5100, 4900, 200, "yes", 1764000123123, False
    )
    # taker_outcome_side wins over the deprecated taker_side; ts seconds when ts_ms is absent
    msg = dict(TRADE["msg"], taker_outcome_side="no", taker_side="yes", is_block_trade=True)
    del msg["ts_ms"]
    t = decode_frame(frame(dict(TRADE, msg=msg)))
    assert (t.taker_side, t.ts_ms, t.is_block_trade) == ("no", 1764000123000, True)
    msg = {k: v for k, v in TRADE["msg"].items() if k not in ("taker_outcome_side", "no_price_dollars")}
    t = decode_frame(frame(dict(TRADE, msg=msg)))
    assert (t.taker_side, t.no_price) == ("yes", 4900)


FILL = {"type": "fill", "sid": 4, "msg": {
    "trade_id": "5a3c0e1e-0c1b-4c5e-9f61-2b7d1d8c7a10", "order_id": "3b23c1c7-f4ef-4f0d-8b9a-9e53c61f1a0d",
    "client_order_id": "bot-000124", "market_ticker": T, "exchange_index": 0, "is_taker": True,
    "side": "yes", "action": "buy", "purchased_side": "yes", "outcome_side": "yes", "book_side": "bid",
    "yes_price_dollars": "0.5100", "count_fp": "2.00", "fee_cost": "0.035000", "post_position_fp": "2.00",
    "subaccount": 0, "ts": 1764000123, "ts_ms": 1764000123123}}


def test_fill():
    f = decode_frame(frame(FILL))
    assert f == Fill(4, None, "5a3c0e1e-0c1b-4c5e-9f61-2b7d1d8c7a10", "3b23c1c7-f4ef-4f0d-8b9a-9e53c61f1a0d",
                     "bot-000124", T, True, "yes", "bid", 5100, 200, 350, 200, 1764000123123)
    # only the deprecated direction fields: sell yes = ask, NO exposure
    msg = {k: v for k, v in FILL["msg"].items() if k not in ("outcome_side", "book_side", "fee_cost", "client_order_id")}
    msg.update(action="sell", post_position_fp="-3.00")
    f = decode_frame(frame(dict(FILL, msg=msg)))
    assert (f.outcome_side, f.book_side, f.fee, f.client_order_id, f.post_position) == ("no", "ask", None, None, -300)
    msg.update(side="no", action="sell")
    assert decode_frame(frame(dict(FILL, msg=msg))).outcome_side == "yes"
    # outcome_side alone implies the book side (bid buys YES, ask buys NO)
    msg = {k: v for k, v in FILL["msg"].items() if k not in ("book_side", "side", "action")}
    msg.update(outcome_side="no")
    assert (lambda f: (f.outcome_side, f.book_side))(decode_frame(frame(dict(FILL, msg=msg)))) == ("no", "ask")
    with pytest.raises(WireError, match="disagrees with side/action"):
        decode_frame(frame(dict(FILL, msg=dict(FILL["msg"], action="sell"))))


def test_market_position():
    p = decode_frame(frame({"type": "market_position", "sid": 5, "msg": {
        "user_id": "7d1e", "market_ticker": T, "position_fp": "-2.00", "position_cost_dollars": "1.020000",
        "realized_pnl_dollars": "-0.500000", "fees_paid_dollars": "0.035000", "position_fee_cost_dollars": "0.035000",
        "volume_fp": "2.00", "subaccount": 0}}))
    assert p == MarketPosition(5, None, T, -200, 10200, -5000, 350, 200)


USER_ORDER = {"type": "user_order", "sid": 6, "msg": {
    "order_id": "3b23c1c7-f4ef-4f0d-8b9a-9e53c61f1a0d", "user_id": "7d1e", "ticker": T, "exchange_index": 0,
    "status": "resting", "side": "yes", "is_yes": True, "outcome_side": "yes", "book_side": "bid",
    "yes_price_dollars": "0.5200", "fill_count_fp": "2.00", "remaining_count_fp": "3.00", "initial_count_fp": "5.00",
    "taker_fill_cost_dollars": "1.020000", "maker_fill_cost_dollars": "0.000000", "taker_fees_dollars": "0.035000",
    "maker_fees_dollars": "0.000000", "client_order_id": "bot-000124", "order_group_id": "og_9f2c",
    "self_trade_prevention_type": "taker_at_cross", "created_time": "2026-11-24T15:02:03.120001Z",
    "created_ts_ms": 1764000123120, "last_update_time": "2026-11-24T15:02:03.123123Z",
    "last_updated_ts_ms": 1764000123123, "last_update_reason": "Trade", "expiration_time": "2026-11-25T06:00:00Z",
    "expiration_ts_ms": 1764050400000, "subaccount_number": 0}}


def test_user_order():
    o = decode_frame(frame(USER_ORDER))
    assert o == UserOrder(6, None, "3b23c1c7-f4ef-4f0d-8b9a-9e53c61f1a0d", "bot-000124", T, "resting", "bid", "yes",
                          5200, 200, 300, 500, "og_9f2c", "Trade", 1764000123123)
    msg = {k: v for k, v in USER_ORDER["msg"].items()
           if k not in ("last_updated_ts_ms", "order_group_id", "last_update_reason", "client_order_id")}
    o = decode_frame(frame(dict(USER_ORDER, msg=msg)))
    assert (o.ts_ms, o.order_group_id, o.last_update_reason, o.client_order_id) == (1764000123120, None, None, None)


def test_ticker():
    t = decode_frame(frame({"type": "ticker", "sid": 3, "msg": {
        "market_ticker": T, "market_id": "9b0f", "price_dollars": "0.5100", "yes_bid_dollars": "0.4700",
        "yes_ask_dollars": "0.5200", "yes_bid_size_fp": "300.00", "yes_ask_size_fp": "100.00",
        "last_trade_size_fp": "2.00", "volume_fp": "1236.00", "open_interest_fp": "802.00", "dollar_volume": 618,
        "dollar_open_interest": 401, "ts": 1764000123, "ts_ms": 1764000123123, "time": "2026-11-24T15:02:03.123123Z"}}))
    assert t == Ticker(3, None, T, 5100, 4700, 5200, 123600, 80200, 1764000123123, 30000, 10000, 200)
    # empty market: no bid (0) and no ask (1) are legal quotes; absent fields → None
    t = decode_frame(frame({"type": "ticker", "sid": 3, "msg": {
        "market_ticker": T, "yes_bid_dollars": "0.0000", "yes_ask_dollars": "1.0000", "ts_ms": 5}}))
    assert (t.price, t.yes_bid, t.yes_ask, t.volume, t.yes_bid_size) == (None, 0, 10000, None, None)


def test_order_group_updates():
    g = decode_frame(b'{"type":"order_group_updates","sid":7,"seq":3,"msg":{"event_type":"triggered","order_group_id":"og_9f2c","ts_ms":1764000130000}}')
    assert g == OrderGroupUpdate(7, 3, "triggered", "og_9f2c", None, 1764000130000)
    g = decode_frame(b'{"type":"order_group_updates","sid":7,"seq":4,"msg":{"event_type":"limit_updated","order_group_id":"og_9f2c","contracts_limit_fp":"20.00","ts_ms":1764000140000}}')
    assert g.contracts_limit == 2000


def test_lifecycle():
    created = decode_frame(frame({"type": "market_lifecycle_v2", "sid": 8, "seq": 10, "msg": {
        "market_ticker": T, "event_type": "created", "exchange_index": 0, "open_ts": 1764000000,
        "close_ts": 1764046740, "price_level_structure": "linear_cent",
        "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
        "additional_metadata": {"name": "NYC high", "title": "Will the high in NYC be >55°?",
                                "event_ticker": "KXHIGHNY-26NOV25", "strike_type": "greater", "floor_strike": 55,
                                "can_close_early": True}}}))
    assert isinstance(created, MarketLifecycle)
    assert (created.sid, created.seq, created.event_type, created.open_ts, created.close_ts) == (8, 10, "created", 1764000000, 1764046740)
    assert created.price_ranges == ((0, 10000, 100),) and created.event_ticker == "KXHIGHNY-26NOV25"
    assert created.price_level_structure == "linear_cent" and created.result is None
    det = decode_frame(frame({"type": "market_lifecycle_v2", "sid": 8, "seq": 13, "msg": {
        "market_ticker": T, "event_type": "determined", "determination_ts": 1764082900, "result": "no",
        "settlement_value": "0.0000"}}))
    assert (det.result, det.settlement_value, det.determination_ts) == ("no", 0, 1764082900)
    deact = decode_frame(frame({"type": "market_lifecycle_v2", "sid": 8, "seq": 11, "msg": {
        "market_ticker": T, "event_type": "deactivated", "is_deactivated": True}}))
    assert deact.is_deactivated is True
    settled = decode_frame(frame({"type": "market_lifecycle_v2", "sid": 8, "seq": 14, "msg": {
        "market_ticker": T, "event_type": "settled", "settled_ts": 1764082960}}))
    assert settled.settled_ts == 1764082960
    meta = decode_frame(frame({"type": "market_lifecycle_v2", "sid": 8, "seq": 15, "msg": {
        "market_ticker": T, "event_type": "metadata_updated", "yes_sub_title": "56° or higher"}}))
    assert meta.event_type == "metadata_updated"
    ev = decode_frame(frame({"type": "event_lifecycle", "sid": 8, "seq": 16, "msg": {
        "event_ticker": "KXHIGHNY-26NOV26", "exchange_index": 0, "title": "NYC high Nov 26", "subtitle": "Nov 26",
        "collateral_return_type": "", "series_ticker": "KXHIGHNY", "strike_date": 1764169200}}))
    assert ev == EventLifecycle(8, 16, "KXHIGHNY-26NOV26", "KXHIGHNY", "NYC high Nov 26", 1764169200)


def test_unknown_type_is_not_an_error():
    u = decode_frame(b'{"type":"event_fee_update","sid":8,"seq":17,"msg":{"anything":[1,2]}}')
    assert u == UnknownFrame("event_fee_update", 8, 17)
    assert decode_frame(b'{"type":"communications"}') == UnknownFrame("communications", None, None)


def test_every_frame_has_sid_and_seq():
    classes = [c for c in vars(frames).values() if isinstance(c, type) and issubclass(c, Frame) and c is not Frame]
    assert len(classes) >= 15
    for cls in classes:
        assert {"sid", "seq"} <= set(cls.__struct_fields__), cls
        assert cls.__struct_config__.frozen, cls


def test_frames_are_immutable():
    d = decode_frame(frame(TRADE))
    with pytest.raises(AttributeError):
        d.count = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Era A/B (legacy integer) shapes and the schema-drift counter


def test_legacy_snapshot_and_delta():
    reset_deprecated_fields()
    snap = decode_frame(frame({"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {
        "market_ticker": T, "yes": [[8, 300], [22, 333]], "yes_dollars": [["0.080", 300], ["0.220", 333]],
        "no": [[54, 20]], "no_dollars": [["0.540", 20]]}}))
    assert snap.yes == ((800, 30000), (2200, 33300)) and snap.no == ((5400, 2000),)
    snap = decode_frame(frame({"type": "orderbook_snapshot", "sid": 1, "seq": 2, "msg": {
        "market_ticker": T, "yes": [[8, 300]], "no": None}}))
    assert snap.yes == ((800, 30000),) and snap.no == ()
    d = decode_frame(frame({"type": "orderbook_delta", "sid": 1, "seq": 3, "msg": {
        "market_ticker": T, "price": 96, "price_dollars": "0.960", "delta": -54, "side": "yes", "ts": "2025-01-01T00:00:00Z"}}))
    assert (d.price, d.delta) == (9600, -5400)
    d = decode_frame(frame({"type": "orderbook_delta", "sid": 1, "seq": 4, "msg": {
        "market_ticker": T, "price": 96, "delta": 7, "side": "no"}}))
    assert (d.price, d.delta) == (9600, 700)
    seen = deprecated_fields_seen()
    assert seen["orderbook_snapshot.yes_dollars"] == 1 and seen["orderbook_snapshot.yes"] == 1
    assert seen["orderbook_delta.price"] == 2 and seen["orderbook_delta.delta"] == 2 and seen["orderbook_delta.ts"] == 1
    reset_deprecated_fields()
    assert deprecated_fields_seen() == {}


def test_legacy_trade_fill_position_ticker_order():
    t = decode_frame(frame({"type": "trade", "sid": 2, "seq": 1, "msg": {
        "trade_id": "x1", "market_ticker": T, "yes_price": 36, "no_price": 64, "count": 3, "taker_side": "no", "ts": 1700000000}}))
    assert (t.yes_price, t.no_price, t.count, t.taker_side, t.ts_ms) == (3600, 6400, 300, "no", 1700000000000)
    f = decode_frame(frame({"type": "fill", "sid": 4, "msg": {
        "trade_id": "t", "order_id": "o", "market_ticker": T, "is_taker": False, "side": "no", "action": "buy",
        "yes_price": 75, "no_price": 25, "count": 278, "post_position": -278, "ts": 1700000000}}))
    assert (f.outcome_side, f.book_side, f.yes_price, f.count, f.post_position) == ("no", "ask", 7500, 27800, -27800)
    p = decode_frame(frame({"type": "market_position", "sid": 5, "msg": {
        "market_ticker": T, "position": 100, "position_cost": 500000, "realized_pnl": -1234, "fees_paid": 10000, "volume": 15}}))
    assert p == MarketPosition(5, None, T, 10000, 500000, -1234, 10000, 1500)
    tk = decode_frame(frame({"type": "ticker", "sid": 3, "msg": {
        "market_ticker": T, "price": 48, "yes_bid": 45, "yes_ask": 53, "volume": 33896, "open_interest": 20422, "ts": 1669149841}}))
    assert (tk.price, tk.yes_bid, tk.yes_ask, tk.volume, tk.open_interest, tk.ts_ms) == (
        4800, 4500, 5300, 3389600, 2042200, 1669149841000)
    o = decode_frame(frame({"type": "user_order", "sid": 6, "msg": {
        "order_id": "o", "ticker": T, "status": "canceled", "side": "yes", "action": "sell", "yes_price": 40,
        "fill_count": 0, "remaining_count": 0, "initial_count": 5, "created_ts_ms": 1}}))
    assert (o.outcome_side, o.book_side, o.yes_price, o.initial_count) == ("no", "ask", 4000, 500)
    seen = deprecated_fields_seen()
    assert seen["trade.yes_price"] >= 1 and seen["fill.post_position"] >= 1 and seen["market_position.position_cost"] >= 1
    assert seen["ticker.yes_bid"] >= 1 and seen["user_order.action"] >= 1


def test_drift_counter_counts_exactly_across_threads():
    import threading

    reset_deprecated_fields()
    data = frame({"type": "orderbook_delta", "sid": 1, "seq": 1, "msg": {
        "market_ticker": T, "price_dollars": "0.5200", "delta_fp": "1.00", "side": "yes",
        "ts": "2026-06-11T06:29:47.354803Z", "ts_ms": 1}})
    threads = [threading.Thread(target=lambda: [decode_frame(data) for _ in range(2000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert deprecated_fields_seen() == {"orderbook_delta.ts": 8000}
    reset_deprecated_fields()


@pytest.mark.parametrize("msg", [
    {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {"market_ticker": T, "yes": [[8, -300]]}},
    {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {"market_ticker": T, "yes_dollars": [["0.0800", -3]]}},
    {"type": "ticker", "sid": 3, "msg": {"market_ticker": T, "volume": -1, "ts": 1}},
])
def test_legacy_negative_sizes_are_refused(msg):
    with pytest.raises(WireError, match="must not be negative"):
        decode_frame(frame(msg))


# ---------------------------------------------------------------------------------------------
# Bad input → WireError, never anything else

DELTA = {"type": "orderbook_delta", "sid": 1, "seq": 2,
         "msg": {"market_ticker": T, "price_dollars": "0.4800", "delta_fp": "-50.00", "side": "no", "ts_ms": 1}}
SNAP = {"type": "orderbook_snapshot", "sid": 1, "seq": 1,
        "msg": {"market_ticker": T, "yes_dollars_fp": [["0.4700", "3.00"]], "no_dollars_fp": [["0.4800", "2.00"]]}}
GOOD = frame(DELTA)


def with_msg(base: dict, **changes) -> bytes:
    msg = dict(base["msg"])
    for key, value in changes.items():
        if value is ...:
            msg.pop(key, None)
        else:
            msg[key] = value
    return frame(dict(base, msg=msg))


def with_top(base: dict, **changes) -> bytes:
    out = dict(base)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return frame(out)


BAD_RAW = {
    "empty": b"",
    "whitespace": b"   \n",
    "not json": b"hello",
    "truncated": GOOD[:-5],
    "binary garbage": bytes(range(256)),
    "invalid utf-8 in ignored field": GOOD[:-1] + b',"x":"\xff\xfe"}',
    "invalid utf-8 in ticker": GOOD.replace(T.encode(), b"KX\xc3\x28"),
    "bom": b"\xef\xbb\xbf" + GOOD,
    "NaN": GOOD.replace(b'"seq": 2', b'"seq": NaN'),
    "Infinity": GOOD.replace(b'"seq": 2', b'"seq": Infinity'),
    "1e999 seq": GOOD.replace(b'"seq": 2', b'"seq": 1e999'),
    "1e999 ts": GOOD.replace(b'"ts_ms": 1', b'"ts_ms": 1e999'),
    "trailing garbage": GOOD + b"}",
    "two frames": GOOD + GOOD,
    "json array": b"[1,2,3]",
    "json string": b'"orderbook_delta"',
    "json null": b"null",
    "deep nesting": b'{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    "deep nesting unknown type": b'{"type":"x","msg":' + b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000 + b"}",
    "deep nesting unterminated": b"[" * 200_000,
    "lone surrogate escape": GOOD.replace(T.encode(), b"\\ud800"),
    "missing type": b'{"sid":1,"seq":2,"msg":{}}',
    "type not str": b'{"type":5,"sid":1}',
    "type with control char": b'{"type":"a\\u0000b","sid":1}',
    "huge frame": b'{"type":"x","pad":"' + b"a" * (frames.MAX_FRAME_BYTES + 1) + b'"}',
}

BAD_SHAPES = {
    "seq zero": with_top(DELTA, seq=0),
    "seq negative": with_top(DELTA, seq=-1),
    "seq 2**63": with_top(DELTA, seq=2**63),
    "seq 2**70": with_top(DELTA, seq=2**70),
    "seq string": with_top(DELTA, seq="2"),
    "seq float": with_top(DELTA, seq=2.0),
    "seq bool": with_top(DELTA, seq=True),
    "seq missing on delta": with_top(DELTA, seq=...),
    "sid zero": with_top(DELTA, sid=0),
    "sid 2**64": with_top(DELTA, sid=2**64),
    "sid missing": with_top(DELTA, sid=...),
    "msg missing": with_top(DELTA, msg=...),
    "msg list": with_top(DELTA, msg=[1]),
    "msg string": with_top(DELTA, msg="x"),
    "msg null": with_top(DELTA, msg=None),
    "side maybe": with_msg(DELTA, side="maybe"),
    "side YES": with_msg(DELTA, side="YES"),
    "side missing": with_msg(DELTA, side=...),
    "price abc": with_msg(DELTA, price_dollars="abc"),
    "price negative": with_msg(DELTA, price_dollars="-0.01"),
    "price 1.5": with_msg(DELTA, price_dollars="1.5"),
    "price zero": with_msg(DELTA, price_dollars="0"),
    "price one": with_msg(DELTA, price_dollars="1.0000"),
    "price 5 decimals": with_msg(DELTA, price_dollars="0.48001"),
    "price number": with_msg(DELTA, price_dollars=0.48),
    "price exponent": with_msg(DELTA, price_dollars="4.8e-1"),
    "price plus": with_msg(DELTA, price_dollars="+0.48"),
    "price spaces": with_msg(DELTA, price_dollars=" 0.48"),
    "price unicode digits": with_msg(DELTA, price_dollars="０.48"),
    "price huge string": with_msg(DELTA, price_dollars="0." + "0" * 100_000),
    "price missing": with_msg(DELTA, price_dollars=...),
    "delta 3 decimals": with_msg(DELTA, delta_fp="1.001"),
    "delta missing": with_msg(DELTA, delta_fp=...),
    "delta float": with_msg(DELTA, delta_fp=-50.0),
    "legacy price 100": with_msg(DELTA, price_dollars=..., price=100),
    "legacy price float": with_msg(DELTA, price_dollars=..., price=48.0),
    "ticker control char": with_msg(DELTA, market_ticker="KX\nFAKE"),
    "ticker nul": with_msg(DELTA, market_ticker="KX\x00"),
    "ticker unicode": with_msg(DELTA, market_ticker="KXÉ-1"),
    "ticker space": with_msg(DELTA, market_ticker="KX 1"),
    "ticker empty": with_msg(DELTA, market_ticker=""),
    "ticker 201 chars": with_msg(DELTA, market_ticker="K" * 201),
    "ticker 1MB": with_msg(DELTA, market_ticker="K" * 1_000_000),
    "ticker number": with_msg(DELTA, market_ticker=5),
    "ts_ms negative": with_msg(DELTA, ts_ms=-1),
    "ts_ms string": with_msg(DELTA, ts_ms="1"),
    "client_order_id control": with_msg(DELTA, client_order_id="a\x1bb"),
    "snapshot negative size": with_msg(SNAP, yes_dollars_fp=[["0.4700", "-5.00"]]),
    "snapshot level not pair": with_msg(SNAP, yes_dollars_fp=[["0.4700"]]),
    "snapshot level triple": with_msg(SNAP, yes_dollars_fp=[["0.4700", "1.00", "x"]]),
    "snapshot numbers": with_msg(SNAP, yes_dollars_fp=[[0.47, 1.0]]),
    "snapshot duplicate price": with_msg(SNAP, yes_dollars_fp=[["0.4700", "1.00"], ["0.4700", "2.00"]]),
    "snapshot unsorted duplicate": with_msg(SNAP, no_dollars_fp=[["0.4800", "1.00"], ["0.3000", "1.00"], ["0.4800", "1.00"]]),
    "snapshot too many levels": with_msg(SNAP, yes_dollars_fp=[["0.4700", "1.00"]] * (frames.MAX_LEVELS + 1)),
    "snapshot million levels": with_msg(SNAP, yes_dollars_fp=[["0.4700", "1.00"]] * 1_000_000),
    "snapshot side not list": with_msg(SNAP, yes_dollars_fp={"0.47": "1"}),
    "snapshot legacy negative": with_msg(SNAP, yes_dollars_fp=..., yes=[[47, -1]]),
    "snapshot price zero": with_msg(SNAP, yes_dollars_fp=[["0.0000", "1.00"]]),
    "trade prices do not sum": with_msg(TRADE, no_price_dollars="0.5000"),
    "trade zero count": with_msg(TRADE, count_fp="0.00"),
    "trade no side": with_msg(TRADE, taker_side=..., taker_outcome_side=...),
    "trade bad side": with_msg(TRADE, taker_outcome_side="buy"),
    "trade no timestamp": with_msg(TRADE, ts=..., ts_ms=...),
    "trade ts string": with_msg(TRADE, ts="2026-01-01"),
    "trade block not bool": with_msg(TRADE, is_block_trade="false"),
    "trade id control": with_msg(TRADE, trade_id="a\rb"),
    "fill no direction": with_msg(FILL, outcome_side=..., book_side=..., side=..., action=...),
    "fill bad book side": with_msg(FILL, book_side="buy"),
    "fill direction conflict": with_msg(FILL, book_side=..., outcome_side="no"),
    "fill fee abc": with_msg(FILL, fee_cost="abc"),
    "fill is_taker missing": with_msg(FILL, is_taker=...),
    "position non numeric": frame({"type": "market_position", "sid": 5, "msg": {
        "market_ticker": T, "position_fp": "two", "position_cost_dollars": "0", "realized_pnl_dollars": "0",
        "fees_paid_dollars": "0", "volume_fp": "0"}}),
    "position missing cost": frame({"type": "market_position", "sid": 5, "msg": {
        "market_ticker": T, "position_fp": "1.00", "realized_pnl_dollars": "0", "fees_paid_dollars": "0", "volume_fp": "0"}}),
    "user order negative count": with_msg(USER_ORDER, remaining_count_fp="-1.00"),
    "user order no ticker": with_msg(USER_ORDER, ticker=...),
    "subscribed no sid": b'{"id":1,"type":"subscribed","msg":{"channel":"trade"}}',
    "error no msg": b'{"id":1,"type":"error"}',
    "error code string": b'{"id":1,"type":"error","msg":{"code":"8","msg":"x"}}',
    "ok msg number": b'{"id":1,"type":"ok","msg":5}',
    "id negative": b'{"id":-1,"type":"subscribed","msg":{"channel":"trade","sid":1}}',
    "lifecycle bad range": frame({"type": "market_lifecycle_v2", "sid": 8, "seq": 1, "msg": {
        "market_ticker": T, "event_type": "created", "price_ranges": [{"start": "0.5", "end": "0.1", "step": "0.01"}]}}),
    "lifecycle zero step": frame({"type": "market_lifecycle_v2", "sid": 8, "seq": 1, "msg": {
        "market_ticker": T, "event_type": "created", "price_ranges": [{"start": "0", "end": "1", "step": "0"}]}}),
    "order group no ts": b'{"type":"order_group_updates","sid":7,"seq":3,"msg":{"event_type":"triggered","order_group_id":"og"}}',
}


@pytest.mark.parametrize("data", list(BAD_RAW.values()) + list(BAD_SHAPES.values()),
                         ids=list(BAD_RAW) + list(BAD_SHAPES))
def test_bad_input_raises_wire_error(data):
    for form in (data, _as_text(data)):
        if form is None:
            continue
        with pytest.raises(WireError) as info:
            decode_frame(form)
        reason = info.value.reason
        assert reason and len(reason) <= 200
        assert reason.isascii() and reason.isprintable(), reason  # safe to log
        assert info.value.sample is None or len(info.value.sample) <= 120


def _as_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_error_reason_names_the_problem():
    with pytest.raises(WireError, match="seq"):
        decode_frame(with_top(DELTA, seq="2"))
    with pytest.raises(WireError, match="price_dollars"):
        decode_frame(with_msg(DELTA, price_dollars="abc"))
    with pytest.raises(WireError, match="UTF-8"):
        decode_frame(b'{"type":"x","y":"\xff"}')
    with pytest.raises(WireError, match="msg"):
        decode_frame(with_top(DELTA, msg=...))


def test_lone_surrogates_in_text_frames():
    for text in ('{"type":"\ud800"}', '{"type":"trade","sid":1,"msg":{"trade_id":"\udcff"}}'):
        with pytest.raises(WireError, match="unicode"):
            decode_frame(text)


def test_deep_nesting_reason():
    with pytest.raises(WireError, match="nested too deeply"):
        decode_frame(BAD_RAW["deep nesting"])


def test_wrong_argument_types():
    for value in (None, 5, 1.5, ["x"], {"type": "trade"}):
        with pytest.raises(WireError):
            decode_frame(value)  # type: ignore[arg-type]
    assert isinstance(decode_frame(bytearray(GOOD)), OrderbookDelta)
    assert isinstance(decode_frame(memoryview(GOOD)), OrderbookDelta)


def test_trailing_newline_and_duplicate_keys():
    assert isinstance(decode_frame(GOOD + b"\n"), OrderbookDelta)
    # duplicate keys: the last one wins (documented)
    dup = b'{"type":"orderbook_delta","sid":1,"seq":2,"seq":3,"msg":' + json.dumps(DELTA["msg"]).encode() + b"}"
    assert decode_frame(dup).seq == 3


def test_extra_fields_are_ignored():
    d = decode_frame(with_msg(DELTA, brand_new_field={"nested": [1, 2, {"x": None}]}, subaccount=3))
    assert d == decode_frame(GOOD)


# ---------------------------------------------------------------------------------------------
# Fuzz: nothing but WireError ever escapes

ALL_SAMPLES = [frame(x) for x in (DELTA, SNAP, TRADE, FILL, USER_ORDER)]

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
_msg_keys = st.sampled_from(sorted({k for x in (DELTA, SNAP, TRADE, FILL, USER_ORDER) for k in x["msg"]}))
_types = st.sampled_from(sorted(frames.KNOWN_TYPES) + ["bogus"])


def _check(data) -> None:
    try:
        out = decode_frame(data)
    except WireError:
        return
    assert isinstance(out, Frame)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    _check(data)


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_random_text(data):
    _check(data)


@FUZZ
@given(st.sampled_from(ALL_SAMPLES), st.integers(min_value=0, max_value=400), st.binary(min_size=0, max_size=4),
       st.booleans())
def test_fuzz_mutated_frames(sample, pos, junk, truncate):
    pos = min(pos, len(sample))
    data = sample[:pos] if truncate else sample[:pos] + junk + sample[pos + len(junk):]
    _check(data)


@FUZZ
@given(_types, st.dictionaries(_msg_keys, _json, max_size=8), _json, _json)
def test_fuzz_structured_json(type_, msg, sid, seq):
    _check(json.dumps({"type": type_, "sid": sid, "seq": seq, "msg": msg}).encode())


@FUZZ
@given(st.sampled_from([DELTA, SNAP, TRADE, FILL, USER_ORDER]), _msg_keys, _json)
def test_fuzz_one_field_replaced(base, key, value):
    _check(with_msg(base, **{key: value}))
