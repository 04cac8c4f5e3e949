"""kalshi.rest against a small scripted HTTP server on 127.0.0.1 (F06–F09, F19–F23, S2, S4)."""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from kalshi import rest
from kalshi.auth import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ClockOffset,
    Credentials,
    generate_key_pair,
    load_public_key,
    verify_signature,
)
from kalshi.wire import bodies as B

PREFIX = "/trade-api/v2"
CANARY_ID = "CANARY-rest-4c2b-9f00-canarykeyid00"

ORDER = {"order_id": "o-1", "client_order_id": "cid-1", "ticker": "KXT-1", "status": "resting", "book_side": "bid",
         "outcome_side": "yes", "yes_price_dollars": "0.5200", "no_price_dollars": "0.4800",
         "initial_count_fp": "5.00", "fill_count_fp": "0.00", "remaining_count_fp": "5.00",
         "created_time": "2026-11-24T15:02:03.120001Z"}
CREATED = {"order_id": "o-1", "client_order_id": "cid-1", "fill_count": "0.00", "remaining_count": "5.00",
           "ts_ms": 1764000123456}
BALANCE = {"balance": 9801, "balance_dollars": "98.0186", "portfolio_value": 198, "updated_ts": 1781159348}
MARKET = {"ticker": "KXT-1", "event_ticker": "KXT", "status": "active", "yes_bid_dollars": "0.4700",
          "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}]}


# ---------------------------------------------------------------- the scripted server


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    mode: str = "normal"  # normal | drop | hang | trickle | chunked | short
    interval: float = 0.05

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    auth: str  # ok | missing | skew | bad | none


def _error(code: str, message: str, details: str | None = None) -> dict:
    inner = {"code": code, "message": message}
    if details:
        inner["details"] = details
    return {"error": inner}


class FakeKalshi:
    def __init__(self, public_key) -> None:
        self.public_key = public_key
        self.routes: dict[tuple[str, str], list[Reply | Callable[[Seen], Reply]]] = {}
        self.requests: list[Seen] = []
        self.skew_s = 0.0
        self.window_s = 10.0
        self.require_auth = True
        self.stop = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, *args: object) -> None:
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                return email.utils.formatdate(time.time() + fake.skew_s, usegmt=True)

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}{PREFIX}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-kalshi")
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def on(self, method: str, path: str, *replies: Reply | Callable[[Seen], Reply]) -> None:
        self.routes[(method, PREFIX + path)] = list(replies)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return sum(1 for r in self.requests if (method is None or r.method == method)
                   and (path is None or r.path == PREFIX + path))

    def _check_auth(self, h: BaseHTTPRequestHandler, method: str) -> str:
        key, ts, sig = (h.headers.get(HEADER_KEY), h.headers.get(HEADER_TIMESTAMP), h.headers.get(HEADER_SIGNATURE))
        if key is None and ts is None and sig is None:
            return "none"
        if not (key and ts and sig):
            return "missing"
        if not ts.isdigit() or abs(int(ts) - (time.time() + self.skew_s) * 1000) > self.window_s * 1000:
            return "skew"
        return "ok" if verify_signature(self.public_key, ts, method, h.path, sig) else "bad"

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        seen = Seen(h.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                    {k: v for k, v in h.headers.items()}, body, self._check_auth(h, h.command))
        with self._lock:
            self.requests.append(seen)
            queue = self.routes.get((h.command, parts.path))
            item = None if not queue else (queue.pop(0) if len(queue) > 1 else queue[0])
        if seen.auth in ("missing", "none") and self.require_auth:
            reply = Reply(401, _error("signature_is_missing_from_headers", "signature is missing from headers"))
        elif seen.auth == "skew" and self.require_auth:
            reply = Reply(401, _error("header_timestamp_expired", "header timestamp expired"))
        elif seen.auth == "bad":
            reply = Reply(401, _error("authentication_error", "authentication_error", "INCORRECT_API_KEY_SIGNATURE"))
        elif item is None:
            reply = Reply(404, {"error": {"code": "not_found", "message": "not found", "service": "exchange"}})
        else:
            reply = item(seen) if callable(item) else item
        try:
            self._send(h, reply)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _send(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.mode == "drop":  # read the request, answer nothing, close
            h.close_connection = True
            return
        if reply.mode == "hang":
            self.stop.wait(30)
            h.close_connection = True
            return
        data = reply.payload()
        h.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        for k, v in headers.items():
            h.send_header(k, v)
        if reply.mode in ("chunked", "chunked_trickle"):
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            step = 1 if reply.mode == "chunked_trickle" else 65536
            for i in range(0, len(data), step):
                piece = data[i:i + step]
                h.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                h.wfile.flush()
                if reply.mode == "chunked_trickle" and self.stop.wait(reply.interval):
                    break
            else:
                h.wfile.write(b"0\r\n\r\n")
            h.close_connection = True
            return
        if "Content-Length" not in reply.headers:
            h.send_header("Content-Length", str(len(data) + (100 if reply.mode == "short" else 0)))
        h.end_headers()
        if reply.mode == "trickle":
            for i in range(len(data)):
                h.wfile.write(data[i:i + 1])
                h.wfile.flush()
                if self.stop.wait(reply.interval):
                    break
            h.close_connection = True
            return
        h.wfile.write(data)
        if reply.mode == "short":  # promised 100 more bytes than sent
            h.close_connection = True


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keypair():
    return generate_key_pair()


@pytest.fixture(scope="module")
def creds(keypair):
    return Credentials.from_pem_text(CANARY_ID, keypair[0])


@pytest.fixture
def fake(keypair):
    server = FakeKalshi(load_public_key(keypair[1]))
    yield server
    server.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(fake, creds, sleeps):
    made: list[rest.KalshiRest] = []

    def make(**kwargs: Any) -> rest.KalshiRest:
        options: dict[str, Any] = {"total_timeout": 5.0, "sleep": sleeps.append, "backoff_base": 0.2,
                                   "backoff_cap": 5.0, "clock_offset": ClockOffset()}
        options.update(kwargs)
        client = rest.KalshiRest(options.pop("base_url", fake.base_url), options.pop("credentials", creds), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client) -> rest.KalshiRest:
    return make_client()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_proxy_variables_do_not_reroute_requests(fake, make_client, monkeypatch):
    # A proxy that refuses every connection: a client that honoured it could not reach the fake at all.
    dead = f"http://127.0.0.1:{_closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    fake.on("GET", "/portfolio/orders", Reply(200, {"orders": [ORDER], "cursor": ""}))
    page = make_client(read_retries=0).get_orders(limit=1)
    assert page.orders[0].order_id == "o-1"


# ---------------------------------------------------------------- signing on the wire (S4)


def test_signed_get_with_query_verifies_and_decodes(fake, client):
    fake.on("GET", "/portfolio/orders", Reply(200, {"orders": [ORDER], "cursor": ""}))
    page = client.get_orders(status="resting", ticker="KXT-1", limit=5)
    assert page.orders[0].order_id == "o-1" and page.cursor == ""
    seen = fake.requests[-1]
    assert seen.auth == "ok" and seen.headers[HEADER_KEY] == CANARY_ID
    assert seen.query == {"status": ["resting"], "ticker": ["KXT-1"], "limit": ["5"]}


def test_every_call_is_signed_over_prefix_and_path(fake, client):
    fake.on("GET", "/portfolio/balance", Reply(200, BALANCE))
    fake.on("GET", "/markets/KXT-1/orderbook", Reply(200, {"orderbook_fp": {"yes_dollars": [["0.4700", "3.00"]],
                                                                              "no_dollars": []}}))
    fake.on("DELETE", "/portfolio/events/orders/o-1", Reply(200, {"order_id": "o-1", "reduced_by": "5.00",
                                                                    "ts_ms": 1}))
    fake.on("PUT", "/portfolio/order_groups/og_1/reset", Reply(200, {}))
    assert client.get_balance().balance == 980_186
    book = client.get_orderbook("KXT-1", depth=10)
    assert book.yes == ((4700, 300),) and book.ticker == "KXT-1"
    assert client.cancel_order("o-1", ticker="KXT-1").reduced_by == 500
    client.reset_order_group("og_1")
    assert [r.auth for r in fake.requests] == ["ok"] * 4
    assert fake.requests[1].query == {"depth": ["10"]}
    assert fake.requests[2].query == {"market_ticker": ["KXT-1"]} and fake.requests[2].body == b""
    # Body-less JSON PUT/POST carries {} (Kalshi answers invalid_content_type otherwise).
    assert fake.requests[3].body == b"{}" and fake.requests[3].headers["Content-Type"] == "application/json"


def test_public_client_sends_no_auth_headers(fake, make_client):
    fake.require_auth = False
    fake.on("GET", "/markets/KXT-1", Reply(200, {"market": MARKET}))
    public = make_client(credentials=None)
    assert public.get_market("KXT-1").yes_bid == 4700
    assert fake.requests[-1].auth == "none"


def test_create_order_body(fake, client):
    fake.on("POST", "/portfolio/events/orders", Reply(201, CREATED))
    result = client.create_order("KXT-1", "bid", 500, 5200, "good_till_canceled", "cid-1", order_group_id="og_1",
                                 expiration_time=1764050400)
    assert result == B.decode_create_order(CREATED)
    seen = fake.requests[-1]
    assert seen.auth == "ok" and seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {
        "ticker": "KXT-1", "client_order_id": "cid-1", "side": "bid", "count": "5.00", "price": "0.5200",
        "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross", "post_only": False,
        "reduce_only": False, "cancel_order_on_pause": False, "order_group_id": "og_1",
        "expiration_time": 1764050400}


def test_other_writes_bodies(fake, client):
    fake.on("POST", "/portfolio/events/orders/o-1/amend",
            Reply(200, {"order_id": "o-1", "client_order_id": "cid-1b", "remaining_count": "4.00",
                        "fill_count": "0.00", "ts_ms": 2}))
    fake.on("POST", "/portfolio/events/orders/o-1/decrease",
            Reply(200, {"order_id": "o-1", "client_order_id": "cid-1", "remaining_count": "2.00", "ts_ms": 3}))
    fake.on("POST", "/portfolio/events/orders/batched",
            Reply(201, {"orders": [{**CREATED, "error": None},
                                   {"client_order_id": "cid-2", "error": {"code": "invalid_price",
                                                                          "message": "invalid price"}}]}))
    fake.on("DELETE", "/portfolio/events/orders/batched",
            Reply(200, {"orders": [{"order_id": "o-1", "reduced_by": "5.00", "ts_ms": 4, "error": None}]}))
    fake.on("DELETE", "/portfolio/events/orders", Reply(204))
    fake.on("POST", "/portfolio/order_groups/create", Reply(201, {"order_group_id": "og_2", "subaccount": 0}))
    fake.on("PUT", "/portfolio/order_groups/og_2/limit", Reply(200, {}))
    fake.on("PUT", "/portfolio/order_groups/og_2/trigger", Reply(200, {}))
    fake.on("DELETE", "/portfolio/order_groups/og_2", Reply(200, {}))
    fake.on("GET", "/portfolio/order_groups/og_2", Reply(200, {"is_auto_cancel_enabled": True,
                                                                "contracts_limit_fp": "20.00", "orders": ["o-1"]}))
    fake.on("GET", "/portfolio/order_groups", Reply(200, {"order_groups": [{"id": "og_2",
                                                                            "contracts_limit_fp": "20.00"}]}))
    fake.on("GET", "/account/limits", Reply(200, {"usage_tier": "basic", "read": {"refill_rate": 200,
                                                  "bucket_capacity": 200}, "write": {"refill_rate": 100,
                                                  "bucket_capacity": 100}}))

    amend = client.amend_order("o-1", ticker="KXT-1", side="bid", price=5300, count=400, client_order_id="cid-1",
                               updated_client_order_id="cid-1b")
    assert amend.remaining_count == 400
    assert client.decrease_order("o-1", reduce_to=200).remaining_count == 200
    batch = client.batch_create_orders([
        rest.OrderRequest(ticker="KXT-1", side="bid", count=500, price=5200, time_in_force="immediate_or_cancel",
                          client_order_id="cid-1"),
        rest.OrderRequest(ticker="KXT-1", side="ask", count=100, price=5250, time_in_force="good_till_canceled",
                          client_order_id="cid-2")])
    assert batch.items[0].result.order_id == "o-1" and batch.items[1].error.code == "invalid_price"
    assert client.batch_cancel_orders(["o-1"]).items[0].result.reduced_by == 500
    assert client.cancel_all_orders() is None
    assert client.create_order_group(1000).order_group_id == "og_2"
    client.set_order_group_limit("og_2", 2000)
    client.trigger_order_group("og_2")
    assert client.get_order_group("og_2").order_ids == ("o-1",)
    assert client.list_order_groups()[0].contracts_limit == 2000
    client.delete_order_group("og_2")
    assert client.get_account_limits().write_refill_rate == 100

    bodies = {(r.method, r.path[len(PREFIX):]): r.body for r in fake.requests}
    assert json.loads(bodies[("POST", "/portfolio/events/orders/o-1/amend")]) == {
        "ticker": "KXT-1", "side": "bid", "price": "0.5300", "count": "4.00", "client_order_id": "cid-1",
        "updated_client_order_id": "cid-1b"}
    assert json.loads(bodies[("POST", "/portfolio/events/orders/o-1/decrease")]) == {"reduce_to": "2.00"}
    sent_batch = json.loads(bodies[("POST", "/portfolio/events/orders/batched")])
    assert [o["price"] for o in sent_batch["orders"]] == ["0.5200", "0.5250"]
    assert json.loads(bodies[("DELETE", "/portfolio/events/orders/batched")]) == {"orders": [{"order_id": "o-1"}]}
    assert json.loads(bodies[("POST", "/portfolio/order_groups/create")]) == {"contracts_limit_fp": "10.00"}
    assert json.loads(bodies[("PUT", "/portfolio/order_groups/og_2/limit")]) == {"contracts_limit_fp": "20.00"}
    assert bodies[("PUT", "/portfolio/order_groups/og_2/trigger")] == b"{}"
    assert all(r.auth == "ok" for r in fake.requests)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"count": 5.0}, TypeError),
        ({"count": 0}, ValueError),
        ({"price": 0}, ValueError),
        ({"price": 10_000}, ValueError),
        ({"price": "0.52"}, TypeError),
        ({"side": "buy"}, ValueError),
        ({"time_in_force": "gtc"}, ValueError),
        ({"client_order_id": ""}, ValueError),
        ({"ticker": "../portfolio"}, ValueError),
        ({"expiration_time": 5, "time_in_force": "immediate_or_cancel"}, ValueError),
        ({"reduce_only": True}, ValueError),
    ],
)
def test_invalid_order_arguments_never_reach_the_wire(fake, client, kwargs, exc):
    args = {"ticker": "KXT-1", "side": "bid", "count": 100, "price": 5200, "time_in_force": "good_till_canceled",
            "client_order_id": "cid-9", **kwargs}
    with pytest.raises(exc):
        client.create_order(**args)
    assert fake.requests == []


def test_path_injection_and_decrease_arguments_are_refused(fake, client):
    for bad in ("../x", "a/b", "a?b=1", "", "..", "a b"):
        with pytest.raises(ValueError):
            client.get_order(bad)
    with pytest.raises(ValueError):
        client.decrease_order("o-1")
    with pytest.raises(ValueError):
        client.decrease_order("o-1", reduce_by=100, reduce_to=100)
    assert fake.requests == []


# ---------------------------------------------------------------- retries: reads yes, writes never (F06, F07)


def test_reads_retry_on_5xx_then_succeed(fake, client, sleeps):
    fake.on("GET", "/portfolio/balance",
            Reply(500, _error("internal", "internal error")),
            Reply(502, "<html><title>502 Bad Gateway</title></html>", {"Content-Type": "text/html"}),
            Reply(200, BALANCE))
    assert client.get_balance().balance == 980_186
    assert fake.count("GET", "/portfolio/balance") == 3
    assert len(sleeps) == 2 and all(0 <= s <= 5.0 for s in sleeps)


def test_reads_give_up_after_bounded_retries(fake, make_client, sleeps):
    fake.on("GET", "/portfolio/balance", Reply(503, _error("service_unavailable", "service unavailable")))
    client = make_client(read_retries=2)
    with pytest.raises(rest.ServerError) as info:
        client.get_balance()
    assert info.value.status == 503 and info.value.code == "service_unavailable"
    assert fake.count() == 3 and len(sleeps) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_write_5xx_is_unknown_outcome_and_not_retried(fake, client, sleeps, status):
    fake.on("POST", "/portfolio/events/orders", Reply(status, _error("internal", "oops")), Reply(201, CREATED))
    with pytest.raises(rest.UnknownOutcomeError) as info:
        client.create_order("KXT-1", "bid", 100, 5200, "immediate_or_cancel", "cid-7")
    assert info.value.status == status and info.value.client_order_id == "cid-7"
    assert fake.count("POST") == 1 and sleeps == []


def test_write_timeout_is_unknown_outcome_within_the_deadline(fake, make_client):
    fake.on("POST", "/portfolio/events/orders", Reply(mode="hang"))
    client = make_client(total_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(rest.UnknownOutcomeError) as info:
        client.create_order("KXT-1", "bid", 100, 5200, "immediate_or_cancel", "cid-8")
    assert time.monotonic() - started < 3.0  # the server hangs for 30 s
    assert info.value.status is None and info.value.client_order_id == "cid-8"
    assert fake.count("POST") == 1


def test_write_connection_dropped_after_send_is_unknown_outcome(fake, client):
    fake.on("DELETE", "/portfolio/events/orders/o-1", Reply(mode="drop"))
    with pytest.raises(rest.UnknownOutcomeError):
        client.cancel_order("o-1")
    assert fake.count("DELETE") == 1


def test_refused_connection_is_not_sent(make_client, sleeps):
    client = make_client(base_url=f"http://127.0.0.1:{_closed_port()}{PREFIX}", read_retries=2)
    with pytest.raises(rest.NotSentError):
        client.create_order("KXT-1", "bid", 100, 5200, "immediate_or_cancel", "cid-9")
    assert sleeps == []
    with pytest.raises(rest.NotSentError):  # reads retry first, then report "never sent"
        client.get_balance()
    assert len(sleeps) == 2


def test_write_definitive_rejections_pass_through(fake, client, wire_dir):
    cases = [("orders__duplicate_client_order_id", 409, rest.DuplicateClientOrderIdError),
             ("orders__insufficient_balance", 400, rest.InsufficientBalanceError),
             ("orders__post_only_cross", 400, rest.InvalidOrderError),
             ("orders__numeric_field_types", 400, rest.InvalidOrderError),
             ("orders__invalid_price_structure", 400, rest.InvalidOrderError)]
    for name, status, cls in cases:
        fake.on("POST", "/portfolio/events/orders", Reply(status, (wire_dir / f"{name}.json").read_bytes()))
        with pytest.raises(cls) as info:
            client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-x")
        assert type(info.value) is cls and info.value.status == status
    assert fake.count("POST") == len(cases)


def test_error_captures_over_http_map_to_exceptions(fake, client, wire_dir):
    expected = {"auth__bad_signature": rest.AuthenticationError, "auth__unknown_key_id": rest.AuthenticationError,
                "auth__missing_signature_header": rest.AuthenticationError,
                "orders__cancel_unknown_id": rest.NotFoundError, "markets__limit_over_max": rest.KalshiApiError}
    for name, cls in expected.items():
        status = json.loads((wire_dir / f"{name}.meta.json").read_text())["status"]
        fake.on("GET", "/portfolio/balance", Reply(status, (wire_dir / f"{name}.json").read_bytes()))
        with pytest.raises(rest.KalshiApiError) as info:
            client.get_balance()
        assert type(info.value) is cls, name
    assert fake.count() == len(expected)  # 4xx reads are not retried


# ---------------------------------------------------------------- 429 (F08)


def test_429_backoff_is_bounded_with_jitter(fake, make_client, sleeps):
    fake.on("GET", "/markets", Reply(429, {"error": "too many requests"}))
    client = make_client(read_retries=4, backoff_base=0.2, backoff_cap=1.0)
    with pytest.raises(rest.RateLimitedError) as info:
        client.get_markets()
    assert info.value.status == 429 and info.value.message == "too many requests"
    assert fake.count() == 5 and len(sleeps) == 4
    caps = [min(1.0, 0.2 * 2**i) for i in range(4)]
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps))


def test_429_write_is_not_retried(fake, client, sleeps):
    fake.on("POST", "/portfolio/events/orders", Reply(429, {"error": "too many requests"}))
    with pytest.raises(rest.RateLimitedError):
        client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-r")
    assert fake.count() == 1 and sleeps == []


def test_retry_after_is_honoured_or_surfaces(fake, make_client, sleeps):
    fake.on("GET", "/markets", Reply(429, {"error": "too many requests"}, {"Retry-After": "2"}),
            Reply(200, {"markets": [], "cursor": ""}))
    client = make_client(total_timeout=5.0)
    assert client.get_markets().markets == ()
    assert sleeps == [2.0]
    # A Retry-After beyond the call's deadline is not slept: the error surfaces at once.
    fake.on("GET", "/markets", Reply(429, {"error": "too many requests"}, {"Retry-After": "30"}))
    with pytest.raises(rest.RateLimitedError) as info:
        client.get_markets()
    assert info.value.retry_after_s == 30.0 and sleeps == [2.0]


# ---------------------------------------------------------------- clock skew (F09)


def test_clock_skew_reestimates_and_retries_once(fake, make_client):
    fake.skew_s = 90.0
    fake.on("GET", "/portfolio/balance", Reply(200, BALANCE))
    fake.on("POST", "/portfolio/events/orders", Reply(201, CREATED))
    client = make_client()
    assert client.get_balance().balance == 980_186
    assert [r.auth for r in fake.requests] == ["skew", "ok"]
    assert abs(client.clock_offset.offset_ms - 90_000) < 2_000
    assert client.get_balance().balance == 980_186  # the estimate sticks
    assert len(fake.requests) == 3
    # The skew retry is safe for writes too (the first attempt was definitively rejected).
    fresh = make_client()
    assert fresh.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-1").order_id == "o-1"
    assert [r.auth for r in fake.requests[3:]] == ["skew", "ok"]


def test_clock_skew_beyond_the_hard_max_is_not_retried(fake, make_client):
    fake.skew_s = 90.0
    fake.on("GET", "/portfolio/balance", Reply(200, BALANCE))
    client = make_client(max_clock_offset_ms=60_000)
    with pytest.raises(rest.ClockSkewError):
        client.get_balance()
    assert len(fake.requests) == 1


def test_persistent_timestamp_rejection_retries_only_once(fake, client):
    fake.on("GET", "/portfolio/balance", Reply(401, _error("header_timestamp_expired", "header timestamp expired")))
    with pytest.raises(rest.ClockSkewError):
        client.get_balance()
    assert len(fake.requests) == 2


# ---------------------------------------------------------------- slowloris, size caps, bad bodies (F20, F23)


@pytest.mark.parametrize("mode", ["trickle", "chunked_trickle"])
def test_slowloris_body_hits_the_total_deadline(fake, make_client, mode):
    fake.on("GET", "/portfolio/balance", Reply(200, BALANCE, mode=mode, interval=0.05))  # ~6 s of trickle
    fake.on("POST", "/portfolio/events/orders", Reply(201, CREATED, mode=mode, interval=0.05))
    client = make_client(total_timeout=0.6, read_retries=3)
    started = time.monotonic()
    with pytest.raises(rest.TransportError):
        client.get_balance()
    assert time.monotonic() - started < 2.5  # ~6 s of trickle cut at 0.6 s, retries included
    started = time.monotonic()
    with pytest.raises(rest.UnknownOutcomeError):
        client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-s")
    assert time.monotonic() - started < 2.5


def test_body_size_cap(fake, make_client):
    big = b'{"markets": [], "cursor": "' + b"x" * 300_000 + b'"}'
    client = make_client(max_body_bytes=100_000)
    fake.on("GET", "/markets", Reply(200, big))  # honest Content-Length: refused before reading
    with pytest.raises(rest.InvalidResponseError, match="body_too_large"):
        client.get_markets()
    fake.on("GET", "/markets", Reply(200, big, mode="chunked"))  # no length: cut while streaming
    with pytest.raises(rest.InvalidResponseError, match="body_too_large"):
        client.get_markets()
    fake.on("POST", "/portfolio/events/orders", Reply(201, big, mode="chunked"))
    with pytest.raises(rest.UnknownOutcomeError, match="body_too_large"):
        client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-b")
    small = make_client(max_body_bytes=400_000)
    fake.on("GET", "/markets", Reply(200, big, mode="chunked"))
    assert small.get_markets().cursor.startswith("xxx")


def test_truncated_body_is_a_transport_failure(fake, client, sleeps):
    fake.on("GET", "/portfolio/balance", Reply(200, BALANCE, mode="short"), Reply(200, BALANCE))
    assert client.get_balance().balance == 980_186  # read retried after the short body
    assert len(sleeps) == 1
    fake.on("POST", "/portfolio/events/orders", Reply(201, CREATED, mode="short"))
    with pytest.raises(rest.UnknownOutcomeError):
        client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-t")


def test_2xx_with_error_is_never_success(fake, client):
    fake.on("GET", "/portfolio/orders/o-1", Reply(200, _error("not_found", "not found")))
    with pytest.raises(rest.NotFoundError):
        client.get_order("o-1")
    fake.on("POST", "/portfolio/events/orders", Reply(201, {"error": {"code": "internal", "message": "x"}}))
    with pytest.raises(rest.UnknownOutcomeError) as info:
        client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-e")
    assert info.value.code == "internal" and info.value.status == 201
    fake.on("POST", "/portfolio/events/orders", Reply(201, {"status": "ok"}))  # 2xx without an order
    with pytest.raises(rest.UnknownOutcomeError, match="create_order.order_id"):
        client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-f")
    fake.on("POST", "/portfolio/events/orders", Reply(201, "<html>ok</html>", {"Content-Type": "text/html"}))
    with pytest.raises(rest.UnknownOutcomeError, match="not JSON"):
        client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-g")


def test_html_200_on_a_read_is_an_invalid_response(fake, make_client, sleeps):
    fake.on("GET", "/exchange/status", Reply(200, "<!DOCTYPE html><html><title>Maintenance</title></html>",
                                             {"Content-Type": "text/html"}))
    client = make_client(read_retries=1)
    with pytest.raises(rest.InvalidResponseError, match="Maintenance"):
        client.get_exchange_status()
    assert fake.count() == 2
    fake.on("GET", "/exchange/status", Reply(200, b'{"exchange_active": NaN, "trading_active": true}'))
    with pytest.raises(rest.InvalidResponseError):
        client.get_exchange_status()


def test_redirects_are_not_followed(fake, client):
    fake.on("GET", "/portfolio/balance", Reply(302, b"", {"Location": "http://evil.example/steal"}))
    with pytest.raises(rest.KalshiApiError) as info:
        client.get_balance()
    assert info.value.status == 302 and fake.count() == 1


# ---------------------------------------------------------------- pagination (F21)


def _market(i: int) -> dict:
    return {**MARKET, "ticker": f"KXT-{i}"}


def test_pagination_follows_cursors_to_the_empty_one(fake, client):
    def page(seen: Seen) -> Reply:
        cursor = seen.query.get("cursor", [""])[0]
        nxt = {"": "c1", "c1": "c2", "c2": ""}[cursor]
        start = {"": 0, "c1": 2, "c2": 4}[cursor]
        return Reply(200, {"markets": [_market(start), _market(start + 1)], "cursor": nxt})

    fake.on("GET", "/markets", page)
    tickers = [m.ticker for m in client.iter_markets(status="open", limit=2)]
    assert tickers == [f"KXT-{i}" for i in range(6)]
    assert [r.query.get("cursor") for r in fake.requests] == [None, ["c1"], ["c2"]]
    assert all(r.query["status"] == ["open"] and r.query["limit"] == ["2"] for r in fake.requests)


def test_pagination_refuses_a_repeated_cursor(fake, client):
    fake.on("GET", "/markets/trades", Reply(200, {"trades": [], "cursor": "same"}))
    with pytest.raises(rest.PaginationError, match="already seen"):
        list(client.iter_trades(ticker="KXT-1"))
    assert fake.count() == 2


def test_pagination_refuses_a_cursor_cycle_and_caps_pages(fake, make_client):
    cycle = iter(["a", "b", "a"])
    fake.on("GET", "/portfolio/fills", lambda seen: Reply(200, {"fills": [], "cursor": next(cycle)}))
    client = make_client()
    with pytest.raises(rest.PaginationError):
        list(client.iter_fills())
    assert fake.count() == 3
    counter = iter(range(10_000))
    fake.on("GET", "/portfolio/settlements",
            lambda seen: Reply(200, {"settlements": [], "cursor": f"c{next(counter)}"}))
    capped = make_client(max_pages=4)
    with pytest.raises(rest.PaginationError, match="more than 4 pages"):
        list(capped.iter_settlements())
    assert fake.count("GET", "/portfolio/settlements") == 4


def test_find_order_by_client_order_id(fake, client):
    def orders(seen: Seen) -> Reply:
        if seen.query.get("cursor") is None:
            return Reply(200, {"orders": [{**ORDER, "order_id": "o-0", "client_order_id": "other"}], "cursor": "p2"})
        return Reply(200, {"orders": [{**ORDER, "status": "canceled"}], "cursor": ""})

    fake.on("GET", "/portfolio/orders", orders)
    found = client.find_order_by_client_order_id("cid-1", ticker="KXT-1")
    assert found is not None and found.order_id == "o-1" and found.status == "canceled"
    assert "status" not in fake.requests[0].query and fake.requests[0].query["ticker"] == ["KXT-1"]
    assert client.find_order_by_client_order_id("nope") is None


# ---------------------------------------------------------------- secrets stay secret (S2), logging


def test_no_secret_in_exceptions_or_logs(fake, client, creds, caplog):
    fake.on("GET", "/portfolio/balance", Reply(401, _error("authentication_error", "authentication_error",
                                                           f"key {CANARY_ID} unknown")))
    fake.on("POST", "/portfolio/events/orders", Reply(500, _error("internal", f"echo {CANARY_ID}")))
    caplog.set_level(logging.DEBUG, logger="kalshi")
    texts = []
    for call in (client.get_balance,
                 lambda: client.create_order("KXT-1", "bid", 100, 5200, "good_till_canceled", "cid-1")):
        with pytest.raises(rest.KalshiApiError) as info:
            call()
        texts += [str(info.value), repr(info.value), info.value.details or "", info.value.message or ""]
    texts += [r.getMessage() for r in caplog.records] + [repr(client)]
    signatures = [r.headers[HEADER_SIGNATURE] for r in fake.requests]
    for text in texts:
        assert CANARY_ID not in text and "PRIVATE KEY" not in text
        assert not any(sig[:24] in text for sig in signatures)
    lines = [r.getMessage() for r in caplog.records if r.name == "kalshi.rest"]
    assert any("GET /trade-api/v2/portfolio/balance -> 401" in line for line in lines)
    assert any("POST /trade-api/v2/portfolio/events/orders -> 500" in line for line in lines)


def test_exception_text_is_escaped_and_bounded():
    error = rest.parse_error_body(400, json.dumps({"error": {"code": "invalid_order", "message": "x\n" * 500,
                                                              "details": "\x1b[31mred"}}).encode())
    text = str(error)
    assert "\n" not in text and "\x1b" not in text and len(text) < 800
    assert type(error) is rest.InvalidOrderError


def test_parse_error_body_shapes():
    assert type(rest.parse_error_body(429, b'{"error": "too many requests"}')) is rest.RateLimitedError
    assert type(rest.parse_error_body(503, b"")) is rest.ServerError
    assert type(rest.parse_error_body(410, _dumps(_error("deprecated_v1_order_endpoint", "gone")))) \
        is rest.KalshiApiError
    odd = rest.parse_error_body(400, _dumps(_error("user_not_found:_1234", "user not found")))
    assert odd.code == "user_not_found:_1234" and type(odd) is rest.KalshiApiError
    html = rest.parse_error_body(502, b"<html><head><title>502 Bad Gateway</title></head></html>")
    assert type(html) is rest.ServerError and "502 Bad Gateway" in str(html)
    assert type(rest.parse_error_body(400, b'{"code":"bad_request","message":"bad request"}')) is rest.InvalidOrderError
    assert type(rest.parse_error_body(403, b'{"error":{"code":"forbidden","message":"no"}}')) is rest.AuthenticationError
    assert type(rest.parse_error_body(400, b'{"error":{"code":"available_balance_too_low","message":"x"}}')) \
        is rest.InsufficientBalanceError


def _dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_base_url_validation(creds):
    for bad in ("ftp://x/trade-api/v2", "127.0.0.1:8765/trade-api/v2", "http://h/trade-api/v2?x=1",
                "http://user:pw@h/trade-api/v2"):
        with pytest.raises(ValueError):
            rest.KalshiRest(bad, creds)


def test_markets_filters_on_the_wire(fake, client):
    fake.on("GET", "/markets", Reply(200, {"markets": [MARKET], "cursor": ""}))
    client.get_markets(tickers=["KXT-1", "KXT-2"], series_ticker="KXT", min_close_ts=5)
    client.get_markets(tickers="KXT-3")
    assert fake.requests[0].query == {"tickers": ["KXT-1,KXT-2"], "series_ticker": ["KXT"], "min_close_ts": ["5"]}
    assert fake.requests[1].query == {"tickers": ["KXT-3"]}


def test_lost_create_response_is_resolved_by_query(fake, client):
    """F07: the exchange accepted the order but the answer was lost; the client reports an unknown
    outcome and the order is then found by its client_order_id, with no resend."""
    fake.on("POST", "/portfolio/events/orders", Reply(mode="drop"))
    fake.on("GET", "/portfolio/orders", Reply(200, {"orders": [ORDER], "cursor": ""}))
    with pytest.raises(rest.UnknownOutcomeError) as info:
        client.create_order("KXT-1", "bid", 500, 5200, "good_till_canceled", "cid-1")
    found = client.find_order_by_client_order_id(info.value.client_order_id, ticker="KXT-1")
    assert found is not None and found.order_id == "o-1"
    assert fake.count("POST") == 1
