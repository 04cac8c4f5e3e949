"""Each fault of the local exchange, through the Python API and the loopback-only control endpoint."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from unittest import mock

import pytest
import requests
import websocket
from aiohttp.test_utils import make_mocked_request

from kalshi.exchange.faults import FaultInjector, control_routes, is_loopback_peer
from tests.helpers import wait_for
from tests.integration.test_exchange_support import (  # noqa: F401
    Client,
    make_exchange,
    recv,
    send,
    ws_connect,
)

pytestmark = pytest.mark.timeout(60)

ORDER = {"ticker": "FAKE-M0", "side": "yes", "price": "0.4000", "count": "1.00", "client_order_id": "f-1"}


@pytest.fixture
def ex(make_exchange):
    return make_exchange(rate_limits=False)


def my_orders(c: Client) -> list[dict]:
    return c.get("/portfolio/orders").json()["orders"]


# ---- REST ---------------------------------------------------------------------------------------
def test_fail_next_rest_calls_without_executing(ex):
    c = Client(ex)
    ex.faults.fail_rest(count=2, status=500, method="POST", path_prefix="/trade-api/v2/portfolio/events/orders")
    r = c.post("/portfolio/events/orders", ORDER)
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_server_error"
    assert my_orders(c) == []  # GETs do not match and the POST did not run
    assert c.post("/portfolio/events/orders", ORDER).status_code == 500
    assert c.post("/portfolio/events/orders", ORDER).status_code == 201  # same client_order_id: accepted once
    assert len(my_orders(c)) == 1
    ex.faults.fail_rest(count=1, status=503)
    r = c.get("/exchange/status", signed=False)
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    assert ex.faults.count("rest_500") == 2 and ex.faults.count("rest_503") == 1


def test_lost_response_drop_executes_then_drops(ex):
    c = Client(ex)
    ex.faults.lose_response()  # POST /portfolio/events/orders by default
    with pytest.raises(requests.ConnectionError):
        c.post("/portfolio/events/orders", ORDER)
    orders = my_orders(c)
    assert [o["client_order_id"] for o in orders] == ["f-1"]
    assert c.post("/portfolio/events/orders", ORDER).status_code == 409  # resend is refused
    assert ex.faults.count("lost_response_drop") == 1


def test_lost_response_delay_past_client_timeout(ex):
    c = Client(ex)
    ex.faults.lose_response(mode="delay", delay_ms=1500)
    with pytest.raises(requests.Timeout):
        c.post("/portfolio/events/orders", ORDER, timeout=0.3)
    assert len(my_orders(c)) == 1


def test_flood_429(ex):
    c = Client(ex)
    ex.faults.flood_429(0.4)
    t0 = time.monotonic()
    r = c.get("/exchange/status", signed=False)
    assert r.status_code == 429 and r.json() == {"error": "too many requests"} and "Retry-After" not in r.headers
    assert c.post("/portfolio/events/orders", ORDER).status_code == 429
    wait_for(lambda: c.get("/exchange/status", signed=False).status_code == 200, 5, message="flood over")
    assert time.monotonic() - t0 >= 0.35
    assert my_orders(c) == []


def test_clock_skew_fault(ex):
    c = Client(ex)
    ex.faults.skew_clock(90_000)
    r = c.get("/portfolio/balance")
    assert r.status_code == 401 and r.json()["error"]["code"] == "header_timestamp_expired"
    skew = email.utils.parsedate_to_datetime(r.headers["Date"]).timestamp() - time.time()
    assert 85 < skew < 95
    assert c.get("/portfolio/balance", skew_ms=90_000).status_code == 200
    ex.faults.skew_clock(0)
    assert c.get("/portfolio/balance").status_code == 200


def test_slow_responses(ex):
    c = Client(ex)
    ex.faults.slow_responses(300)
    t0 = time.monotonic()
    assert c.get("/exchange/status", signed=False).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    ex.faults.slow_responses(0)
    assert ex.faults.count("slow") == 1


def test_trickle_response_body(ex):
    c = Client(ex)
    ex.faults.trickle(count=1, chunk_bytes=8, interval_ms=30, path_prefix="/exchange/status")
    t0 = time.monotonic()
    r = c.get("/exchange/status", signed=False, timeout=10)
    elapsed = time.monotonic() - t0
    assert r.json() == {"exchange_active": True, "trading_active": True}
    assert elapsed >= 30 * (len(r.content) // 8 - 1) / 1000
    ex.faults.trickle(count=1, chunk_bytes=2, interval_ms=200, path_prefix="/exchange/status")
    with pytest.raises((requests.Timeout, requests.ConnectionError)):  # read timed out mid-body
        c.get("/exchange/status", signed=False, timeout=0.1)


# ---- WebSocket -----------------------------------------------------------------------------------
def subscribe_book(ws, tickers, cid=1):
    send(ws, {"id": cid, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": tickers}})
    assert recv(ws)["type"] == "subscribed"
    return [recv(ws) for _ in tickers]


def closed(ws) -> bool:
    try:
        op, _ = ws.recv_data(control_frame=False)
        return op == websocket.ABNF.OPCODE_CLOSE
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return True


def test_drop_all_connections(ex):
    ws = ws_connect(ex)
    try:
        subscribe_book(ws, ["FAKE-M0"])
        wait_for(lambda: ex.stats()["connections"] == 1, 5, message="connected")
        assert ex.faults.drop_ws() == 1
        assert closed(ws)
        wait_for(lambda: ex.stats()["connections"] == 0, 5, message="server forgot the connection")
    finally:
        ws.close()


def test_drop_mid_snapshot(ex):
    ex.faults.drop_ws(after_snapshots=2)
    ws = ws_connect(ex)
    try:
        send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"],
                                                           "market_tickers": ["FAKE-M0", "FAKE-M1", "FAKE-M2", "FAKE-M3"]}})
        got = []
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            for _ in range(10):
                got.append(recv(ws))
        assert [m["type"] for m in got] == ["subscribed", "orderbook_snapshot", "orderbook_snapshot"]
        assert ex.faults.count("ws_drop_mid_snapshot") == 1
    finally:
        ws.close()
    ws2 = ws_connect(ex)  # disarmed after one drop
    try:
        assert len(subscribe_book(ws2, ["FAKE-M0", "FAKE-M1", "FAKE-M2"])) == 3
    finally:
        ws2.close()


def emit_deltas(ex, n, ticker="FAKE-M0"):
    ex.call(lambda e: [e._apply(ticker, "yes", 1000, 100, None, None) for _ in range(n)])


@pytest.mark.parametrize("kind,expected", [
    ("skip", [3, 4, 5]),
    ("duplicate", [2, 2, 3, 4]),
    ("reorder", [3, 2, 4]),
])
def test_seq_faults(ex, kind, expected):
    ws = ws_connect(ex)
    try:
        subscribe_book(ws, ["FAKE-M0"])  # snapshot is seq 1
        assert ex.faults.seq_fault(kind, sid=1) == 1
        emit_deltas(ex, 3)
        assert [recv(ws)["seq"] for _ in expected] == expected
        assert ex.faults.count(f"seq_{kind}") == 1
    finally:
        ws.close()


def test_seq_fault_targets_one_sid(ex):
    ws = ws_connect(ex)
    try:
        subscribe_book(ws, ["FAKE-M0"])
        send(ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["trade"]}})
        recv(ws)
        ex.faults.seq_fault("skip", sid=2)
        emit_deltas(ex, 1)
        ex.call(lambda e: e.emit("trade", None, "FAKE-M0", "trade", {"market_ticker": "FAKE-M0"}))
        assert [(m["sid"], m["seq"]) for m in (recv(ws), recv(ws))] == [(1, 2), (2, 2)]
    finally:
        ws.close()


def test_stall_and_resume(make_exchange):
    ex = make_exchange(rate_limits=False, ping_interval_s=0.05)
    ws = ws_connect(ex)
    try:
        subscribe_book(ws, ["FAKE-M0"])
        ex.faults.stall_ws()
        emit_deltas(ex, 3)
        ws.settimeout(0.4)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv_frame()  # nothing at all, not even a ping
        ws.settimeout(5)
        ex.faults.resume_ws()
        seqs = []
        while len(seqs) < 3:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_TEXT:
                seqs.append(json.loads(frame.data)["seq"])
        assert seqs == [2, 3, 4]
    finally:
        ws.close()


@pytest.mark.parametrize("kind", ["malformed", "binary", "invalid_utf8", "oversized"])
def test_bad_frames(ex, kind):
    ws = ws_connect(ex)
    try:
        subscribe_book(ws, ["FAKE-M0"])
        assert ex.faults.send_bad_frame(kind) == 1
        frame = ws.recv_frame()
        if kind == "binary":
            assert frame.opcode == websocket.ABNF.OPCODE_BINARY
        else:
            assert frame.opcode == websocket.ABNF.OPCODE_TEXT
        if kind == "malformed":
            with pytest.raises(ValueError):
                json.loads(frame.data)
        elif kind == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                frame.data.decode("utf-8")
        elif kind == "oversized":
            assert len(frame.data) == 2 * 1024 * 1024
        emit_deltas(ex, 1)  # the connection keeps working
        assert recv(ws)["seq"] == 2
    finally:
        ws.close()


def test_error25_fault(ex):
    ws = ws_connect(ex)
    try:
        subscribe_book(ws, ["FAKE-M0"])
        assert ex.faults.send_error25(sid=1) == 1
        assert recv(ws) == {"type": "error", "sid": 1, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}
        emit_deltas(ex, 1)
        send(ws, {"id": 9, "cmd": "list_subscriptions"})
        assert recv(ws) == {"id": 9, "type": "ok", "msg": []}
    finally:
        ws.close()


# ---- control endpoint --------------------------------------------------------------------------------
def test_control_endpoint_drives_faults(ex):
    s = requests.Session()
    s.trust_env = False
    r = s.post(ex.control_url + "/rest/fail", json={"count": 1, "status": 503, "path_prefix": "/exchange"}, timeout=5)
    assert r.json() == {"ok": True}
    assert Client(ex).get("/exchange/status", signed=False).status_code == 503
    assert s.post(ex.control_url + "/rest/fail", json={"status": 200}, timeout=5).status_code == 400
    assert s.post(ex.control_url + "/rest/fail", json={"bogus": 1}, timeout=5).status_code == 400
    assert s.post(ex.control_url + "/rest/fail", data=b"[1", timeout=5).status_code == 400
    s.post(ex.control_url + "/rest/flood_429", json={"seconds": 30}, timeout=5)
    assert Client(ex).get("/exchange/status", signed=False).status_code == 429
    assert s.post(ex.control_url + "/reset", timeout=5).json() == {"ok": True}
    assert Client(ex).get("/exchange/status", signed=False).status_code == 200
    faults = s.get(ex.control_url + "/faults", timeout=5).json()["faults"]
    assert faults["applied"]["rest_503"] == 1 and faults["applied"]["flood_429"] == 1
    assert s.post(ex.control_url + "/ws/drop", json={}, timeout=5).json() == {"ok": True, "dropped": 0}
    s.close()


def test_control_endpoint_refuses_non_loopback_peers():
    assert is_loopback_peer("127.0.0.1") and is_loopback_peer("::1") and is_loopback_peer("127.5.0.1")
    assert not is_loopback_peer("10.0.0.5") and not is_loopback_peer(None) and not is_loopback_peer("garbage")
    injector = FaultInjector()
    route = next(r for r in control_routes(injector) if r.path == "/_control/rest/flood_429")
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: ("10.0.0.5", 4242) if name == "peername" else default
    req = make_mocked_request("POST", "/_control/rest/flood_429", headers={"X-Forwarded-For": "127.0.0.1"},
                              transport=transport)
    resp = asyncio.run(route.handler(req))
    assert resp.status == 403
    assert injector.snapshot()["pending"]["flood_429_s"] == 0.0


def test_client_that_never_reads_its_replies_is_dropped_not_buffered(make_exchange):
    from kalshi.exchange.server import REPLY_SLACK

    ex = make_exchange(rate_limits=False, ws_queue_limit=5)
    ws = ws_connect(ex)
    try:
        ex.faults.stall_ws()  # nothing is written: every reply stays queued
        sent = 0
        try:
            for i in range(1, 2 * REPLY_SLACK):
                send(ws, {"id": i, "cmd": "list_subscriptions"})
                sent = i
        except (ConnectionError, websocket.WebSocketConnectionClosedException):
            pass  # the server dropped us mid-flood
        assert sent >= REPLY_SLACK
        wait_for(lambda: ex.stats()["ws_slow_dropped"] == 1, 5, message="the connection is dropped")
        wait_for(lambda: ex.stats()["connections"] == 0, 5, message="and forgotten")
        ex.faults.resume_ws()
        assert closed(ws)
    finally:
        ws.close()


def test_duplicate_ws_events_resend_the_same_message(ex):
    """F04/F05: the same trade (same trade_id) and the same fill arrive twice; seq'd channels give the copy
    the next seq, so only a trade_id / fill_id check can catch it."""
    from kalshi.exchange import user_id_for_key
    from tests.integration.test_exchange_support import KEY_A

    ws = ws_connect(ex)
    try:
        send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["trade", "fill"]}})
        assert {recv(ws)["msg"]["channel"] for _ in range(2)} == {"trade", "fill"}
        ex.faults.duplicate_ws_events("trade")
        ex.faults.duplicate_ws_events(channel="fill", count=2)
        user = user_id_for_key(KEY_A)
        for n in range(3):
            ex.call(lambda e: e.emit("trade", None, "FAKE-M0", "trade", {"trade_id": f"t-{n}"}))
            ex.call(lambda e: e.emit("fill", user, "FAKE-M0", "fill", {"fill_id": f"f-{n}"}))
        got = [recv(ws) for _ in range(9)]
        trades = [(m["seq"], m["msg"]["trade_id"]) for m in got if m["type"] == "trade"]
        fills = [m["msg"]["fill_id"] for m in got if m["type"] == "fill"]
        assert trades == [(1, "t-0"), (2, "t-0"), (3, "t-1"), (4, "t-2")]
        assert fills == ["f-0", "f-0", "f-1", "f-1", "f-2"]
        assert ex.faults.count("duplicate_trade") == 1 and ex.faults.count("duplicate_fill") == 2
        with pytest.raises(ValueError):
            ex.faults.duplicate_ws_events("nope")
        with pytest.raises(ValueError):
            ex.faults.duplicate_ws_events("trade", count=0)
    finally:
        ws.close()


def test_flood_429_writes_only_keeps_reads_working(ex):
    c = Client(ex)
    ex.faults.flood_429(30, writes_only=True)
    assert c.post("/portfolio/events/orders", ORDER).status_code == 429
    assert c.get("/portfolio/orders").status_code == 200
    assert ex.faults.snapshot()["pending"]["flood_429_writes_only"] is True
    s = requests.Session()
    s.trust_env = False
    try:
        assert s.post(ex.control_url + "/ws/duplicate", json={"channel": "trade"}, timeout=5).json() == {"ok": True}
        assert s.post(ex.control_url + "/ws/duplicate", json={"channel": "x"}, timeout=5).status_code == 400
        assert s.post(ex.control_url + "/rest/flood_429", json={"seconds": 30, "writes_only": 1}, timeout=5).status_code == 400
        assert s.post(ex.control_url + "/reset", timeout=5).json() == {"ok": True}
    finally:
        s.close()
    assert c.post("/portfolio/events/orders", ORDER).status_code == 201
    assert ex.faults.count("flood_429") == 1
