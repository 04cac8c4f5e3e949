"""kalshi.wire.bodies on every real REST capture, legacy (era A/B) forms, and hostile shapes."""

from __future__ import annotations

import json
import re
import threading
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshi import rest
from kalshi.wire import bodies as B
from kalshi.wire.errors import WireError

PREFIX = "/trade-api/v2"

# (method, path regex without prefix/query) → decoder, for 2xx bodies.
ROUTES: list[tuple[str, str, object]] = [
    ("GET", r"/exchange/status", B.decode_exchange_status),
    ("GET", r"/account/limits", B.decode_account_limits),
    ("GET", r"/account/endpoint_costs", B.decode_endpoint_costs),
    ("GET", r"/markets", B.decode_markets_page),
    ("GET", r"/markets/trades", B.decode_trades_page),
    ("GET", r"/markets/[^/]+/orderbook", B.decode_orderbook),
    ("GET", r"/markets/[^/]+", B.decode_market_response),
    ("GET", r"/series/fee_changes", B.decode_series_fee_changes),
    ("GET", r"/portfolio/balance", B.decode_balance),
    ("GET", r"/portfolio/positions", B.decode_positions_page),
    ("GET", r"/portfolio/orders", B.decode_orders_page),
    ("GET", r"/portfolio/orders/[^/]+", B.decode_order_response),
    ("GET", r"/portfolio/fills", B.decode_fills_page),
    ("GET", r"/portfolio/settlements", B.decode_settlements_page),
    ("POST", r"/portfolio/events/orders", B.decode_create_order),
    ("DELETE", r"/portfolio/events/orders/[^/]+", B.decode_cancel_order),
    ("POST", r"/portfolio/orders", B.decode_create_order),  # legacy V1: {"order": Order}
    ("DELETE", r"/portfolio/orders/[^/]+", B.decode_cancel_order),  # legacy V1
]


def decoder_for(method: str, path: str):
    path = path.split("?", 1)[0]
    assert path.startswith(PREFIX)
    path = path[len(PREFIX):]
    for m, pattern, decode in ROUTES:
        if m == method and re.fullmatch(pattern, path):
            return decode
    raise AssertionError(f"no decoder mapped for {method} {path}: add it to ROUTES")


def captures(wire_dir: Path):
    for body in sorted(wire_dir.glob("*.json")):
        if body.name.endswith(".meta.json"):
            continue
        meta_path = body.with_name(body.name[: -len(".json")] + ".meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        yield body.name[: -len(".json")], json.loads(body.read_bytes()), body.read_bytes(), meta


def load(wire_dir: Path, name: str):
    return json.loads((wire_dir / f"{name}.json").read_bytes())


@pytest.fixture(autouse=True)
def _fresh_drift_counter():
    B.reset_deprecated_fields()
    yield
    B.reset_deprecated_fields()


# ---------------------------------------------------------------- every capture parses


def test_every_rest_capture_decodes_with_its_endpoint_decoder(wire_dir):
    seen_ok = seen_err = 0
    for name, obj, raw, meta in captures(wire_dir):
        if meta is None:  # markets__high_temp.json: a GET /markets page recorded without meta
            assert name == "markets__high_temp"
            B.decode_markets_page(obj)
            continue
        status = meta["status"]
        if status >= 400:
            error = rest.parse_error_body(status, raw)
            assert isinstance(error, rest.KalshiApiError), name
            seen_err += 1
        else:
            decode = decoder_for(meta["method"], meta["path"])
            assert decode(obj) is not None or obj == {"series_fee_change_arr": []} or decode is B.decode_series_fee_changes
            seen_ok += 1
    assert seen_ok >= 30 and seen_err >= 15


ERROR_EXPECTATIONS = {
    "auth__bad_signature": (rest.AuthenticationError, "authentication_error", "INCORRECT_API_KEY_SIGNATURE"),
    "auth__unknown_key_id": (rest.AuthenticationError, "authentication_error", "NOT_FOUND"),
    "auth__missing_signature_header": (rest.AuthenticationError, "signature_is_missing_from_headers", None),
    "auth__skew_minus30s": (rest.ClockSkewError, "header_timestamp_expired", None),
    "auth__skew_minus5min": (rest.ClockSkewError, "header_timestamp_expired", None),
    "auth__skew_plus5min": (rest.ClockSkewError, "header_timestamp_expired", None),
    "cleanup__leftover_0": (rest.NotFoundError, "not_found", None),
    "cleanup__leftover_1": (rest.NotFoundError, "not_found", None),
    "cleanup__leftover_2": (rest.NotFoundError, "not_found", None),
    "orders__cancel_already_canceled": (rest.NotFoundError, "not_found", None),
    "orders__cancel_executed": (rest.NotFoundError, "not_found", None),
    "orders__cancel_unknown_id": (rest.NotFoundError, "not_found", None),
    "orders__duplicate_client_order_id": (rest.DuplicateClientOrderIdError, "order_already_exists", None),
    "orders__reuse_canceled_client_id": (rest.DuplicateClientOrderIdError, "order_already_exists", None),
    "orders__insufficient_balance": (rest.InsufficientBalanceError, "insufficient_balance", None),
    "orders__invalid_price_structure": (rest.InvalidOrderError, "invalid_price", None),
    "orders__numeric_field_types": (rest.InvalidOrderError, "bad_request", "json: cannot unmarshal number"),
    "orders__post_only_cross": (rest.InvalidOrderError, "invalid_order", "post only cross"),
    "markets__limit_over_max": (rest.KalshiApiError, None, None),
}


def test_every_error_capture_maps_to_the_right_exception(wire_dir):
    error_names = {name for name, _, _, meta in captures(wire_dir) if meta and meta["status"] >= 400}
    assert error_names == set(ERROR_EXPECTATIONS), "a new error capture needs an expectation"
    for name, (cls, code, details) in ERROR_EXPECTATIONS.items():
        meta = json.loads((wire_dir / f"{name}.meta.json").read_text())
        error = rest.parse_error_body(meta["status"], (wire_dir / f"{name}.json").read_bytes())
        assert type(error) is cls, name
        assert error.status == meta["status"] and error.code == code, name
        if details:
            assert error.details.startswith(details), name
    bare = rest.parse_error_body(400, (wire_dir / "markets__limit_over_max.json").read_bytes())
    assert bare.message.startswith("Parameter validation failed for GetMarkets")


# ---------------------------------------------------------------- concrete values from captures


def test_fills_after_taker(wire_dir):
    page = B.decode_fills_page(load(wire_dir, "fills__after_taker"))
    assert page.cursor == "" and len(page.fills) == 3
    f = page.fills[0]
    assert (f.fee_cost, f.yes_price, f.no_price, f.count) == (175, 5200, 4800, 100)
    assert (f.book_side, f.outcome_side, f.is_taker) == ("bid", "yes", True)
    assert f.fill_id == f.trade_id == "f4a42159-b500-57c6-efa2-c31d94d916c1"
    assert f.order_id == "97ec18b7-10d3-4557-9de0-8598aad625f0"
    assert f.created_time_ms == 1781159370164 and f.ts_ms == 1781159370000
    assert f.client_order_id is None
    assert [x.fee_cost for x in page.fills[1:]] == [7, 7] and page.fills[1].yes_price == 9900


def test_create_order_results(wire_dir):
    taker = B.decode_create_order(load(wire_dir, "orders__create_v2_taker_ioc"))
    assert (taker.fill_count, taker.remaining_count) == (100, 0)
    assert (taker.average_fill_price, taker.average_fee_paid) == (5200, 175)
    assert taker.ts_ms == 1781159370164 and taker.client_order_id == "2b8394e0-515e-4b89-b624-f34067756855"
    maker = B.decode_create_order(load(wire_dir, "orders__create_v2_maker"))
    assert (maker.fill_count, maker.remaining_count) == (0, 100)
    assert maker.average_fill_price is None and maker.average_fee_paid is None
    stp = B.decode_create_order(load(wire_dir, "orders__stp_self_cross"))
    assert (stp.fill_count, stp.remaining_count) == (0, 0)


def test_cancel_results(wire_dir):
    v2 = B.decode_cancel_order(load(wire_dir, "orders__cancel_v2"))
    assert v2.order_id == "2597b999-f887-4195-8bac-c3f97a1f2021" and v2.reduced_by == 100
    assert v2.ts_ms == 1781159364112 and v2.order is None
    legacy = B.decode_cancel_order(load(wire_dir, "orders__legacy_cancel"))
    assert legacy.reduced_by == 100 and legacy.order is not None and legacy.order.status == "canceled"
    assert legacy.order.remaining_count == 0


def test_balance(wire_dir):
    bal = B.decode_balance(load(wire_dir, "auth__balance_ok"))
    assert bal.balance == 980_186  # $98.0186 exactly, not the truncated 9801 cents
    assert bal.portfolio_value == 19_800 and bal.updated_ts_ms == 1781159348000
    assert B.deprecated_fields_seen() == {}


def test_orderbook(wire_dir):
    book = B.decode_orderbook(load(wire_dir, "orderbook__base"), "KXWTACHALLENGERMATCH-26JUN11JIMLEP-LEP")
    assert book.yes == ((4700, 300),) and book.no == ((4800, 300),)
    assert book.ticker == "KXWTACHALLENGERMATCH-26JUN11JIMLEP-LEP"


def test_single_market(wire_dir):
    m = B.decode_market_response(load(wire_dir, "markets__single"))
    assert m.ticker == "KXWTACHALLENGERMATCH-26JUN11JIMLEP-LEP" and m.event_ticker.endswith("JIMLEP")
    assert (m.yes_bid, m.yes_ask, m.no_bid, m.no_ask, m.last_price) == (4700, 5200, 4800, 5300, 9900)
    assert (m.yes_bid_size, m.yes_ask_size, m.volume, m.volume_24h, m.open_interest) == (300, 300, 200, 100, 200)
    assert m.price_level_structure == "linear_cent" and m.price_ranges == ((0, 10_000, 100),)
    assert m.status == "active" and m.result == "" and m.series_ticker is None
    assert m.close_time_ms == 1782403200000  # 2026-06-25T16:00:00Z


def test_market_pages(wire_dir):
    p1 = B.decode_markets_page(load(wire_dir, "markets__page1"))
    assert len(p1.markets) == 5 and p1.cursor.startswith("CgwI")
    last = B.decode_markets_page(load(wire_dir, "markets__single_filter_lastpage"))
    assert last.cursor == "" and len(last.markets) == 1
    opened = B.decode_markets_page(load(wire_dir, "markets__status_open"))
    assert len(opened.markets) == 200
    deci = [m for m in opened.markets if m.price_level_structure == "deci_cent"]
    assert deci and all(m.price_ranges == ((0, 10_000, 10),) for m in deci)
    settled = B.decode_markets_page(load(wire_dir, "markets__status_settled"))
    assert {m.result for m in settled.markets} <= {"yes", "no"}
    assert all(m.status in ("determined", "finalized") for m in settled.markets)


def test_negative_quote_sizes_in_real_capture_are_unknown_and_counted(wire_dir):
    page = B.decode_markets_page(load(wire_dir, "markets__high_temp"))
    m = next(m for m in page.markets if m.ticker == "KXHIGHNY-26JUN13-T94")
    assert m.yes_bid_size is None and m.yes_bid == 100 and m.result == "no" and m.settlement_value == 0
    drift = B.deprecated_fields_seen()
    assert drift["markets.yes_bid_size_fp<0"] == 6
    assert drift["markets.yes_ask_size_fp<0"] == 3


def test_orders(wire_dir):
    page = B.decode_orders_page(load(wire_dir, "portfolio__orders_list"))
    o = page.orders[0]
    assert (o.status, o.book_side, o.outcome_side) == ("executed", "bid", "yes")
    assert (o.yes_price, o.no_price, o.initial_count, o.fill_count, o.remaining_count) == (9900, 100, 100, 100, 0)
    assert (o.taker_fill_cost, o.taker_fees, o.maker_fees) == (5200, 175, 0)
    assert o.created_time_ms == 1781159370164 and o.order_group_id is None
    one = B.decode_order_response(load(wire_dir, "orders__get_after_cancel"))
    assert one.status == "resting" and one.yes_price == 100 and one.self_trade_prevention_type == "taker_at_cross"
    legacy = B.decode_order_response(load(wire_dir, "orders__legacy_create"))
    assert legacy.order_id == "e641ead7-badf-41d1-a4bf-04a6cb202714" and legacy.remaining_count == 100


def test_positions(wire_dir):
    page = B.decode_positions_page(load(wire_dir, "portfolio__positions"))
    p = page.positions[0]
    assert (p.position, p.market_exposure, p.realized_pnl, p.fees_paid, p.total_traded) == (300, 25000, 0, 189, 25000)
    assert p.resting_orders_count == 0 and p.last_updated_ms == 1781159370165
    e = page.event_positions[0]
    assert (e.total_cost, e.total_cost_shares, e.fees_paid) == (25000, 300, 189)


def test_public_trades(wire_dir):
    page = B.decode_trades_page(load(wire_dir, "trades__public_recorded"))
    t = page.trades[0]
    assert (t.count, t.yes_price, t.no_price, t.taker_side) == (777, 300, 9700, "yes")
    assert t.trade_id == "56932642-f55c-41a6-1cad-35b95c27373b" and t.created_time_ms == 1781538522609
    assert page.cursor and not t.is_block_trade


def test_account_and_misc(wire_dir):
    limits = B.decode_account_limits(load(wire_dir, "account__limits"))
    assert (limits.usage_tier, limits.read_refill_rate, limits.write_bucket_capacity) == ("basic", 200, 100)
    costs = B.decode_endpoint_costs(load(wire_dir, "account__endpoint_costs"))
    assert costs.default_cost == 10
    assert B.EndpointCost(method="DELETE", path="/trade-api/v2/portfolio/events/orders/:order_id", cost=2) in costs.costs
    status = B.decode_exchange_status(load(wire_dir, "exchange__status"))
    assert status == B.ExchangeStatus(exchange_active=True, trading_active=True, estimated_resume_time_ms=None)
    assert B.decode_settlements_page(load(wire_dir, "settlements__page")) == B.SettlementsPage(settlements=(), cursor="")
    assert B.decode_series_fee_changes(load(wire_dir, "series__fee_changes")) == ()


# ---------------------------------------------------------------- era-C synthetic shapes from the protocol doc


def test_v2_ask_order_and_settlement_and_groups():
    order = B.decode_order({
        "order_id": "o1", "client_order_id": "bot-1", "ticker": "T", "side": "yes", "action": "sell",
        "outcome_side": "no", "book_side": "ask", "type": "limit", "status": "resting",
        "yes_price_dollars": "0.5200", "no_price_dollars": "0.4800", "initial_count_fp": "10.00",
        "fill_count_fp": "3.00", "remaining_count_fp": "7.00", "taker_fill_cost_dollars": "1.440000",
        "maker_fill_cost_dollars": "0.000000", "taker_fees_dollars": "0.052500", "maker_fees_dollars": "0.000000",
        "expiration_time": None, "created_time": "2026-11-24T15:02:03.120001Z",
        "last_update_time": "2026-11-24T15:02:03.123504Z", "order_group_id": "og_9f2c", "new_field": [1, 2]})
    assert (order.book_side, order.outcome_side, order.fill_count, order.remaining_count) == ("ask", "no", 300, 700)
    assert (order.taker_fill_cost, order.taker_fees, order.order_group_id) == (14400, 525, "og_9f2c")
    assert order.last_update_time_ms - order.created_time_ms == 3
    s = B.decode_settlements_page({"cursor": "", "settlements": [{
        "ticker": "T", "event_ticker": "E", "market_result": "no", "yes_count_fp": "0.00",
        "yes_total_cost_dollars": "0.000000", "no_count_fp": "3.00", "no_total_cost_dollars": "1.440000",
        "revenue": 300, "value": 0, "fee_cost": "0.052500", "settled_time": "2026-11-25T15:01:00Z"}]})
    st_ = s.settlements[0]
    assert (st_.no_count, st_.no_total_cost, st_.revenue, st_.value, st_.fee_cost) == (300, 14400, 30000, 0, 525)
    groups = B.decode_order_groups({"order_groups": [{"id": "og_9f2c", "contracts_limit_fp": "10.00",
                                                      "is_auto_cancel_enabled": True, "exchange_index": 0}]})
    assert groups == (B.OrderGroup(order_group_id="og_9f2c", contracts_limit=1000, is_auto_cancel_enabled=True,
                                   order_ids=()),)
    one = B.decode_order_group({"is_auto_cancel_enabled": True, "contracts_limit_fp": "10.00", "orders": ["a", "b"]},
                               "og_1")
    assert one.order_ids == ("a", "b") and one.order_group_id == "og_1"
    assert B.decode_order_group_created({"order_group_id": "og_x", "subaccount": 0}).order_group_id == "og_x"
    series = B.decode_series({"series": {"ticker": "KXINX", "fee_type": "quadratic", "fee_multiplier": 0.5}})
    assert series.fee_multiplier == Fraction(1, 2)
    with pytest.raises(WireError, match="series.fee_type"):
        B.decode_series({"series": {"ticker": "X", "fee_type": "mystery", "fee_multiplier": 1}})


def test_batch_results_and_amend_decrease():
    created = B.decode_batch_create({"orders": [
        {"order_id": "o1", "client_order_id": "c1", "fill_count": "0.00", "remaining_count": "5.00",
         "ts_ms": 1, "error": None},
        {"client_order_id": "c2", "error": {"code": "invalid_price", "message": "invalid price"}},
    ]})
    ok, bad = created.items
    assert ok.result is not None and ok.result.remaining_count == 500 and ok.error is None
    assert bad.result is None and bad.error.code == "invalid_price" and bad.client_order_id == "c2"
    canceled = B.decode_batch_cancel({"orders": [
        {"order_id": "o1", "client_order_id": "c1", "reduced_by": "5.00", "ts_ms": 2, "error": None},
        {"order_id": "o2", "error": {"code": "not_found", "message": "not found"}}]})
    assert canceled.items[0].result.reduced_by == 500 and canceled.items[1].error.code == "not_found"
    amend = B.decode_amend_order({"order_id": "o1", "client_order_id": "c1b", "remaining_count": "4.00",
                                  "fill_count": "1.00", "average_fill_price": "0.516666", "ts_ms": 5})
    assert amend.remaining_count == 400 and amend.average_fill_price == 5167  # averages round to $0.0001
    dec = B.decode_decrease_order({"order_id": "o1", "client_order_id": "c1", "remaining_count": "2.00", "ts_ms": 6})
    assert dec.remaining_count == 200


def test_error_info_shapes():
    nested = B.decode_error_info({"error": {"code": "x", "message": "m", "details": "d", "service": "exchange"}})
    assert nested == B.ApiErrorInfo(code="x", message="m", details="d", service="exchange")
    assert B.decode_error_info({"code": "bad_request", "message": "bad request"}).code == "bad_request"
    assert B.decode_error_info({"msg": "Parameter validation failed"}).message == "Parameter validation failed"
    assert B.decode_error_info({"error": "too many requests"}) == B.ApiErrorInfo(code=None, message="too many requests")
    assert B.decode_error_info({"markets": []}) is None
    assert B.decode_error_info([1]) is None


# ---------------------------------------------------------------- legacy era A/B forms


def test_legacy_integer_forms_are_accepted_and_counted():
    order = B.decode_order({"order_id": "o", "ticker": "T", "status": "resting", "action": "buy", "side": "no",
                            "yes_price": 48, "count": 10, "fill_count": 3, "remaining_count": 7,
                            "taker_fees": 2, "taker_fill_cost": 156})
    # buy NO = ask on the YES book at the YES price.
    assert (order.book_side, order.outcome_side, order.yes_price, order.no_price) == ("ask", "no", 4800, 5200)
    assert (order.initial_count, order.fill_count, order.taker_fees, order.taker_fill_cost) == (1000, 300, 200, 15600)
    trade = B.decode_trades_page({"cursor": "", "trades": [{"trade_id": "t", "ticker": "T", "count": 5,
                                                            "yes_price": 52, "no_price": 48, "taker_side": "no",
                                                            "created_time": "2025-06-01T00:00:00Z"}]}).trades[0]
    assert (trade.count, trade.yes_price, trade.no_price, trade.taker_side) == (500, 5200, 4800, "no")
    pos = B.decode_positions_page({"cursor": "", "market_positions": [
        {"ticker": "T", "position": -3, "market_exposure": 144, "realized_pnl": -10, "fees_paid": 6,
         "total_traded": 144}]}).positions[0]
    assert (pos.position, pos.market_exposure, pos.realized_pnl, pos.fees_paid) == (-300, 14400, -1000, 600)
    market = B.decode_market({"ticker": "T", "event_ticker": "E", "status": "active", "yes_bid": 47, "yes_ask": 52,
                              "volume": 12, "tick_size": 1})
    assert (market.yes_bid, market.yes_ask, market.volume, market.price_ranges) == (4700, 5200, 1200,
                                                                                    ((0, 10_000, 100),))
    book = B.decode_orderbook({"orderbook": {"yes": [[47, 300], [45, 50]], "no": None}})
    assert book.yes == ((4500, 5000), (4700, 30000)) and book.no == ()
    era_b = B.decode_orderbook({"orderbook": {"yes": [[45, 50]], "no": [[48, 150]],
                                              "yes_dollars": [["0.4500", 50]], "no_dollars": [["0.4800", 150]]}})
    assert era_b.yes == ((4500, 5000),) and era_b.no == ((4800, 15000),)
    bal = B.decode_balance({"balance": 9801})
    assert bal.balance == 980_100 and bal.portfolio_value is None
    drift = B.deprecated_fields_seen()
    for key in ("order.action", "order.yes_price", "order.count", "trades.count", "trades.yes_price",
                "trades.taker_side", "market_positions.position", "market_positions.market_exposure",
                "market.yes_bid", "market.tick_size", "orderbook", "balance.balance"):
        assert drift.get(key, 0) >= 1, key


def test_modern_fields_win_and_count_nothing():
    trade = B.decode_trades_page({"cursor": "", "trades": [{
        "trade_id": "t", "ticker": "T", "count_fp": "1.00", "count": 99, "yes_price_dollars": "0.5200",
        "yes_price": 1, "no_price_dollars": "0.4800", "taker_outcome_side": "yes", "taker_side": "no",
        "created_time": "2026-01-01T00:00:00Z"}]}).trades[0]
    assert (trade.count, trade.yes_price, trade.taker_side) == (100, 5200, "yes")
    assert B.deprecated_fields_seen() == {}


def test_drift_counter_is_thread_safe():
    body = {"cursor": "", "trades": [{"trade_id": "t", "ticker": "T", "count": 1, "yes_price": 50,
                                      "taker_side": "yes", "created_time": "2025-01-01T00:00:00Z"}] * 50}
    threads = [threading.Thread(target=lambda: [B.decode_trades_page(body) for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert B.deprecated_fields_seen()["trades.count"] == 4 * 20 * 50


@pytest.mark.parametrize(
    "decode, body, field",
    [
        (B.decode_orderbook, {"orderbook": {"yes": [[45, -5]], "no": None}}, "orderbook.yes[0].count"),
        (B.decode_trades_page, {"cursor": "", "trades": [{"trade_id": "t", "ticker": "T", "count": -3,
                                "yes_price": 50, "taker_side": "yes", "created_time": "2025-01-01T00:00:00Z"}]},
         "trades[0].count"),
        (B.decode_cancel_order, {"order_id": "o", "reduced_by": -2}, "cancel_order.reduced_by"),
        (B.decode_balance, {"balance": 10**16}, "balance.balance"),
    ],
)
def test_legacy_integers_out_of_range_are_refused(decode, body, field):
    # A negative legacy size/count must not become a negative book level or trade size.
    with pytest.raises(WireError, match=re.escape(field)):
        decode(body)


def test_outcome_side_alone_implies_the_book_side():
    order = B.decode_order({**GOOD_ORDER, "book_side": None, "outcome_side": "no"})
    assert (order.book_side, order.outcome_side) == ("ask", "no")
    assert B.deprecated_fields_seen() == {}


def test_legacy_signed_position_stays_signed():
    page = B.decode_positions_page({"cursor": "", "market_positions": [{"ticker": "T", "position": -3}]})
    assert page.positions[0].position == -300


# ---------------------------------------------------------------- wrong shapes name the field


GOOD_ORDER = {"order_id": "o", "ticker": "T", "status": "resting", "book_side": "bid", "yes_price_dollars": "0.5000",
              "initial_count_fp": "1.00", "fill_count_fp": "0.00", "remaining_count_fp": "1.00"}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"order_id": None}, "order.order_id"),
        ({"fill_count_fp": "abc"}, "order.fill_count_fp"),
        ({"yes_price_dollars": 0.52}, "order.yes_price_dollars"),
        ({"yes_price_dollars": "1.5000"}, "order.yes_price_dollars"),
        ({"initial_count_fp": "-1.00"}, "order.initial_count_fp"),
        ({"status": "weird"}, "order.status"),
        ({"book_side": "buy"}, "order.book_side"),
        ({"book_side": "bid", "outcome_side": "no"}, "order.outcome_side"),
        ({"book_side": "bid", "side": "no", "action": "buy"}, "order.book_side"),  # V2 vs legacy conflict
        ({"book_side": None, "outcome_side": "maybe"}, "order.outcome_side"),
        ({"book_side": None}, "order.book_side"),
        ({"created_time": "yesterday"}, "order.created_time"),
        ({"ticker": 5}, "order.ticker"),
    ],
)
def test_wrong_order_shapes(change, field):
    with pytest.raises(WireError, match=re.escape(field)):
        B.decode_order({**GOOD_ORDER, **change})


def test_wrong_page_shapes():
    with pytest.raises(WireError, match="markets_page.markets"):
        B.decode_markets_page({"cursor": ""})
    with pytest.raises(WireError, match="markets_page.markets"):
        B.decode_markets_page({"markets": {}, "cursor": ""})
    with pytest.raises(WireError, match="cursor"):
        B.decode_markets_page({"markets": [], "cursor": 7})
    with pytest.raises(WireError, match=r"orders\[1\]"):
        B.decode_orders_page({"orders": [GOOD_ORDER, {**GOOD_ORDER, "order_id": 1}], "cursor": ""})
    with pytest.raises(WireError, match="create_order.order_id"):
        B.decode_create_order({"fill_count": "1.00", "remaining_count": "0.00"})
    with pytest.raises(WireError, match="duplicate level"):
        B.decode_orderbook({"orderbook_fp": {"yes_dollars": [["0.4000", "1.00"], ["0.4000", "2.00"]],
                                             "no_dollars": []}})
    with pytest.raises(WireError, match="outside"):
        B.decode_orderbook({"orderbook_fp": {"yes_dollars": [["0.0000", "1.00"]], "no_dollars": []}})
    with pytest.raises(WireError, match="balance.balance_dollars"):
        B.decode_balance({"balance_dollars": "NaN"})
    with pytest.raises(WireError):
        B.decode_balance([])
    # cursor absent or null = last page
    assert B.decode_fills_page({"fills": None}).cursor == ""


def test_orderbook_sorts_and_drops_empty_levels():
    book = B.decode_orderbook({"orderbook_fp": {"yes_dollars": [["0.4700", "3.00"], ["0.0100", "2.00"],
                                                                ["0.3000", "0.00"]]}})
    assert book.yes == ((100, 200), (4700, 300)) and book.no == ()


def test_values_are_immutable():
    order = B.decode_order(GOOD_ORDER)
    with pytest.raises(AttributeError):
        order.status = "canceled"  # type: ignore[misc]
    assert hash(order) == hash(B.decode_order(dict(GOOD_ORDER)))


@pytest.mark.parametrize(
    "text, ms",
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-06-11T06:29:30.164956Z", 1781159370164),
        ("2026-06-11T06:29:30.1Z", 1781159370100),
        ("2026-06-11T06:29:30.123456789Z", 1781159370123),
        ("2026-06-11T08:29:30+02:00", 1781159370000),
        ("2026-06-11T01:29:30-0500", 1781159370000),
    ],
)
def test_parse_time_ms(text, ms):
    assert B.parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["2026-13-01T00:00:00Z", "2026-06-11", "2026-06-11T25:00:00Z", 1781159370, ""])
def test_parse_time_ms_rejects(text):
    with pytest.raises(WireError):
        B.parse_time_ms(text, "t")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_order_like = st.fixed_dictionaries({}, optional={k: _json | st.just(v) for k, v in GOOD_ORDER.items()})


@settings(max_examples=150, deadline=None)
@given(st.one_of(_json, _order_like))
def test_hostile_bodies_raise_only_wire_error(obj):
    for decode in (B.decode_order, B.decode_markets_page, B.decode_fills_page, B.decode_create_order,
                   B.decode_orderbook, B.decode_positions_page, B.decode_balance, B.decode_trades_page):
        try:
            decode(obj)
        except WireError:
            pass


@pytest.mark.parametrize("ticker", ["", "A B", "BAD\x1b[31mRED", "X" * 201, "ÜBER-1"])
def test_rest_tickers_are_validated_like_websocket_tickers(ticker):
    from kalshi.wire.bodies import decode_trades_page
    from kalshi.wire.errors import WireError

    page = {"cursor": "", "trades": [{"trade_id": "t1", "ticker": ticker, "count_fp": "1.00",
                                      "yes_price_dollars": "0.5000", "no_price_dollars": "0.5000",
                                      "taker_outcome_side": "yes", "created_time": "2026-11-24T15:02:03Z"}]}
    with pytest.raises(WireError, match="ticker"):
        decode_trades_page(page)
