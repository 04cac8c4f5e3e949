"""WebSocket transport of the local exchange, driven with websocket-client from the protocol doc:
auth on the upgrade, command replies and error codes, sids and seq, snapshot-then-deltas, book
reconstruction vs REST with the flow running, use_yes_price, private-channel isolation, heartbeat,
error 25 on a slow client, error 26 (markets per subscription) and 27 (commands per second)."""

from __future__ import annotations

import json

import pytest
import websocket

from kalshi.units import PRICE_ONE, format_price, parse_count, parse_price, parse_signed_count
from tests.integration.test_exchange_support import (  # noqa: F401
    KEY_A,
    KEY_B,
    Client,
    FakeConfig,
    auth_headers,
    keypair,
    make_exchange,
    recv,
    recv_until,
    send,
    ws_connect,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ex(make_exchange):
    return make_exchange(rate_limits=False)


@pytest.fixture
def ws(ex):
    conn = ws_connect(ex)
    yield conn
    conn.close()


def test_upgrade_requires_auth(ex):
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(ex.ws_url, timeout=5)
    assert err.value.status_code == 401
    h = auth_headers(KEY_A, keypair(1)[0], "GET", "/trade-api/ws/v2")
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(ex.ws_url, header=[f"{k}: {v}" for k, v in h.items()], timeout=5)
    assert err.value.status_code == 401
    assert json.loads(err.value.resp_body)["error"]["details"] == "INCORRECT_API_KEY_SIGNATURE"


def test_subscribe_replies_one_per_channel_with_distinct_sids(ws):
    send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta", "trade"],
                                                       "market_tickers": ["FAKE-M0", "FAKE-M1"]}})
    a, b = recv(ws), recv(ws)
    assert a == {"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}}
    assert b == {"id": 1, "type": "subscribed", "msg": {"channel": "trade", "sid": 2}}
    snaps = [recv(ws), recv(ws)]
    assert [(s["type"], s["sid"], s["seq"]) for s in snaps] == [("orderbook_snapshot", 1, 1), ("orderbook_snapshot", 1, 2)]
    assert [s["msg"]["market_ticker"] for s in snaps] == ["FAKE-M0", "FAKE-M1"]
    send(ws, {"id": 2, "cmd": "list_subscriptions"})
    assert recv(ws) == {"id": 2, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": 1},
                                                        {"channel": "trade", "sid": 2}]}
    send(ws, {"id": 3, "cmd": "unsubscribe", "params": {"sids": [2]}})
    assert recv(ws) == {"id": 3, "sid": 2, "seq": 0, "type": "unsubscribed"}
    send(ws, {"id": 4, "cmd": "list_subscriptions"})
    assert recv(ws)["msg"] == [{"channel": "orderbook_delta", "sid": 1}]


@pytest.mark.parametrize("cmd,code", [
    ("not json", 1),
    ([1, 2], 1),
    ({"id": 1, "cmd": "dance"}, 5),
    ({"id": 1}, 5),
    ({"id": 1, "cmd": "subscribe"}, 2),
    ({"id": 1, "cmd": "subscribe", "params": {}}, 3),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["weather"]}}, 8),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}}, 14),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "market_tickers": ["bad ticker"]}}, 11),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "market_tickers": ["NOPE-1"]}}, 11),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "market_ticker": "FAKE-M0",
                                               "market_tickers": ["FAKE-M1"]}}, 11),
    ({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "use_yes_price": "yes"}}, 11),
    ({"id": 1, "cmd": "unsubscribe", "params": {}}, 4),
    ({"id": 1, "cmd": "unsubscribe", "params": {"sids": [42]}}, 7),
    ({"id": 1, "cmd": "update_subscription", "params": {"sids": [1, 2], "action": "add_markets"}}, 12),
    ({"id": 1, "cmd": "update_subscription", "params": {"sid": 42, "action": "add_markets"}}, 7),
])
def test_command_error_codes(ws, cmd, code):
    ws.send(cmd if isinstance(cmd, str) else json.dumps(cmd))
    reply = recv(ws)
    assert reply["type"] == "error" and reply["msg"]["code"] == code, reply
    if isinstance(cmd, dict) and "id" in cmd:
        assert reply["id"] == 1


def test_update_subscription(ex, ws):
    send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": "FAKE-M0"}})
    recv(ws), recv(ws)
    send(ws, {"id": 2, "cmd": "update_subscription", "params": {"sid": 1, "market_tickers": ["FAKE-M2"]}})
    assert recv(ws)["msg"]["code"] == 15
    send(ws, {"id": 3, "cmd": "update_subscription", "params": {"sid": 1, "action": "jump", "market_tickers": ["FAKE-M2"]}})
    assert recv(ws)["msg"]["code"] == 13
    send(ws, {"id": 4, "cmd": "update_subscription", "params": {"sid": 1, "action": "add_markets"}})
    assert recv(ws)["msg"]["code"] == 14
    send(ws, {"id": 5, "cmd": "update_subscription", "params": {"sid": 1, "action": "add_markets",
                                                                 "market_tickers": ["FAKE-M2"]}})
    assert recv(ws) == {"id": 5, "sid": 1, "seq": 1, "type": "ok", "msg": {"market_tickers": ["FAKE-M0", "FAKE-M2"]}}
    snap = recv(ws)
    assert (snap["type"], snap["seq"], snap["msg"]["market_ticker"]) == ("orderbook_snapshot", 2, "FAKE-M2")
    send(ws, {"id": 6, "cmd": "update_subscription", "params": {"sids": [1], "action": "get_snapshot",
                                                                 "market_tickers": ["FAKE-M0"]}})
    snap = recv(ws)
    assert (snap["type"], snap["id"], snap["seq"], snap["msg"]["market_ticker"]) == ("orderbook_snapshot", 6, 3, "FAKE-M0")
    send(ws, {"id": 7, "cmd": "update_subscription", "params": {"sid": 1, "action": "delete_markets",
                                                                 "market_tickers": ["FAKE-M0"]}})
    assert recv(ws)["msg"] == {"market_tickers": ["FAKE-M2"]}
    # deltas now only for FAKE-M2
    ex.call(lambda e: e._apply("FAKE-M0", "yes", 1000, 100, None, None))
    ex.call(lambda e: e._apply("FAKE-M2", "yes", 1000, 100, None, None))
    m = recv(ws)
    assert (m["type"], m["seq"], m["msg"]["market_ticker"]) == ("orderbook_delta", 4, "FAKE-M2")


def test_resubscribe_is_idempotent_and_merges_tickers(ex, ws):
    send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": ["FAKE-M0"]}})
    recv(ws), recv(ws)
    send(ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"],
                                                       "market_tickers": ["FAKE-M0", "FAKE-M1"]}})
    assert recv(ws) == {"id": 2, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}}
    snap = recv(ws)  # only the new market is snapshotted, on the same sid/seq
    assert (snap["sid"], snap["seq"], snap["msg"]["market_ticker"]) == (1, 2, "FAKE-M1")
    send(ws, {"id": 3, "cmd": "list_subscriptions"})
    assert recv(ws)["msg"] == [{"channel": "orderbook_delta", "sid": 1}]


def test_trade_without_tickers_gets_all_markets_and_seq_is_per_sid(ex, ws):
    send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"]}})
    send(ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["ticker", "market_lifecycle_v2"]}})
    assert [recv(ws)["msg"]["sid"] for _ in range(3)] == [1, 2, 3]
    for t in ("FAKE-M0", "FAKE-M3"):
        ex.call(lambda e, t=t: e.emit("trade", None, t, "trade", {"market_ticker": t}))
        ex.call(lambda e, t=t: e.emit("ticker", None, t, "ticker", {"market_ticker": t}))
        ex.call(lambda e, t=t: e.emit("market_lifecycle_v2", None, t, "market_lifecycle_v2", {"market_ticker": t}))
    got = [recv(ws) for _ in range(6)]
    trades = [m for m in got if m["type"] == "trade"]
    assert [(m["sid"], m["seq"], m["msg"]["market_ticker"]) for m in trades] == [(1, 1, "FAKE-M0"), (1, 2, "FAKE-M3")]
    tickers = [m for m in got if m["type"] == "ticker"]
    assert all("seq" not in m and m["sid"] == 2 for m in tickers) and len(tickers) == 2
    life = [m for m in got if m["type"] == "market_lifecycle_v2"]
    assert [(m["sid"], m["seq"]) for m in life] == [(3, 1), (3, 2)]


def test_ticker_initial_snapshot_and_skip_ack(ws):
    send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"], "market_ticker": "FAKE-M1",
                                                       "send_initial_snapshot": True, "skip_ticker_ack": True}})
    m = recv(ws)
    assert m["type"] == "ticker" and m["msg"]["market_ticker"] == "FAKE-M1" and "seq" not in m


def _apply_book(book: dict, side: str, price: str, delta: int) -> None:
    levels = book[side]
    new = levels.get(price, 0) + delta
    if new <= 0:
        levels.pop(price, None)
    else:
        levels[price] = new


def test_book_from_snapshot_and_deltas_equals_rest_with_flow_running(make_exchange):
    ex = make_exchange(rate_limits=False, config=FakeConfig(flow_per_s=3000), advance_interval_s=0.01)
    tickers = ["FAKE-M0", "FAKE-M1", "FAKE-M2", "FAKE-M3"]
    ws = ws_connect(ex)
    try:
        send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": tickers}})
        assert recv(ws)["type"] == "subscribed"
        books: dict[str, dict] = {}
        last_seq = 0
        count = 0
        while count < 2000:
            m = recv(ws)
            assert m["seq"] == last_seq + 1, "seq must be continuous"
            last_seq = m["seq"]
            msg = m["msg"]
            if m["type"] == "orderbook_snapshot":
                books[msg["market_ticker"]] = {
                    "yes": {p: parse_count(c) for p, c in msg.get("yes_dollars_fp", [])},
                    "no": {p: parse_count(c) for p, c in msg.get("no_dollars_fp", [])},
                }
            else:
                assert msg["market_ticker"] in books, "delta before its snapshot"
                _apply_book(books[msg["market_ticker"]], msg["side"], msg["price_dollars"], parse_signed_count(msg["delta_fp"]))
                count += 1
        # freeze the flow; the reply to a later command comes after every frame queued before it
        ex.call(lambda e: setattr(e, "config", FakeConfig(flow_per_s=0)))
        send(ws, {"id": 2, "cmd": "list_subscriptions"})
        rest_of_it, _ = recv_until(ws, lambda m: m.get("id") == 2, limit=1_000_000)
        for m in rest_of_it:
            assert m["seq"] == last_seq + 1
            last_seq = m["seq"]
            _apply_book(books[m["msg"]["market_ticker"]], m["msg"]["side"], m["msg"]["price_dollars"],
                        parse_signed_count(m["msg"]["delta_fp"]))
        c = Client(ex)
        for t in tickers:
            rest = c.get(f"/markets/{t}/orderbook").json()["orderbook_fp"]
            assert {p: parse_count(n) for p, n in rest["yes_dollars"]} == books[t]["yes"]
            assert {p: parse_count(n) for p, n in rest["no_dollars"]} == books[t]["no"]
    finally:
        ws.close()


def test_use_yes_price_converts_no_side(ex):
    ex.call(lambda e: e._apply("FAKE-M0", "no", 4800, 500, None, None))
    ws_no, ws_yes = ws_connect(ex), ws_connect(ex)
    try:
        send(ws_no, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": "FAKE-M0",
                                                              "use_yes_price": False}})
        send(ws_yes, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": "FAKE-M0",
                                                               "use_yes_price": True}})
        for w in (ws_no, ws_yes):
            recv(w)
        assert recv(ws_no)["msg"]["no_dollars_fp"] == [["0.4800", "5.00"]]
        assert recv(ws_yes)["msg"]["no_dollars_fp"] == [["0.5200", "5.00"]]
        ex.call(lambda e: e._apply("FAKE-M0", "no", 4800, -100, None, None))
        ex.call(lambda e: e._apply("FAKE-M0", "yes", 3000, 100, None, None))
        assert [recv(ws_no)["msg"]["price_dollars"] for _ in range(2)] == ["0.4800", "0.3000"]
        assert [recv(ws_yes)["msg"]["price_dollars"] for _ in range(2)] == ["0.5200", "0.3000"]
    finally:
        ws_no.close()
        ws_yes.close()


def test_private_channels_are_isolated_per_user(ex):
    wa, wb = ws_connect(ex, KEY_A), ws_connect(ex, KEY_B)
    try:
        for w in (wa, wb):
            send(w, {"id": 1, "cmd": "subscribe", "params": {"channels": ["user_orders", "fill", "market_positions",
                                                                           "order_group_updates"]}})
            send(w, {"id": 2, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": "FAKE-M2"}})
            [recv(w) for _ in range(6)]  # 5 subscribed + 1 snapshot
        body = {"ticker": "FAKE-M2", "side": "yes", "price": "0.4000", "count": "2.00", "client_order_id": "mine-1"}
        assert Client(ex, KEY_A).post("/portfolio/events/orders", body).status_code == 201
        got_a = [recv(wa) for _ in range(3)]
        by_type = {m["type"]: m for m in got_a}
        assert set(by_type) == {"orderbook_delta", "user_order", "market_position"}
        assert by_type["orderbook_delta"]["msg"]["client_order_id"] == "mine-1"
        assert "seq" not in by_type["user_order"] and "seq" not in by_type["market_position"]
        delta_b = recv(wb)
        assert delta_b["type"] == "orderbook_delta" and "client_order_id" not in delta_b["msg"]
        assert "subaccount" not in delta_b["msg"]
        # B sees nothing private of A's: the next thing B gets is its own order's events
        body_b = dict(body, client_order_id="b-1", price="0.3000")
        assert Client(ex, KEY_B).post("/portfolio/events/orders", body_b).status_code == 201
        next_b = [recv(wb) for _ in range(3)]
        assert {m["type"] for m in next_b} == {"orderbook_delta", "user_order", "market_position"}
        assert next(m for m in next_b if m["type"] == "user_order")["msg"]["client_order_id"] == "b-1"
        other = recv(wa)  # B's order shows in A's public book feed, without B's client_order_id
        assert other["type"] == "orderbook_delta" and "client_order_id" not in other["msg"]
        ex.call(lambda e: e.emit("order_group_updates", ex.user_id(KEY_A), None, "order_group_updates",
                                 {"event_type": "created", "order_group_id": "og1"}))
        og = recv(wa)
        assert og["type"] == "order_group_updates" and og["seq"] == 1
    finally:
        wa.close()
        wb.close()


def test_server_pings_with_heartbeat_payload(make_exchange):
    ex = make_exchange(ping_interval_s=0.1)
    ws = ws_connect(ex)
    try:
        op, data = None, None
        for _ in range(50):
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_PING:
                op, data = frame.opcode, frame.data
                break
        assert op == websocket.ABNF.OPCODE_PING and data == b"heartbeat"
        ws.ping(b"x")  # and the server answers our ping
        for _ in range(50):
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_PONG:
                assert frame.data == b"x"
                break
        else:
            raise AssertionError("no pong")
    finally:
        ws.close()


def test_slow_client_gets_error_25_and_loses_the_subscription(make_exchange):
    ex = make_exchange(ws_queue_limit=50)
    ws = ws_connect(ex)
    try:
        send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta", "trade"],
                                                           "market_ticker": "FAKE-M0"}})
        [recv(ws) for _ in range(3)]
        ex.faults.stall_ws()  # the writer stops, so the queue fills as if the client did not read
        ex.call(lambda e: [e._apply("FAKE-M0", "yes", 1000, 100, None, None) for _ in range(80)])
        ex.faults.resume_ws()
        _, err = recv_until(ws, lambda m: m["type"] == "error")
        assert err["sid"] == 1 and err["msg"]["code"] == 25
        send(ws, {"id": 2, "cmd": "list_subscriptions"})
        _, listing = recv_until(ws, lambda m: m.get("id") == 2)
        assert listing["msg"] == [{"channel": "trade", "sid": 2}]
        assert ex.stats()["overflows"] == 1
    finally:
        ws.close()


def test_yes_price_helper_matches_units():
    assert format_price(PRICE_ONE - parse_price("0.4800")) == "0.5200"


# ---- limits Kalshi has but does not publish: error 26 and error 27 ---------------------------------
def test_market_limit_per_subscription_is_error_26(make_exchange):
    ex = make_exchange(rate_limits=False, ws_max_markets_per_sub=2)
    ws = ws_connect(ex)
    try:
        send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"],
                                                           "market_tickers": ["FAKE-M0", "FAKE-M1", "FAKE-M2"]}})
        assert recv(ws) == {"id": 1, "type": "error", "msg": {"code": 26, "msg": "Subscription market limit exceeded"}}
        send(ws, {"id": 2, "cmd": "list_subscriptions"})
        assert recv(ws) == {"id": 2, "type": "ok", "msg": []}  # nothing was created
        send(ws, {"id": 3, "cmd": "subscribe", "params": {"channels": ["orderbook_delta", "trade"],
                                                           "market_tickers": ["FAKE-M0", "FAKE-M1"]}})
        replies = [recv(ws) for _ in range(4)]  # two acks and two snapshots
        assert [r["type"] for r in replies].count("subscribed") == 2
        # a re-subscribe that would grow the subscription past the limit changes nothing
        send(ws, {"id": 4, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": "FAKE-M3"}})
        assert recv(ws) == {"id": 4, "type": "error", "sid": 1,
                            "msg": {"code": 26, "msg": "Subscription market limit exceeded"}}
        send(ws, {"id": 5, "cmd": "update_subscription", "params": {"sid": 2, "action": "add_markets",
                                                                     "market_tickers": ["FAKE-M2"]}})
        assert recv(ws)["msg"]["code"] == 26
        # markets already in the subscription do not count twice; after a delete there is room again
        send(ws, {"id": 6, "cmd": "update_subscription", "params": {"sid": 1, "action": "add_markets",
                                                                     "market_tickers": ["FAKE-M1"]}})
        assert recv(ws)["msg"] == {"market_tickers": ["FAKE-M0", "FAKE-M1"]}
        send(ws, {"id": 7, "cmd": "update_subscription", "params": {"sid": 1, "action": "delete_markets",
                                                                     "market_tickers": ["FAKE-M0"]}})
        assert recv(ws)["msg"] == {"market_tickers": ["FAKE-M1"]}
        send(ws, {"id": 8, "cmd": "update_subscription", "params": {"sid": 1, "action": "add_markets",
                                                                     "market_tickers": ["FAKE-M3"]}})
        assert recv(ws)["msg"] == {"market_tickers": ["FAKE-M1", "FAKE-M3"]}
        assert recv(ws)["msg"]["market_ticker"] == "FAKE-M3"  # its snapshot
        # an all-markets subscription has no list to grow
        send(ws, {"id": 9, "cmd": "subscribe", "params": {"channels": ["ticker"]}})
        assert recv(ws)["type"] == "subscribed"
        assert ex.stats()["ws_market_limit"] == 3
    finally:
        ws.close()


def test_command_rate_per_connection_is_error_27(make_exchange):
    ex = make_exchange(rate_limits=False, ws_commands_per_s=2)
    ws = ws_connect(ex)
    other = ws_connect(ex)
    try:
        for i in range(1, 11):
            send(ws, {"id": i, "cmd": "list_subscriptions"})
        send(ws, "not json")
        replies = [recv(ws) for _ in range(11)]
        assert replies[0] == {"id": 1, "type": "ok", "msg": []} and replies[1]["id"] == 2
        throttled = [r for r in replies if r["type"] == "error"]
        assert throttled and all(r["msg"] == {"code": 27, "msg": "Too many requests"} for r in throttled)
        assert {r.get("id") for r in throttled} <= set(range(3, 11)) | {None}
        assert replies[-1] == {"type": "error", "msg": {"code": 27, "msg": "Too many requests"}}  # garbage counts too
        assert ex.stats()["ws_throttled"] == len(throttled)
        send(other, {"id": 1, "cmd": "list_subscriptions"})  # the budget is per connection
        assert recv(other) == {"id": 1, "type": "ok", "msg": []}
    finally:
        ws.close()
        other.close()


@pytest.mark.parametrize("kwargs", [{"ws_max_markets_per_sub": 0}, {"ws_commands_per_s": 0},
                                    {"ws_commands_per_s": -1.5}, {"ws_max_markets_per_sub": "5"}])
def test_ws_limits_reject_bad_settings(kwargs):
    from tests.integration.test_exchange_support import fake_exchange

    ex = fake_exchange(**kwargs)
    try:
        with pytest.raises(ValueError):
            ex.start()
    finally:
        ex.stop()
