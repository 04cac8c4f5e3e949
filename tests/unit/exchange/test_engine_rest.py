"""REST surface: routing, pagination and limits, filters and the status vocabulary, public trades,
orderbook depth, shapes against the demo captures, token costs, and the market lifecycle."""

from __future__ import annotations

from kalshi.exchange import engine_rest

from .test_engine_support import ALICE, BOB, PLAIN, T0, Recorder, call, load_capture, make_engine, place

# Market keys Kalshi dropped after the June-2026 captures (protocol §2.3: removed ~2026-07-09 / "then dropped").
REMOVED_MARKET_KEYS = {"fractional_trading_enabled", "liquidity_dollars", "response_price_units"}
# Era-C Market keys of protocol §2.3.
SPEC_MARKET_KEYS = {
    "ticker", "event_ticker", "market_type", "title", "subtitle", "yes_sub_title", "no_sub_title", "created_time",
    "updated_time", "open_time", "close_time", "expected_expiration_time", "expiration_time",
    "latest_expiration_time", "settlement_timer_seconds", "status", "yes_bid_dollars", "yes_bid_size_fp",
    "yes_ask_dollars", "yes_ask_size_fp", "no_bid_dollars", "no_ask_dollars", "last_price_dollars",
    "previous_yes_bid_dollars", "previous_yes_ask_dollars", "previous_price_dollars", "volume_fp", "volume_24h_fp",
    "open_interest_fp", "notional_value_dollars", "result", "can_close_early", "early_close_condition",
    "expiration_value", "settlement_value_dollars", "settlement_ts", "settlement_bounds_type",
    "settlement_floor_dollars", "occurrence_datetime", "fee_waiver_expiration_time", "strike_type", "floor_strike",
    "cap_strike", "functional_strike", "custom_strike", "rules_primary", "rules_secondary", "price_level_structure",
    "price_ranges", "mve_collection_ticker", "mve_selected_legs", "primary_participant_key", "is_provisional",
    "exchange_index",
}


def test_market_shape_is_era_c_and_covers_the_captures(wire_dir):
    eng = make_engine()
    market = call(eng, "GET", f"/markets/{eng.slots[0]}", user=None)[1]["market"]
    assert set(market) == SPEC_MARKET_KEYS
    for name in ("markets__single", "markets__status_open", "markets__status_settled", "markets__page1"):
        cap = load_capture(wire_dir, name)
        for m in cap.get("markets", [cap.get("market")]):
            assert set(m) - REMOVED_MARKET_KEYS <= SPEC_MARKET_KEYS, name
    assert market["price_ranges"] == load_capture(wire_dir, "markets__single")["market"]["price_ranges"]
    structures = {call(eng, "GET", f"/markets/{t}", user=None)[1]["market"]["price_level_structure"] for t in eng.slots}
    assert {"linear_cent", "deci_cent", "tapered_deci_cent"} <= structures


def test_markets_cursor_walk_and_last_page(wire_dir):
    eng = make_engine(n_markets=7)
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": ["3"]}
        if cursor:
            query["cursor"] = [cursor]
        status, body = call(eng, "GET", "/markets", user=None, query=query)
        assert status == 200 and set(body) == set(load_capture(wire_dir, "markets__page1"))
        seen += [m["ticker"] for m in body["markets"]]
        pages += 1
        cursor = body["cursor"]
        if not cursor:
            break
    assert pages == 3 and sorted(seen) == sorted(eng.market_tickers()) and len(seen) == len(set(seen))
    single = call(eng, "GET", "/markets", user=None, query={"tickers": [eng.slots[0]]})[1]
    assert single["cursor"] == "" and len(single["markets"]) == 1
    # a garbage cursor is accepted and reads from the start
    status, body = call(eng, "GET", "/markets", user=None, query={"limit": ["3"], "cursor": ["garbage-cursor-fixture"]})
    assert status == 200 and [m["ticker"] for m in body["markets"]] == seen[:3]


def test_limit_over_max_is_bare_400(wire_dir):
    eng = make_engine()
    assert call(eng, "GET", "/markets", user=None, query={"limit": ["1001"]}) == (
        400, load_capture(wire_dir, "markets__limit_over_max"))
    for path in ("/portfolio/orders", "/portfolio/fills", "/markets/trades", "/portfolio/positions", "/portfolio/settlements"):
        status, body = call(eng, "GET", path, query={"limit": ["1001"]})
        assert status == 400 and set(body) == {"msg"}, path
    assert call(eng, "GET", "/markets", user=None, query={"limit": ["1000"]})[0] == 200
    assert call(eng, "GET", "/markets", user=None, query={"limit": ["0"]})[0] == 400


def test_status_filter_vocabulary_differs_from_response_status():
    eng = make_engine(n_markets=2, market_duration_s=100, settlement_timer_s=10)
    first = eng.slots[0]  # closes at +50 s
    eng.advance(T0 + 50_000)

    def statuses(flt):
        body = call(eng, "GET", "/markets", user=None, query={"status": [flt]})[1]
        return {m["ticker"]: m["status"] for m in body["markets"]}

    assert statuses("closed") == {first: "closed"}
    assert set(statuses("open").values()) == {"active"} and first not in statuses("open")
    eng.advance(T0 + 60_000)
    assert statuses("closed") == {first: "determined"}
    eng.advance(T0 + 70_000)
    assert statuses("settled") == {first: "finalized"} and statuses("closed") == {}
    assert statuses("unopened") == {}
    status, body = call(eng, "GET", "/markets", user=None, query={"status": ["active"]})
    assert status == 400 and "msg" in body  # response vocabulary is not a filter value
    both = call(eng, "GET", "/markets", user=None, query={"status": ["open,settled"]})[1]["markets"]
    assert {m["status"] for m in both} == {"active", "finalized"}


def test_lifecycle_on_the_clock_keeps_markets_open_and_emits_lifecycle():
    eng = make_engine(n_markets=2, market_duration_s=100, settlement_timer_s=10)
    rec = Recorder()
    eng.add_listener(rec)
    for step in range(1, 31):
        eng.advance(T0 + step * 10_000)  # 300 s
        assert sum(1 for m in eng.markets.values() if m.status == "active") == 2
    lifecycle = [e[4] for e in rec.events if e[3] == "market_lifecycle_v2"]
    created = [m for m in lifecycle if m["event_type"] == "created"]
    assert len(created) == len(eng.markets) - 2 >= 5
    kinds = {m["event_type"] for m in lifecycle}
    assert kinds == {"created", "determined", "settled"}
    assert any(e[3] == "event_lifecycle" for e in rec.events)
    statuses = {m.status for m in eng.markets.values()}
    assert "finalized" in statuses
    first = eng.markets[eng.market_tickers()[0]]
    assert first.finalize_ms - first.determine_ms == 10_000 == first.determine_ms - first.close_ms


def test_public_trades_newest_first_with_time_filters(wire_dir):
    eng = make_engine()
    t = eng.slots[PLAIN]
    for i in range(3):
        eng.advance(T0 + i * 2_000)
        place(eng, BOB, t, "ask", "0.5000", "1.00")
        place(eng, ALICE, t, "bid", "0.5000", "1.00", "immediate_or_cancel")
    body = call(eng, "GET", "/markets/trades", user=None, query={"ticker": [t]})[1]
    cap = load_capture(wire_dir, "trades__public_recorded")
    assert set(body) == set(cap) and set(body["trades"][0]) == set(cap["trades"][0])
    times = [tr["created_time"] for tr in body["trades"]]
    assert times == sorted(times, reverse=True) and len(times) == 3
    s = T0 // 1000
    mid = call(eng, "GET", "/markets/trades", user=None, query={"min_ts": [str(s + 1)], "max_ts": [str(s + 3)]})[1]
    assert [tr["created_time"] for tr in mid["trades"]] == ["2026-06-11T06:29:22Z"]
    page1 = call(eng, "GET", "/markets/trades", user=None, query={"limit": ["2"]})[1]
    page2 = call(eng, "GET", "/markets/trades", user=None, query={"limit": ["2"], "cursor": [page1["cursor"]]})[1]
    assert [tr["trade_id"] for tr in page1["trades"] + page2["trades"]] == [tr["trade_id"] for tr in body["trades"]]
    assert page2["cursor"] == ""


def test_orderbook_depth_and_shape(wire_dir):
    eng = make_engine()
    t = eng.slots[PLAIN]
    for p in ("0.1000", "0.2000", "0.3000"):
        place(eng, BOB, t, "bid", p, "1.00")
    place(eng, BOB, t, "ask", "0.5200", "3.00")
    body = call(eng, "GET", f"/markets/{t}/orderbook", user=None)[1]
    assert set(body["orderbook_fp"]) == set(load_capture(wire_dir, "orderbook__base")["orderbook_fp"])
    assert body["orderbook_fp"]["yes_dollars"] == [["0.1000", "1.00"], ["0.2000", "1.00"], ["0.3000", "1.00"]]
    top = call(eng, "GET", f"/markets/{t}/orderbook", user=None, query={"depth": ["2"]})[1]
    assert top["orderbook_fp"]["yes_dollars"] == [["0.2000", "1.00"], ["0.3000", "1.00"]]
    assert call(eng, "GET", f"/markets/{t}/orderbook", user=None, query={"depth": ["101"]})[0] == 400
    assert call(eng, "GET", "/markets/NOPE/orderbook", user=None)[0] == 404
    books = call(eng, "GET", "/markets/orderbooks", user=None, query={"tickers": [t, eng.slots[1]]})[1]["orderbooks"]
    assert [b["ticker"] for b in books] == [t, eng.slots[1]]
    snap = eng.orderbook_snapshot_msg(t)
    assert snap["no_dollars_fp"] == [["0.4800", "3.00"]]
    assert eng.orderbook_snapshot_msg(t, use_yes_price=True)["no_dollars_fp"] == [["0.5200", "3.00"]]
    empty = eng.orderbook_snapshot_msg(eng.slots[1])
    assert "yes_dollars_fp" not in empty and "no_dollars_fp" not in empty


def test_orders_and_fills_pagination_and_filters():
    eng = make_engine()
    t, u = eng.slots[0], eng.slots[1]
    ids = [place(eng, ALICE, t if i % 2 else u, "bid", "0.1000", "1.00")["order_id"] for i in range(5)]
    call(eng, "DELETE", f"/portfolio/events/orders/{ids[0]}")
    listed = call(eng, "GET", "/portfolio/orders", query={"limit": ["2"]})[1]
    rest = call(eng, "GET", "/portfolio/orders", query={"limit": ["10"], "cursor": [listed["cursor"]]})[1]
    assert [o["order_id"] for o in listed["orders"] + rest["orders"]] == ids[::-1]
    assert rest["cursor"] == ""
    resting = call(eng, "GET", "/portfolio/orders", query={"status": ["resting"], "ticker": [u]})[1]["orders"]
    assert [o["order_id"] for o in resting] == [ids[4], ids[2]]
    assert call(eng, "GET", "/portfolio/orders", query={"status": ["open"]})[0] == 400
    ev = eng.markets[t].event_ticker
    assert len(call(eng, "GET", "/portfolio/orders", query={"event_ticker": [ev]})[1]["orders"]) == 2


def test_routes_privacy_costs_and_misc(wire_dir):
    eng = make_engine()
    assert eng.is_private("GET", "/portfolio/balance") and eng.is_private("POST", "/portfolio/events/orders")
    assert not eng.is_private("GET", "/markets") and not eng.is_private("GET", "/markets/X/orderbook")
    assert not eng.is_private("GET", "/exchange/status") and eng.is_private("GET", "/account/limits")
    assert eng.request_cost("GET", "/markets", None) == ("read", 10)
    assert eng.request_cost("GET", "/portfolio/orders/abc", None) == ("read", 2)
    assert eng.request_cost("POST", "/portfolio/events/orders", {}) == ("write", 10)
    assert eng.request_cost("DELETE", "/portfolio/events/orders/abc", None) == ("write", 2)
    assert eng.request_cost("DELETE", "/portfolio/events/orders/batched", {"orders": [1, 2, 3]}) == ("write", 2)
    assert eng.request_cost("POST", "/portfolio/events/orders/batched", {"orders": [{}, {}, {}]}) == ("write", 30)
    assert eng.request_cost("POST", "/portfolio/orders", {}) == ("write", 20)
    assert eng.is_private("GET", "/trade-api/v2/portfolio/fills") and not eng.is_private("GET", "/trade-api/v2/markets")
    assert call(eng, "GET", "/trade-api/v2/markets", user=None, query={"mve_filter": ["only"]})[1]["markets"] == []
    assert call(eng, "GET", "/nope", user=None) == (404, {"error": {"code": "not_found", "message": "not found", "service": "exchange"}})
    assert call(eng, "GET", "/exchange/status", user=None)[1]["trading_active"] is True
    assert set(call(eng, "GET", "/account/limits")[1]) == set(load_capture(wire_dir, "account__limits"))
    costs = call(eng, "GET", "/account/endpoint_costs")[1]
    assert set(costs) == set(load_capture(wire_dir, "account__endpoint_costs"))
    assert call(eng, "GET", "/series/fee_changes", user=None)[1] == load_capture(wire_dir, "series__fee_changes")
    series = {s["ticker"]: s for s in call(eng, "GET", "/series", user=None)[1]["series"]}
    assert series["KXSIMM"]["fee_type"] == "quadratic_with_maker_fees" and series["KXSIMH"]["fee_multiplier"] == 0.5
    assert call(eng, "GET", "/series/KXSIMA", user=None)[1]["series"]["fee_type"] == "quadratic"
    ev = eng.markets[eng.slots[0]].event_ticker
    body = call(eng, "GET", f"/events/{ev}", user=None)[1]
    assert body["event"]["event_ticker"] == ev and body["markets"][0]["ticker"] == eng.slots[0]
    events = call(eng, "GET", "/events", user=None, query={"with_nested_markets": ["true"], "limit": ["2"]})[1]
    assert len(events["events"]) == 2 and events["events"][0]["markets"] and events["cursor"]
    assert call(eng, "GET", "/portfolio/settlements")[1] == load_capture(wire_dir, "settlements__page")
    assert len(engine_rest.ROUTES) >= 35
    ticker = eng.ticker_msg(eng.slots[0])
    assert ticker["market_ticker"] == eng.slots[0] and ticker["volume_fp"] == "0.00"
    assert call(eng, "GET", "/portfolio/summary/total_resting_order_value")[1] == {"total_resting_order_value": 0}
    place(eng, BOB, eng.slots[0], "bid", "0.1000", "1.00")
    assert call(eng, "GET", "/portfolio/orders/queue_positions", user=BOB)[1]["queue_positions"][0]["queue_position_fp"] == "0.00"


def test_ws_bodies_match_the_demo_frames(wire_dir):
    import json

    frames = [json.loads(line) for line in (wire_dir / "ws__orderbook_trade_noleg.jsonl").read_text().splitlines() if line.strip()]
    snap_cap = next(f["msg"] for f in frames if f["type"] == "orderbook_snapshot")
    delta_cap = next(f["msg"] for f in frames if f["type"] == "orderbook_delta")
    eng = make_engine()
    t = eng.slots[PLAIN]
    rec = Recorder()
    eng.add_listener(rec)
    place(eng, BOB, t, "bid", "0.4700", "3.00")
    place(eng, BOB, t, "ask", "0.5200", "2.00")
    assert set(eng.orderbook_snapshot_msg(t)) == set(snap_cap)
    deltas = rec.of("orderbook_delta")
    assert set(deltas[0]) == set(delta_cap) | {"client_order_id", "subaccount"} or set(deltas[0]) == set(delta_cap)
    place(eng, ALICE, t, "bid", "0.5200", "1.00", "immediate_or_cancel")
    assert set(rec.of("orderbook_delta")[-1]) == set(delta_cap)  # fills carry no client_order_id
    assert rec.of("orderbook_delta")[-1]["delta_fp"] == "-1.00"
