"""Order management: cancel, amend, decrease, batches, cancel-all, client_order_id dedupe, request
validation and the exact error bodies Kalshi sends."""

from __future__ import annotations

from .test_engine_support import (
    ALICE, BOB, DECI, PLAIN, TAPERED, Recorder, call, get_order, load_capture, make_engine, order_body, place,
)


def test_cancel_and_the_404s_match_demo(wire_dir):
    eng = make_engine()
    t = eng.slots[PLAIN]
    resp = place(eng, ALICE, t, "bid", "0.0100", "1.00", client_order_id="a1")
    assert set(resp) == set(load_capture(wire_dir, "orders__create_v2_maker"))
    status, body = call(eng, "DELETE", f"/portfolio/events/orders/{resp['order_id']}")
    assert status == 200 and body["reduced_by"] == "1.00"
    assert set(body) == set(load_capture(wire_dir, "orders__cancel_v2"))
    not_found = load_capture(wire_dir, "orders__cancel_unknown_id")
    assert call(eng, "DELETE", f"/portfolio/events/orders/{resp['order_id']}") == (404, not_found)
    assert call(eng, "DELETE", "/portfolio/events/orders/00000000-0000-0000-0000-000000000000") == (404, not_found)
    place(eng, BOB, t, "ask", "0.5000", "1.00")
    ioc = place(eng, ALICE, t, "bid", "0.9900", "1.00", "immediate_or_cancel")
    assert call(eng, "DELETE", f"/portfolio/events/orders/{ioc['order_id']}") == (404, not_found)
    # someone else's order is not found either
    other = place(eng, BOB, t, "bid", "0.1000", "1.00")
    assert call(eng, "DELETE", f"/portfolio/events/orders/{other['order_id']}")[0] == 404
    assert call(eng, "GET", f"/portfolio/orders/{other['order_id']}")[0] == 404


def test_client_order_id_reuse_is_409_even_after_cancel(wire_dir):
    eng = make_engine()
    t = eng.slots[PLAIN]
    resp = place(eng, ALICE, t, "bid", "0.0100", "1.00", client_order_id="dup")
    conflict = (409, load_capture(wire_dir, "orders__duplicate_client_order_id"))
    assert call(eng, "POST", "/portfolio/events/orders", order_body(t, price="0.0100", client_order_id="dup")) == conflict
    call(eng, "DELETE", f"/portfolio/events/orders/{resp['order_id']}")
    assert call(eng, "POST", "/portfolio/events/orders", order_body(t, price="0.0100", client_order_id="dup")) == conflict
    # ids are per account
    place(eng, BOB, t, "bid", "0.0100", "1.00", client_order_id="dup")


def test_dedupe_open_only_frees_ids_of_dead_orders():
    eng = make_engine(dedupe_client_order_ids="open")
    t = eng.slots[PLAIN]
    resp = place(eng, ALICE, t, "bid", "0.0100", "1.00", client_order_id="dup")
    assert call(eng, "POST", "/portfolio/events/orders", order_body(t, client_order_id="dup"))[0] == 409
    call(eng, "DELETE", f"/portfolio/events/orders/{resp['order_id']}")
    place(eng, ALICE, t, "bid", "0.0100", "1.00", client_order_id="dup")


def test_numeric_count_is_flat_bad_request(wire_dir):
    eng = make_engine()
    t = eng.slots[PLAIN]
    body = order_body(t)
    body["count"] = 1
    body["price"] = 0.01
    assert call(eng, "POST", "/portfolio/events/orders", body) == (400, load_capture(wire_dir, "orders__numeric_field_types"))
    status, err = call(eng, "POST", "/portfolio/events/orders", ["not", "an", "object"])
    assert status == 400 and err["code"] == "bad_request"


def test_price_validation_against_price_ranges(wire_dir):
    eng = make_engine()
    invalid = (400, load_capture(wire_dir, "orders__invalid_price_structure"))
    lin, deci, tap = eng.slots[PLAIN], eng.slots[DECI], eng.slots[TAPERED]
    for price in ("0.5150", "0.0000", "1.0000", "abc", "-0.50"):
        assert call(eng, "POST", "/portfolio/events/orders", order_body(lin, price=price)) == invalid, price
    place(eng, ALICE, deci, "bid", "0.5150", "1.00")
    assert call(eng, "POST", "/portfolio/events/orders", order_body(deci, price="0.51505")) == invalid
    place(eng, ALICE, tap, "bid", "0.0150", "1.00")  # 0.1¢ ticks below 0.10
    assert call(eng, "POST", "/portfolio/events/orders", order_body(tap, price="0.5150")) == invalid
    place(eng, ALICE, tap, "bid", "0.5100", "1.00")
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(lin, count="0.00"))
    assert status == 400 and body["error"]["code"] == "invalid_order_size"
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body("NOPE-1"))
    assert status == 404
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(lin, side="buy"))
    assert status == 400 and body["error"]["code"] == "invalid_order"


def test_validation_order_price_before_size_before_duplicate_before_balance():
    eng = make_engine(start_balance=200)  # two cents
    t = eng.slots[PLAIN]
    place(eng, ALICE, t, "bid", "0.0100", "1.00", client_order_id="c", expect=201)
    bad_both = order_body(t, price="0.5150", count="0.00", client_order_id="c")
    assert call(eng, "POST", "/portfolio/events/orders", bad_both)[1]["error"]["code"] == "invalid_price"
    bad_size = order_body(t, count="0.00", client_order_id="c")
    assert call(eng, "POST", "/portfolio/events/orders", bad_size)[1]["error"]["code"] == "invalid_order_size"
    dup_poor = order_body(t, price="0.9000", count="50.00", client_order_id="c")
    assert call(eng, "POST", "/portfolio/events/orders", dup_poor)[0] == 409
    poor = order_body(t, price="0.9000", count="50.00", client_order_id="d")
    assert call(eng, "POST", "/portfolio/events/orders", poor)[1]["error"]["code"] == "insufficient_balance"


def test_amend_count_is_new_total_and_priority_rules():
    eng = make_engine()
    t = eng.slots[PLAIN]
    a = place(eng, ALICE, t, "bid", "0.4000", "5.00", client_order_id="a")
    b = place(eng, BOB, t, "bid", "0.4000", "5.00")
    place(eng, BOB, t, "ask", "0.4000", "1.00", "immediate_or_cancel")  # Alice is first in the queue
    assert get_order(eng, ALICE, a["order_id"])["fill_count_fp"] == "1.00"
    # pure decrease keeps priority: total 3 = 1 filled + 2 remaining
    status, body = call(eng, "POST", f"/portfolio/events/orders/{a['order_id']}/amend",
                        {"ticker": t, "side": "bid", "price": "0.4000", "count": "3.00", "client_order_id": "a",
                         "updated_client_order_id": "a2"})
    assert status == 200, body
    assert (body["fill_count"], body["remaining_count"], body["client_order_id"]) == ("1.00", "2.00", "a2")
    assert get_order(eng, ALICE, a["order_id"])["initial_count_fp"] == "3.00"
    status, q = call(eng, "GET", f"/portfolio/orders/{a['order_id']}/queue_position")
    assert q == {"queue_position_fp": "0.00"}
    # an increase goes to the back of the level
    call(eng, "POST", f"/portfolio/events/orders/{a['order_id']}/amend",
         {"ticker": t, "side": "bid", "price": "0.4000", "count": "4.00"})
    assert call(eng, "GET", f"/portfolio/orders/{a['order_id']}/queue_position")[1] == {"queue_position_fp": "5.00"}
    # mismatches
    status, body = call(eng, "POST", f"/portfolio/events/orders/{a['order_id']}/amend",
                        {"ticker": t, "side": "ask", "price": "0.4000", "count": "4.00"})
    assert (status, body["error"]["code"]) == (400, "order_side_mismatch")
    status, body = call(eng, "POST", f"/portfolio/events/orders/{a['order_id']}/amend",
                        {"ticker": "X", "side": "bid", "price": "0.4000", "count": "4.00"})
    assert body["error"]["code"] == "order_ticker_mismatch"
    # the old client id stays used (409) after being replaced
    assert call(eng, "POST", "/portfolio/events/orders", order_body(t, client_order_id="a"))[0] == 409
    # a price change that crosses trades at the resting price
    place(eng, BOB, t, "ask", "0.4500", "1.00")
    status, body = call(eng, "POST", f"/portfolio/events/orders/{a['order_id']}/amend",
                        {"ticker": t, "side": "bid", "price": "0.5000", "count": "4.00"})
    assert body["fill_count"] == "2.00" and body["remaining_count"] == "2.00"
    assert get_order(eng, BOB, b["order_id"])["status"] == "resting"


def test_decrease_by_and_to_and_to_zero():
    eng = make_engine()
    t = eng.slots[PLAIN]
    a = place(eng, ALICE, t, "bid", "0.4000", "10.00", client_order_id="d")
    path = f"/portfolio/events/orders/{a['order_id']}/decrease"
    status, body = call(eng, "POST", path, {"reduce_by": "3.00"})
    assert status == 200 and body == {"order_id": a["order_id"], "client_order_id": "d", "remaining_count": "7.00",
                                      "ts_ms": eng.now_ms}
    assert call(eng, "POST", path, {"reduce_to": "2.00"})[1]["remaining_count"] == "2.00"
    status, body = call(eng, "POST", path, {"reduce_by": "1.00", "reduce_to": "1.00"})
    assert status == 400
    rec = Recorder()
    eng.add_listener(rec)
    assert call(eng, "POST", path, {"reduce_to": "0.00"})[1]["remaining_count"] == "0.00"
    assert get_order(eng, ALICE, a["order_id"])["status"] == "canceled"
    assert rec.of("user_orders", ALICE)[-1]["last_update_reason"] == "Decrease"
    assert call(eng, "POST", path, {"reduce_by": "1.00"})[0] == 404


def test_batch_create_per_item_errors_and_batch_cancel():
    eng = make_engine()
    t = eng.slots[PLAIN]
    status, body = call(eng, "POST", "/portfolio/events/orders/batched", {"orders": [
        order_body(t, price="0.1000", client_order_id="b1"),
        order_body(t, price="0.1050", client_order_id="b2"),
        order_body(t, price="0.1100", client_order_id="b1"),
    ]})
    assert status == 201
    rows = body["orders"]
    assert rows[0]["error"] is None and rows[0]["remaining_count"] == "1.00"
    assert rows[1]["error"] == {"code": "invalid_price", "message": "invalid price", "service": "exchange"}
    assert "ts_ms" not in rows[1]
    assert rows[2]["error"]["code"] == "order_already_exists"
    status, body = call(eng, "DELETE", "/portfolio/events/orders/batched",
                        {"orders": [{"order_id": rows[0]["order_id"]}, {"order_id": "nope"}]})
    assert status == 200
    assert body["orders"][0]["reduced_by"] == "1.00" and body["orders"][0]["error"] is None
    assert body["orders"][1]["error"]["code"] == "not_found"


def test_cancel_all_returns_204():
    eng = make_engine()
    t, u = eng.slots[0], eng.slots[1]
    a = place(eng, ALICE, t, "bid", "0.1000", "1.00")
    b = place(eng, ALICE, u, "ask", "0.9000", "1.00")
    other = place(eng, BOB, t, "bid", "0.1000", "1.00")
    assert call(eng, "DELETE", "/portfolio/events/orders") == (204, None)
    assert get_order(eng, ALICE, a["order_id"])["status"] == "canceled"
    assert get_order(eng, ALICE, b["order_id"])["status"] == "canceled"
    assert get_order(eng, BOB, other["order_id"])["status"] == "resting"
    assert eng.account_snapshot(ALICE)["reserved"] == 0


def test_v1_writes_are_gone_but_reads_stay():
    eng = make_engine()
    t = eng.slots[PLAIN]
    status, body = call(eng, "POST", "/portfolio/orders", {"ticker": t, "action": "buy", "side": "yes", "count": 1, "yes_price": 1})
    assert status == 410 and body["error"]["code"] == "deprecated_v1_order_endpoint"
    assert call(eng, "DELETE", "/portfolio/orders/abc")[0] == 410
    assert call(eng, "POST", "/portfolio/orders/abc/amend", {})[0] == 410
    place(eng, ALICE, t, "bid", "0.1000", "1.00")
    status, body = call(eng, "GET", "/portfolio/orders")
    assert status == 200 and len(body["orders"]) == 1


def test_order_shapes_match_demo(wire_dir):
    eng = make_engine()
    t = eng.slots[PLAIN]
    resp = place(eng, ALICE, t, "bid", "0.0100", "1.00", client_order_id="k")
    assert set(get_order(eng, ALICE, resp["order_id"])) == set(load_capture(wire_dir, "orders__get_after_create")["order"])
    listed = call(eng, "GET", "/portfolio/orders", query={"limit": ["10"]})[1]
    capture = load_capture(wire_dir, "portfolio__orders_list")
    assert set(listed) == set(capture)
    assert set(listed["orders"][0]) == set(capture["orders"][0])
    place(eng, BOB, t, "ask", "0.5200", "1.00")
    taker = place(eng, ALICE, t, "bid", "0.9900", "1.00", "immediate_or_cancel", client_order_id="k2")
    assert set(taker) == set(load_capture(wire_dir, "orders__create_v2_taker_ioc"))
    fills = call(eng, "GET", "/portfolio/fills", query={"limit": ["10"]})[1]
    fcap = load_capture(wire_dir, "fills__after_taker")
    assert set(fills) == set(fcap) and set(fills["fills"][0]) == set(fcap["fills"][0])


def test_out_of_range_integers_and_expirations_are_rejected_not_stored():
    """A value Go cannot unmarshal (beyond int64) or a timestamp that cannot be shown must be refused:
    stored, it would turn every later listing of the user's orders into a 500."""
    from .test_engine_support import call, make_engine, order_body

    eng = make_engine(n_markets=1)
    t = eng.slots[0]
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t, expiration_time=2**70))
    assert status == 400 and "int64" in body["details"]
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t, subaccount=-(2**63) - 1))
    assert status == 400
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(t, expiration_time=2**40))
    assert status == 400 and body["error"]["details"] == "expiration_time is too far in the future"
    status, order = call(eng, "POST", "/portfolio/events/orders",
                         order_body(t, expiration_time=253_402_300_799, client_order_id="far"))
    assert status == 201
    amend = {"ticker": t, "side": "bid", "price": "0.5000", "count": "1.00", "expiration_time": 2**40}
    status, body = call(eng, "POST", f"/portfolio/events/orders/{order['order_id']}/amend", amend)
    assert status == 400 and body["error"]["details"] == "expiration_time is too far in the future"
    status, listing = call(eng, "GET", "/portfolio/orders")
    assert status == 200 and [o["client_order_id"] for o in listing["orders"]] == ["far"]
