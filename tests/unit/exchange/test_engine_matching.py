"""Matching: crossing at the resting price, price-time priority, TIFs, post-only, reduce-only, STP,
expiration and market close."""

from __future__ import annotations

from kalshi.units import PRICE_ONE

from .test_engine_support import ALICE, BOB, CAROL, PLAIN, T0, Recorder, call, get_order, make_engine, order_body, place


def book(eng, ticker):
    status, body = call(eng, "GET", f"/markets/{ticker}/orderbook", user=None)
    assert status == 200
    return body["orderbook_fp"]


def test_demo_example_ioc_bid_fills_at_resting_no_bid_price():
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.5200", "3.00")  # a NO bid at 0.48
    assert book(eng, t) == {"no_dollars": [["0.4800", "3.00"]], "yes_dollars": []}
    resp = place(eng, ALICE, t, "bid", "0.9900", "1.00", "immediate_or_cancel", client_order_id="c1")
    assert resp["fill_count"] == "1.00" and resp["remaining_count"] == "0.00"
    assert resp["average_fill_price"] == "0.5200"
    assert resp["average_fee_paid"] == "0.0175"
    fills = call(eng, "GET", "/portfolio/fills", user=ALICE)[1]["fills"]
    assert len(fills) == 1
    f = fills[0]
    assert (f["yes_price_dollars"], f["no_price_dollars"], f["fee_cost"], f["is_taker"]) == ("0.5200", "0.4800", "0.017500", True)
    assert f["fill_id"] == f["trade_id"]
    assert eng.account_snapshot(ALICE)["positions"][t]["fees"] == 175
    order = get_order(eng, ALICE, resp["order_id"])
    assert order["status"] == "executed" and order["taker_fill_cost_dollars"] == "0.520000"
    # the maker's trade id is the same and the public trade matches
    bob_fill = call(eng, "GET", "/portfolio/fills", user=BOB)[1]["fills"][0]
    assert bob_fill["trade_id"] == f["trade_id"] and bob_fill["is_taker"] is False
    assert bob_fill["book_side"] == "ask" and bob_fill["outcome_side"] == "no"
    trade = call(eng, "GET", "/markets/trades", user=None, query={"ticker": [t]})[1]["trades"][0]
    assert trade["trade_id"] == f["trade_id"]
    assert (trade["taker_side"], trade["taker_outcome_side"], trade["taker_book_side"]) == ("yes", "yes", "bid")
    assert book(eng, t) == {"no_dollars": [["0.4800", "2.00"]], "yes_dollars": []}


def test_ask_crosses_yes_bids_at_their_price_best_first():
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "bid", "0.4500", "2.00")
    place(eng, BOB, t, "bid", "0.4700", "1.00")
    resp = place(eng, ALICE, t, "ask", "0.4000", "2.00", "immediate_or_cancel")
    assert resp["fill_count"] == "2.00"
    fills = call(eng, "GET", "/portfolio/fills", user=ALICE)[1]["fills"]
    # newest first: the second fill was at 0.45, the first at the better 0.47
    assert [f["yes_price_dollars"] for f in fills] == ["0.4500", "0.4700"]
    trades = call(eng, "GET", "/markets/trades", user=None)[1]["trades"]
    assert all(tr["taker_book_side"] == "ask" and tr["taker_outcome_side"] == "no" for tr in trades)
    assert book(eng, t)["yes_dollars"] == [["0.4500", "1.00"]]


def test_price_time_priority_within_a_level():
    eng = make_engine()
    t = eng.slots[PLAIN]
    first = place(eng, BOB, t, "bid", "0.4000", "1.00")
    second = place(eng, CAROL, t, "bid", "0.4000", "1.00")
    place(eng, ALICE, t, "ask", "0.4000", "1.00", "immediate_or_cancel")
    assert get_order(eng, BOB, first["order_id"])["status"] == "executed"
    assert get_order(eng, CAROL, second["order_id"])["status"] == "resting"


def test_gtc_remainder_rests_and_ioc_remainder_cancels():
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.6000", "1.00")
    gtc = place(eng, ALICE, t, "bid", "0.6000", "3.00")
    assert (gtc["fill_count"], gtc["remaining_count"]) == ("1.00", "2.00")
    assert book(eng, t)["yes_dollars"] == [["0.6000", "2.00"]]
    place(eng, BOB, t, "ask", "0.7000", "1.00")
    ioc = place(eng, CAROL, t, "bid", "0.7000", "3.00", "immediate_or_cancel")
    assert (ioc["fill_count"], ioc["remaining_count"]) == ("1.00", "0.00")
    assert get_order(eng, CAROL, ioc["order_id"])["status"] == "canceled"


def test_fill_or_kill_all_or_nothing():
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.6000", "2.00")
    killed = place(eng, ALICE, t, "bid", "0.6000", "3.00", "fill_or_kill")
    assert (killed["fill_count"], killed["remaining_count"]) == ("0.00", "0.00")
    assert book(eng, t)["no_dollars"] == [["0.4000", "2.00"]]
    filled = place(eng, ALICE, t, "bid", "0.6000", "2.00", "fill_or_kill")
    assert filled["fill_count"] == "2.00"


def test_post_only_cross_rejected_like_demo(wire_dir):
    from .test_engine_support import load_capture

    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "ask", "0.5200", "1.00")
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t, "bid", "0.9900", post_only=True))
    assert status == 400
    assert body == load_capture(wire_dir, "orders__post_only_cross")
    # a non-crossing post-only rests
    place(eng, ALICE, t, "bid", "0.4800", "1.00", post_only=True)


def test_reduce_only_caps_to_position_and_needs_ioc():
    eng = make_engine()
    t = eng.slots[PLAIN]
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t, "ask", "0.5000", reduce_only=True))
    assert status == 400 and body["error"]["code"] == "invalid_order"
    # no position: nothing to reduce
    resp = place(eng, ALICE, t, "ask", "0.4000", "5.00", "immediate_or_cancel", reduce_only=True)
    assert resp["fill_count"] == "0.00"
    # build a YES position of 2, then a reduce-only ask for 5 sells only 2
    place(eng, CAROL, t, "ask", "0.5000", "2.00")
    place(eng, ALICE, t, "bid", "0.5000", "2.00", "immediate_or_cancel")
    assert eng.account_snapshot(ALICE)["positions"][t]["q"] == 200
    place(eng, BOB, t, "bid", "0.5000", "10.00")
    rec = Recorder()
    eng.add_listener(rec)
    resp = place(eng, ALICE, t, "ask", "0.4000", "5.00", "immediate_or_cancel", reduce_only=True)
    assert resp["fill_count"] == "2.00"
    assert eng.account_snapshot(ALICE)["positions"][t]["q"] == 0
    assert rec.of("user_orders", ALICE)[-1]["last_update_reason"] == "ReduceOnlyCancel"


def test_stp_taker_at_cross_cancels_taker_leaves_resting(wire_dir):
    from .test_engine_support import load_capture

    eng = make_engine()
    t = eng.slots[PLAIN]
    resting = place(eng, ALICE, t, "bid", "0.4800", "1.00", post_only=True)
    resp = place(eng, ALICE, t, "ask", "0.4800", "1.00", "immediate_or_cancel", client_order_id="x")
    assert (resp["fill_count"], resp["remaining_count"]) == ("0.00", "0.00")
    assert set(resp) == set(load_capture(wire_dir, "orders__stp_self_cross"))
    assert get_order(eng, ALICE, resting["order_id"])["status"] == "resting"
    # fills made before reaching our own order stand
    place(eng, BOB, t, "bid", "0.5000", "1.00")
    resp = place(eng, ALICE, t, "ask", "0.4000", "3.00", "good_till_canceled")
    assert (resp["fill_count"], resp["remaining_count"]) == ("1.00", "0.00")
    assert get_order(eng, ALICE, resp["order_id"])["status"] == "canceled"


def test_stp_maker_cancels_own_resting_and_continues():
    eng = make_engine()
    t = eng.slots[PLAIN]
    own = place(eng, ALICE, t, "bid", "0.5000", "1.00")
    place(eng, BOB, t, "bid", "0.4900", "1.00")
    rec = Recorder()
    eng.add_listener(rec)
    resp = place(eng, ALICE, t, "ask", "0.4900", "2.00", "immediate_or_cancel",
                 self_trade_prevention_type="maker")
    assert resp["fill_count"] == "1.00"
    assert get_order(eng, ALICE, own["order_id"])["status"] == "canceled"
    reasons = [m["last_update_reason"] for m in rec.of("user_orders", ALICE) if m["order_id"] == own["order_id"]]
    assert reasons == ["SelfTradeCancel"]


def test_expiration_time_rules_and_expiry_cancel():
    eng = make_engine()
    t = eng.slots[PLAIN]
    now_s = T0 // 1000
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t, expiration_time=now_s - 1))
    assert status == 400 and body["error"]["code"] == "invalid_order"
    status, body = call(eng, "POST", "/portfolio/events/orders",
                        order_body(t, tif="immediate_or_cancel", expiration_time=now_s + 60))
    assert status == 400
    resp = place(eng, ALICE, t, "bid", "0.3000", "1.00", expiration_time=now_s + 10)
    assert get_order(eng, ALICE, resp["order_id"])["expiration_time"] == "2026-06-11T06:29:30Z"
    rec = Recorder()
    eng.add_listener(rec)
    before = eng.account_snapshot(ALICE)["available"]
    eng.advance(T0 + 9_999)
    assert get_order(eng, ALICE, resp["order_id"])["status"] == "resting"
    eng.advance(T0 + 10_000)
    assert get_order(eng, ALICE, resp["order_id"])["status"] == "canceled"
    assert rec.of("user_orders", ALICE)[-1]["last_update_reason"] == "ExpiryCancel"
    assert eng.account_snapshot(ALICE)["available"] > before
    assert book(eng, t)["yes_dollars"] == []


def test_market_close_cancels_resting_orders_and_rejects_new_ones():
    eng = make_engine(n_markets=1, market_duration_s=100, settlement_timer_s=10)
    t = eng.slots[0]
    resp = place(eng, ALICE, t, "bid", "0.3000", "1.00")
    rec = Recorder()
    eng.add_listener(rec)
    eng.advance(T0 + 100_000)
    assert get_order(eng, ALICE, resp["order_id"])["status"] == "canceled"
    assert rec.of("user_orders", ALICE)[-1]["last_update_reason"] == "CloseCancel"
    assert eng.account_snapshot(ALICE)["reserved"] == 0
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t))
    assert status == 400 and body["error"]["code"] == "market_closed"
    # a replacement market opened in the same slot
    assert eng.slots[0] != t and eng.markets[eng.slots[0]].status == "active"


def test_crossed_book_cannot_rest():
    eng = make_engine()
    t = eng.slots[PLAIN]
    place(eng, BOB, t, "bid", "0.5500", "5.00")
    place(eng, ALICE, t, "ask", "0.5000", "2.00")  # crosses: fills at 0.55
    ob = book(eng, t)
    assert ob["yes_dollars"] == [["0.5500", "3.00"]] and ob["no_dollars"] == []
    yes = max((int(p.replace(".", "")) for p, _ in ob["yes_dollars"]), default=0)
    no = max((int(p.replace(".", "")) for p, _ in ob["no_dollars"]), default=0)
    assert yes + no < PRICE_ONE
