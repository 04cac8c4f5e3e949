"""Shared pieces for the exchange transport tests: a small fake engine with the engine contract's
API, signing written straight from the protocol doc (not our kalshi/ client), and WS helpers.

The fake engine lets the transport be tested precisely (events on demand, a deterministic flow);
tests against the real engine live in test_exchange_engine_e2e.py.
"""

from __future__ import annotations

import base64
import functools
import json
import random
import time
import uuid
from dataclasses import dataclass

import pytest
import requests
import websocket
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kalshi.exchange import LocalExchange
from kalshi.units import PRICE_ONE, format_count, format_price, parse_count, parse_price


# ---- keys and signing (straight from protocol §1) ------------------------------------------------
@functools.lru_cache(maxsize=4)
def keypair(n: int = 0) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pub


def sign(key: rsa.RSAPrivateKey, ts: str, method: str, path: str) -> str:
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    return base64.b64encode(key.sign(f"{ts}{method}{path}".encode(), pss, hashes.SHA256())).decode()


def auth_headers(key_id: str, key: rsa.RSAPrivateKey, method: str, path: str, skew_ms: int = 0) -> dict[str, str]:
    ts = str(int(time.time() * 1000) + skew_ms)
    return {
        "KALSHI-ACCESS-KEY": key_id,
        "KALSHI-ACCESS-TIMESTAMP": ts,
        "KALSHI-ACCESS-SIGNATURE": sign(key, ts, method, path.split("?", 1)[0]),
    }


KEY_A = "11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
KEY_B = "22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


class Client:
    """A plain `requests` Kalshi client for one key."""

    def __init__(self, ex: LocalExchange, key_id: str = KEY_A, key: rsa.RSAPrivateKey | None = None) -> None:
        self.ex = ex
        self.key_id = key_id
        self.key = key or keypair(0 if key_id == KEY_A else 1)[0]
        self.session = requests.Session()
        self.session.trust_env = False

    def request(self, method: str, path: str, *, signed: bool = True, json_body=None, skew_ms: int = 0,
                timeout: float = 5.0) -> requests.Response:
        url = self.ex.rest_url + path
        full_path = "/trade-api/v2" + path
        headers = auth_headers(self.key_id, self.key, method, full_path, skew_ms) if signed else {}
        return self.session.request(method, url, headers=headers, json=json_body, timeout=timeout)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: dict, **kw) -> requests.Response:
        return self.request("POST", path, json_body=body, **kw)

    def close(self) -> None:
        self.session.close()


def ws_connect(ex: LocalExchange, key_id: str = KEY_A, timeout: float = 5.0) -> websocket.WebSocket:
    key = keypair(0 if key_id == KEY_A else 1)[0]
    headers = auth_headers(key_id, key, "GET", "/trade-api/ws/v2")
    return websocket.create_connection(
        ex.ws_url, header=[f"{k}: {v}" for k, v in headers.items()], timeout=timeout,
        skip_utf8_validation=True, http_proxy_host=None, enable_multithread=True,
    )


def recv(ws: websocket.WebSocket) -> dict:
    """The next JSON text frame (pings are answered by websocket-client and not returned)."""
    while True:
        op, data = ws.recv_data(control_frame=False)
        if op == websocket.ABNF.OPCODE_TEXT:
            return json.loads(data)


def recv_until(ws: websocket.WebSocket, pred, limit: int = 10_000) -> tuple[list[dict], dict]:
    seen = []
    for _ in range(limit):
        m = recv(ws)
        if pred(m):
            return seen, m
        seen.append(m)
    raise AssertionError("message not seen")


def send(ws: websocket.WebSocket, obj) -> None:
    ws.send(json.dumps(obj))


# ---- the fake engine ------------------------------------------------------------------------------
class FakeExchangeError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "service": "exchange"}}


@dataclass(frozen=True)
class FakeConfig:
    n_markets: int = 4
    flow_per_s: int = 0  # synthetic deltas per second when advance() runs
    seed: int = 7


class FakeEngine:
    """Implements the engine contract's API with a tiny market model (bids only, no matching)."""

    def __init__(self, config: FakeConfig, now_ms: int) -> None:
        self.config = config
        self.now = now_ms
        self.rng = random.Random(config.seed)
        self.tickers = tuple(f"FAKE-M{i}" for i in range(config.n_markets))
        self.books = {t: {"yes": {}, "no": {}} for t in self.tickers}
        self.orders: dict[str, dict] = {}
        self.cids: set[tuple[str, str]] = set()
        self.accounts: dict[str, int] = {}
        self.listeners = []
        self.flow_carry = 0.0
        self.advances = 0

    # contract -------------------------------------------------------------------------------------
    def ensure_account(self, user_id: str) -> None:
        self.accounts.setdefault(user_id, 1_000_000)

    def add_listener(self, fn) -> None:
        self.listeners.append(fn)

    def market_exists(self, ticker: str) -> bool:
        return ticker in self.books

    def market_tickers(self) -> tuple[str, ...]:
        return self.tickers

    def is_private(self, method: str, path: str) -> bool:
        return path.startswith(("/portfolio", "/account"))

    def request_cost(self, method: str, path: str, body) -> tuple[str, int]:
        if method == "GET":
            return "read", 2 if path.startswith("/portfolio/orders/") else 10
        return "write", 2 if method == "DELETE" else 10

    def handle(self, method, path, query, body, user, now_ms):
        self.now = now_ms
        if method == "GET" and path == "/exchange/status":
            return 200, {"exchange_active": True, "trading_active": True}
        if method == "GET" and path == "/markets":
            return 200, {"markets": [{"ticker": t} for t in self.tickers], "cursor": ""}
        if method == "GET" and path.startswith("/markets/") and path.endswith("/orderbook"):
            t = path.split("/")[2]
            if t not in self.books:
                raise FakeExchangeError(404, "not_found", "not found")
            return 200, {"orderbook_fp": {side: self._levels(t, side) for side in ("yes_dollars", "no_dollars")}}
        if method == "GET" and path == "/portfolio/balance":
            return 200, {"balance": self.accounts[user] // 100, "portfolio_value": 0}
        if method == "GET" and path == "/portfolio/orders":
            mine = [o for o in self.orders.values() if o["user"] == user]
            return 200, {"orders": [self._order_json(o) for o in mine], "cursor": ""}
        if method == "POST" and path == "/portfolio/events/orders":
            return 201, {"order": self._order_json(self._create(body, user))}
        raise FakeExchangeError(404, "not_found", "not found")

    def orderbook_snapshot_msg(self, ticker: str, use_yes_price: bool = False) -> dict:
        msg = {"market_ticker": ticker, "market_id": "id-" + ticker}
        yes = self._levels(ticker, "yes_dollars")
        no = self._levels(ticker, "no_dollars")
        if use_yes_price:
            no = sorted([format_price(PRICE_ONE - parse_price(p)), c] for p, c in no)
        if yes:
            msg["yes_dollars_fp"] = yes
        if no:
            msg["no_dollars_fp"] = no
        return msg

    def ticker_msg(self, ticker: str) -> dict:
        return {"market_ticker": ticker, "price_dollars": "0.5000", "ts_ms": self.now}

    def advance(self, now_ms: int) -> None:
        elapsed = max(0, now_ms - self.now)
        self.now = now_ms
        self.advances += 1
        if self.config.flow_per_s:
            self.flow_carry += elapsed * self.config.flow_per_s / 1000
            n = int(self.flow_carry)
            self.flow_carry -= n
            self.random_deltas(n)

    def to_state(self) -> dict:
        return {
            "config": {"n_markets": self.config.n_markets, "flow_per_s": self.config.flow_per_s, "seed": self.config.seed},
            "books": {t: {s: {str(p): c for p, c in lv.items()} for s, lv in b.items()} for t, b in self.books.items()},
            "orders": self.orders, "cids": sorted(list(x) for x in self.cids), "accounts": self.accounts,
        }

    @classmethod
    def from_state(cls, state: dict, now_ms: int) -> "FakeEngine":
        eng = cls(FakeConfig(**state["config"]), now_ms)
        eng.books = {t: {s: {int(p): c for p, c in lv.items()} for s, lv in b.items()} for t, b in state["books"].items()}
        eng.orders = state["orders"]
        eng.cids = {tuple(x) for x in state["cids"]}
        eng.accounts = state["accounts"]
        return eng

    def account_snapshot(self, user_id: str) -> dict:
        return {"balance": self.accounts[user_id], "orders": [o for o in self.orders.values() if o["user"] == user_id]}

    # helpers for tests (run via LocalExchange.call) ---------------------------------------------------
    def emit(self, channel, user, ticker, msg_type, msg) -> None:
        for fn in self.listeners:
            fn(channel, user, ticker, msg_type, msg)

    def random_deltas(self, n: int) -> None:
        for _ in range(n):
            t = self.rng.choice(self.tickers)
            side = self.rng.choice(("yes", "no"))
            levels = self.books[t][side]
            price = self.rng.randrange(1, 50) * 100  # bids below 0.50 on both legs: never crossed
            have = levels.get(price, 0)
            delta = -have if have and self.rng.random() < 0.3 else self.rng.randrange(1, 6) * 100
            self._apply(t, side, price, delta, None, None)
            if self.rng.random() < 0.05:
                self.emit("trade", None, t, "trade", {"trade_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                                                      "market_ticker": t, "count_fp": "1.00", "ts_ms": self.now})

    def _apply(self, t, side, price, delta, user, cid) -> None:
        levels = self.books[t][side]
        new = levels.get(price, 0) + delta
        if new <= 0:
            levels.pop(price, None)
        else:
            levels[price] = new
        msg = {"market_ticker": t, "market_id": "id-" + t, "price_dollars": format_price(price),
               "delta_fp": format_count(delta), "side": side, "ts_ms": self.now}
        if cid is not None:
            msg["client_order_id"] = cid
            msg["subaccount"] = 0
        self.emit("orderbook_delta", user, t, "orderbook_delta", msg)

    def _levels(self, t: str, key: str) -> list[list[str]]:
        side = key.split("_")[0]
        return [[format_price(p), format_count(c)] for p, c in sorted(self.books[t][side].items())]

    def _create(self, body, user) -> dict:
        if not isinstance(body, dict) or body.get("ticker") not in self.books:
            raise FakeExchangeError(400, "invalid_order", "invalid order")
        cid = body.get("client_order_id")
        if cid is not None and (user, cid) in self.cids:
            raise FakeExchangeError(409, "order_already_exists", "order already exists")
        side = body["side"]
        price, count = parse_price(body["price"]), parse_count(body["count"])
        oid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        order = {"order_id": oid, "user": user, "ticker": body["ticker"], "side": side, "price": price,
                 "count": count, "client_order_id": cid}
        self.orders[oid] = order
        if cid is not None:
            self.cids.add((user, cid))
        self._apply(body["ticker"], side, price, count, user, cid)
        self.emit("user_orders", user, body["ticker"], "user_order",
                  {"order_id": oid, "ticker": body["ticker"], "status": "resting", "client_order_id": cid})
        self.emit("market_positions", user, body["ticker"], "market_position",
                  {"market_ticker": body["ticker"], "position_fp": "0.00"})
        return order

    @staticmethod
    def _order_json(o: dict) -> dict:
        return {"order_id": o["order_id"], "ticker": o["ticker"], "side": o["side"],
                "yes_price_dollars": format_price(o["price"]), "remaining_count_fp": format_count(o["count"]),
                "client_order_id": o["client_order_id"] or "", "status": "resting"}


def fake_exchange(**kw) -> LocalExchange:
    """A LocalExchange around the fake engine, keys A and B registered."""
    cfg = kw.pop("config", FakeConfig())
    keys = {KEY_A: keypair(0)[1], KEY_B: keypair(1)[1]}
    return LocalExchange(api_keys=keys, engine_cls=FakeEngine, engine_config=cfg, **kw)


@pytest.fixture
def make_exchange():
    """Factory fixture: every exchange it starts is stopped at teardown."""
    started: list[LocalExchange] = []

    def make(**kw) -> LocalExchange:
        ex = fake_exchange(**kw).start()
        started.append(ex)
        return ex

    yield make
    for ex in started:
        ex.stop()
