"""Money: fees, balance reservation, netting, positions, settlement, order groups, and the private
WS events that report them."""

from __future__ import annotations

from kalshi.units import MONEY_ONE

from .test_engine_support import (
    ALICE, BOB, CAROL, HALF_FEE, MAKER_FEES, PLAIN, T0, Recorder, call, get_order, load_capture, make_engine,
    order_body, place,
)

START = 10_000 * MONEY_ONE


def cash(eng, user):
    return eng.account_snapshot(user)["cash"]


def test_fee_arithmetic_taker_maker_multiplier():
    eng = make_engine()
    plain, maker_series, half = eng.slots[PLAIN], eng.slots[MAKER_FEES], eng.slots[HALF_FEE]
    for t in (plain, maker_series, half):
        place(eng, BOB, t, "ask", "0.5200", "1.00")
        place(eng, ALICE, t, "bid", "0.5200", "1.00", "immediate_or_cancel")
    alice, bob = eng.account_snapshot(ALICE)["positions"], eng.account_snapshot(BOB)["positions"]
    assert alice[plain]["fees"] == 175 and bob[plain]["fees"] == 0  # 0.07·0.52·0.48 = 0.017472 ↑
    assert alice[maker_series]["fees"] == 175 and bob[maker_series]["fees"] == 44  # 0.0175·0.2496 = 0.004368 ↑
    assert alice[half]["fees"] == 88 and bob[half]["fees"] == 0  # 0.5 × 0.017472 ↑
    fills = call(eng, "GET", "/portfolio/fills", user=BOB, query={"ticker": [maker_series]})[1]["fills"]
    assert fills[0]["fee_cost"] == "0.004400"


def test_fee_rounding_to_the_cent_when_configured():
    eng = make_engine(fee_rounding_unit=100)
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.5000", "101.00")
    place(eng, ALICE, t, "bid", "0.5000", "1.00", "immediate_or_cancel")
    place(eng, ALICE, t, "bid", "0.5000", "100.00", "immediate_or_cancel")
    assert eng.account_snapshot(ALICE)["positions"][t]["fees"] == 200 + 17_500  # $0.02 + $1.75


def test_balance_reserves_resting_buys_and_releases_on_cancel(wire_dir):
    eng = make_engine()
    t, mt = eng.slots[PLAIN], eng.slots[MAKER_FEES]
    status, body = call(eng, "GET", "/portfolio/balance")
    assert set(body) == set(load_capture(wire_dir, "auth__balance_ok"))
    assert body["balance"] == 1_000_000 and body["balance_dollars"] == "10000.0000"
    bid = place(eng, ALICE, t, "bid", "0.4000", "10.00")
    assert eng.account_snapshot(ALICE)["reserved"] == 40_000
    assert call(eng, "GET", "/portfolio/balance")[1]["balance_dollars"] == "9996.0000"
    ask = place(eng, ALICE, mt, "ask", "0.4000", "10.00")  # buys NO at 0.60, maker fee reserved too
    assert eng.account_snapshot(ALICE)["reserved"] == 40_000 + 60_000 + 420  # maker fee 0.0175·10·0.4·0.6 = 0.042
    call(eng, "DELETE", f"/portfolio/events/orders/{bid['order_id']}")
    call(eng, "DELETE", f"/portfolio/events/orders/{ask['order_id']}")
    assert eng.account_snapshot(ALICE)["reserved"] == 0
    assert call(eng, "GET", "/portfolio/balance")[1]["balance"] == 1_000_000


def test_balance_in_cents_is_truncated():
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.5200", "1.00")
    place(eng, ALICE, t, "bid", "0.5200", "1.00", "immediate_or_cancel")
    body = call(eng, "GET", "/portfolio/balance")[1]
    assert body["balance_dollars"] == "9999.4625"  # 10000 − 0.52 − 0.0175
    assert body["balance"] == 999_946


def test_insufficient_balance(wire_dir):
    eng = make_engine(start_balance=MONEY_ONE)  # $1
    t = eng.slots[PLAIN]
    expected = (400, load_capture(wire_dir, "orders__insufficient_balance"))
    assert call(eng, "POST", "/portfolio/events/orders", order_body(t, price="0.5000", count="2.00")) == expected
    place(eng, ALICE, t, "bid", "0.5000", "1.00")  # $0.50 + worst-case fee fits
    # the resting order's reservation counts against the next one
    assert call(eng, "POST", "/portfolio/events/orders", order_body(t, price="0.5000", count="1.00")) == expected


def test_netting_buy_yes_then_buy_no_closes():
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.6000", "2.00")
    place(eng, ALICE, t, "bid", "0.6000", "2.00", "immediate_or_cancel")
    pos = eng.account_snapshot(ALICE)["positions"][t]
    assert (pos["q"], pos["exposure"], pos["fees"]) == (200, 12_000, 336)
    place(eng, CAROL, t, "bid", "0.7000", "5.00")
    place(eng, ALICE, t, "ask", "0.7000", "3.00", "immediate_or_cancel")  # buys NO at 0.30: 2 close, 1 opens
    pos = eng.account_snapshot(ALICE)["positions"][t]
    assert pos["q"] == -100
    assert pos["realized"] == 2_000  # sold 2 YES bought at 0.60 for 0.70
    assert pos["exposure"] == 3_000  # the 1 NO at 0.30
    fee2 = 441  # 0.07·3·0.21 = 0.0441
    assert cash(eng, ALICE) == START - 12_000 - 336 + 2 * 7_000 - 3_000 - fee2
    listed = call(eng, "GET", "/portfolio/positions")[1]["market_positions"][0]
    assert listed["position_fp"] == "-1.00" and listed["realized_pnl_dollars"] == "0.200000"
    assert listed["market_exposure_dollars"] == "0.300000" and listed["total_traded_dollars"] == "2.100000"
    # open interest = YES contracts held: Carol 3 (Alice holds 1 NO, Bob 2 NO)
    assert eng.markets[t].open_interest == 300


def test_positions_shape(wire_dir):
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.6000", "2.00")
    place(eng, ALICE, t, "bid", "0.6000", "2.00", "immediate_or_cancel")
    body = call(eng, "GET", "/portfolio/positions")[1]
    cap = load_capture(wire_dir, "portfolio__positions")
    assert set(body) == set(cap)
    # resting_orders_count was removed ~2026-07-09; exchange_index is in the current spec (§2.7)
    assert set(body["market_positions"][0]) == set(cap["market_positions"][0]) - {"resting_orders_count"} | {"exchange_index"}
    assert set(body["event_positions"][0]) == set(cap["event_positions"][0])


def _settle_market(eng, result_yes: bool):
    t = eng.slots[0]
    m = eng.markets[t]
    m.settle_u = 0 if result_yes else 9_999
    m.fair = 5_000
    return t, m


def test_settlement_pays_winners_and_leaves_default_positions():
    eng = make_engine(n_markets=1, market_duration_s=100, settlement_timer_s=10)
    t, m = _settle_market(eng, True)
    place(eng, BOB, t, "ask", "0.6000", "2.00")
    place(eng, ALICE, t, "bid", "0.6000", "2.00", "immediate_or_cancel")
    rec = Recorder()
    eng.add_listener(rec)
    alice_before, bob_before = cash(eng, ALICE), cash(eng, BOB)
    eng.advance(T0 + 100_000)
    assert m.status == "closed"
    eng.advance(T0 + 110_000)
    assert (m.status, m.result) == ("determined", "yes")
    assert cash(eng, ALICE) == alice_before
    eng.advance(T0 + 120_000)
    assert m.status == "finalized"
    assert cash(eng, ALICE) == alice_before + 2 * MONEY_ONE
    assert cash(eng, BOB) == bob_before
    rows = call(eng, "GET", "/portfolio/settlements")[1]["settlements"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["market_result"], row["yes_count_fp"], row["yes_total_cost_dollars"], row["revenue"], row["value"]) == (
        "yes", "2.00", "1.200000", 200, 100)
    assert row["fee_cost"] == "0.033600" and row["no_count_fp"] == "0.00"
    bob_row = call(eng, "GET", "/portfolio/settlements", user=BOB)[1]["settlements"][0]
    assert (bob_row["no_count_fp"], bob_row["revenue"]) == ("2.00", 0)
    assert call(eng, "GET", "/portfolio/positions")[1]["market_positions"] == []
    settled = call(eng, "GET", "/portfolio/positions", query={"settlement_status": ["all"]})[1]["market_positions"]
    assert settled[0]["position_fp"] == "0.00" and settled[0]["realized_pnl_dollars"] == "0.800000"
    kinds = [e[4]["event_type"] for e in rec.events if e[3] == "market_lifecycle_v2" and e[2] == t]
    assert kinds == ["determined", "settled"]
    assert rec.of("market_positions", ALICE)[-1]["position_fp"] == "0.00"
    market = call(eng, "GET", f"/markets/{t}", user=None)[1]["market"]
    assert market["status"] == "finalized" and market["result"] == "yes" and market["settlement_value_dollars"] == "1.0000"


def test_settlement_no_pays_no_holders():
    eng = make_engine(n_markets=1, market_duration_s=100, settlement_timer_s=10)
    t, m = _settle_market(eng, False)
    place(eng, BOB, t, "ask", "0.6000", "2.00")
    place(eng, ALICE, t, "bid", "0.6000", "2.00", "immediate_or_cancel")
    bob_before = cash(eng, BOB)
    eng.advance(T0 + 120_000)
    assert m.result == "no"
    assert cash(eng, BOB) == bob_before + 2 * MONEY_ONE
    assert call(eng, "GET", "/portfolio/settlements")[1]["settlements"][0]["revenue"] == 0


def _group(eng, limit="3.00"):
    status, body = call(eng, "POST", "/portfolio/order_groups/create", {"contracts_limit_fp": limit})
    assert status == 201 and set(body) == {"order_group_id", "subaccount", "exchange_index"}
    return body["order_group_id"]


def test_order_group_triggers_within_15s_window_and_blocks_until_reset():
    eng = make_engine()
    t = eng.slots[PLAIN]
    rec = Recorder()
    eng.add_listener(rec)
    gid = _group(eng)
    a = place(eng, ALICE, t, "bid", "0.4000", "10.00", order_group_id=gid)
    place(eng, BOB, t, "ask", "0.4000", "2.00", "immediate_or_cancel")
    assert get_order(eng, ALICE, a["order_id"])["status"] == "resting"
    eng.advance(T0 + 5_000)
    place(eng, BOB, t, "ask", "0.4000", "1.00", "immediate_or_cancel")
    order = get_order(eng, ALICE, a["order_id"])
    assert order["status"] == "canceled" and order["fill_count_fp"] == "3.00"
    assert [m["event_type"] for m in rec.of("order_group_updates", ALICE)] == ["created", "triggered"]
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t, price="0.1000", order_group_id=gid))
    assert status == 400 and body["error"]["code"] == "invalid_order"
    assert call(eng, "PUT", f"/portfolio/order_groups/{gid}/reset", {}) == (200, {})
    place(eng, ALICE, t, "bid", "0.1000", "1.00", order_group_id=gid)
    assert call(eng, "GET", f"/portfolio/order_groups/{gid}")[1]["contracts_limit_fp"] == "3.00"


def test_order_group_window_forgets_old_matches():
    eng = make_engine()
    t = eng.slots[PLAIN]
    gid = _group(eng)
    a = place(eng, ALICE, t, "bid", "0.4000", "10.00", order_group_id=gid)
    place(eng, BOB, t, "ask", "0.4000", "2.00", "immediate_or_cancel")
    eng.advance(T0 + 15_001)
    place(eng, BOB, t, "ask", "0.4000", "2.00", "immediate_or_cancel")
    assert get_order(eng, ALICE, a["order_id"])["status"] == "resting"
    # lowering the limit below what the window holds triggers at once
    assert call(eng, "PUT", f"/portfolio/order_groups/{gid}/limit", {"contracts_limit_fp": "2.00"}) == (200, {})
    assert get_order(eng, ALICE, a["order_id"])["status"] == "canceled"


def test_order_group_trigger_and_delete_cancel_members():
    eng = make_engine()
    t = eng.slots[PLAIN]
    gid = _group(eng, "100.00")
    a = place(eng, ALICE, t, "bid", "0.4000", "1.00", order_group_id=gid)
    assert call(eng, "GET", "/portfolio/order_groups")[1]["order_groups"][0]["id"] == gid
    assert call(eng, "PUT", f"/portfolio/order_groups/{gid}/trigger", {}) == (200, {})
    assert get_order(eng, ALICE, a["order_id"])["status"] == "canceled"
    call(eng, "PUT", f"/portfolio/order_groups/{gid}/reset", {})
    b = place(eng, ALICE, t, "bid", "0.4000", "1.00", order_group_id=gid)
    assert call(eng, "DELETE", f"/portfolio/order_groups/{gid}") == (200, {})
    assert get_order(eng, ALICE, b["order_id"])["status"] == "canceled"
    assert call(eng, "GET", f"/portfolio/order_groups/{gid}")[0] == 404
    assert call(eng, "POST", "/portfolio/events/orders", order_body(t, order_group_id=gid))[0] == 404


def test_taker_in_group_stops_when_group_triggers_mid_match():
    eng = make_engine()
    t = eng.slots[PLAIN]
    gid = _group(eng, "2.00")
    for _ in range(4):
        place(eng, BOB, t, "ask", "0.5000", "1.00")
    resp = place(eng, ALICE, t, "bid", "0.5000", "4.00", order_group_id=gid)
    assert (resp["fill_count"], resp["remaining_count"]) == ("2.00", "0.00")


def test_ws_events_for_own_orders_fills_positions():
    eng = make_engine()
    t = eng.slots[PLAIN]
    rec = Recorder()
    eng.add_listener(rec)
    place(eng, BOB, t, "ask", "0.5200", "3.00", client_order_id="bob-1")
    delta = rec.of("orderbook_delta")[-1]
    assert delta["client_order_id"] == "bob-1" and delta["side"] == "no"
    assert (delta["price_dollars"], delta["delta_fp"]) == ("0.4800", "3.00")
    assert [e[1] for e in rec.events if e[0] == "orderbook_delta"] == [None]
    place(eng, ALICE, t, "bid", "0.9900", "1.00", "immediate_or_cancel", client_order_id="al-1")
    fill = rec.of("fill", ALICE)[-1]
    assert (fill["post_position_fp"], fill["yes_price_dollars"], fill["fee_cost"], fill["client_order_id"]) == (
        "1.00", "0.5200", "0.017500", "al-1")
    assert rec.of("fill", BOB)[-1]["post_position_fp"] == "-1.00"
    pos = rec.of("market_positions", ALICE)[-1]
    assert (pos["position_fp"], pos["position_cost_dollars"], pos["fees_paid_dollars"]) == ("1.00", "0.520000", "0.017500")
    trade = rec.of("trade")[-1]
    assert (trade["count_fp"], trade["taker_side"], trade["taker_outcome_side"], trade["taker_book_side"]) == (
        "1.00", "yes", "yes", "bid")
    fill_delta = rec.of("orderbook_delta")[-1]
    assert fill_delta["delta_fp"] == "-1.00" and "client_order_id" not in fill_delta
    assert rec.of("user_orders", ALICE)[-1]["status"] == "executed"
    assert rec.of("user_orders", BOB)[-1]["last_update_reason"] == "Trade"
    ticker = rec.of("ticker")[-1]
    assert (ticker["price_dollars"], ticker["yes_ask_dollars"], ticker["yes_ask_size_fp"], ticker["volume_fp"]) == (
        "0.5200", "0.5200", "2.00", "1.00")
    # private events name their user; public ones do not
    assert all(e[1] is None for e in rec.events if e[0] in ("orderbook_delta", "trade", "ticker"))
    assert all(e[1] in (ALICE, BOB) for e in rec.events if e[0] in ("fill", "user_orders", "market_positions"))
