"""End to end with the real engine (light: engine semantics are tested by the engine's own tests):
book reconstruction with the flow running, use_yes_price, private channels per user, lost response."""

from __future__ import annotations

import pytest
import requests

from kalshi.exchange import LocalExchange
from kalshi.units import PRICE_ONE, format_price, parse_price, parse_signed_count
from tests.integration.test_exchange_state_cli import needs_engine
from tests.integration.test_exchange_support import KEY_A, KEY_B, Client, keypair, recv, recv_until, send, ws_connect

pytestmark = [pytest.mark.timeout(90), needs_engine]


@pytest.fixture
def ex():
    exchange = LocalExchange(api_keys={KEY_A: keypair(0)[1], KEY_B: keypair(1)[1]}, flow="firehose",
                             rate_limits=False, ws_queue_limit=1_000_000, advance_interval_s=0.01).start()
    yield exchange
    exchange.stop()


def barrier(ws, cid: int) -> list[dict]:
    """Everything queued before now: the reply to a command comes after every frame queued before it."""
    send(ws, {"id": cid, "cmd": "list_subscriptions"})
    before, _ = recv_until(ws, lambda m: m.get("id") == cid and m["type"] == "ok", limit=2_000_000)
    return before


def levels(pairs) -> dict[int, int]:
    return {parse_price(p): parse_signed_count(c) for p, c in pairs}


def apply(books, m) -> None:
    msg = m["msg"]
    if m["type"] == "orderbook_snapshot":
        books[msg["market_ticker"]] = {"yes": levels(msg.get("yes_dollars_fp", [])),
                                       "no": levels(msg.get("no_dollars_fp", []))}
    elif m["type"] == "orderbook_delta":
        side = books[msg["market_ticker"]][msg["side"]]
        price = parse_price(msg["price_dollars"])
        size = side.get(price, 0) + parse_signed_count(msg["delta_fp"])
        if size <= 0:
            side.pop(price, None)
        else:
            side[price] = size


@pytest.mark.parametrize("use_yes_price", [False, True])
def test_book_from_ws_equals_rest_orderbook_with_firehose(ex, use_yes_price):
    tickers = list(ex.call(lambda e: e.market_tickers()))
    ws = ws_connect(ex, timeout=10)
    try:
        send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": tickers,
                                                           "use_yes_price": use_yes_price}})
        assert recv(ws)["type"] == "subscribed"
        books: dict = {}
        seq = 0
        deltas = 0
        while deltas < 5_000:
            m = recv(ws)
            assert m["seq"] == seq + 1
            seq = m["seq"]
            apply(books, m)
            deltas += m["type"] == "orderbook_delta"
        ex.set_flow("off")
        for m in barrier(ws, 2):
            assert m["seq"] == seq + 1
            seq = m["seq"]
            apply(books, m)
        c = Client(ex)
        for t in tickers:
            rest = c.get(f"/markets/{t}/orderbook").json()["orderbook_fp"]
            want_no = levels(rest.get("no_dollars") or [])
            if use_yes_price:
                want_no = {PRICE_ONE - p: n for p, n in want_no.items()}
            assert books[t]["yes"] == levels(rest.get("yes_dollars") or []), t
            assert books[t]["no"] == want_no, t
    finally:
        ws.close()


def create(c: Client, ticker: str, cid: str, price: str = "0.0100") -> requests.Response:
    body = {"ticker": ticker, "side": "bid", "count": "1.00", "price": price, "client_order_id": cid,
            "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross"}
    return c.post("/portfolio/events/orders", body)


def test_private_events_reach_only_their_user(ex):
    ex.set_flow("off")
    ticker = ex.call(lambda e: e.market_tickers())[0]
    wa, wb = ws_connect(ex, KEY_A), ws_connect(ex, KEY_B)
    try:
        for w in (wa, wb):
            send(w, {"id": 1, "cmd": "subscribe", "params": {"channels": ["user_orders", "orderbook_delta"],
                                                              "market_ticker": ticker}})
            recv_until(w, lambda m: m["type"] == "orderbook_snapshot")
        r = create(Client(ex, KEY_A), ticker, "e2e-a-1")
        assert r.status_code == 201, r.text
        got_a = barrier(wa, 2)
        got_b = barrier(wb, 2)
        assert [m["msg"]["client_order_id"] for m in got_a if m["type"] == "user_order"] == ["e2e-a-1"]
        assert not [m for m in got_b if m["type"] == "user_order"]
        own = [m for m in got_a if m["type"] == "orderbook_delta"]
        other = [m for m in got_b if m["type"] == "orderbook_delta"]
        assert own and own[0]["msg"].get("client_order_id") == "e2e-a-1"
        assert other and all("client_order_id" not in m["msg"] for m in other)
    finally:
        wa.close()
        wb.close()


def test_lost_response_then_query_finds_exactly_one_order(ex):
    ticker = ex.call(lambda e: e.market_tickers())[0]
    c = Client(ex)
    ex.faults.lose_response()
    with pytest.raises(requests.ConnectionError):
        create(c, ticker, "lost-1")
    orders = c.get("/portfolio/orders").json()["orders"]
    assert [o["client_order_id"] for o in orders] == ["lost-1"]
    r = create(c, ticker, "lost-1")
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_already_exists"


def test_rate_limited_writes_with_real_costs():
    with LocalExchange(api_keys={KEY_A: keypair(0)[1]}, flow="off") as ex:
        ticker = ex.call(lambda e: e.market_tickers())[0]
        c = Client(ex)
        codes = [create(c, ticker, f"rl-{i}").status_code for i in range(12)]
        assert codes[:10] == [201] * 10 and 429 in codes[10:]  # Basic write bucket: 100 tokens, 10 per create
        r = create(c, ticker, "rl-x")
        assert r.json() == {"error": "too many requests"}
