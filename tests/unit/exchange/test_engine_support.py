"""Shared helpers for the engine tests (imported by the other test_engine_* files), plus tests of
the error-body shapes they rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kalshi.exchange.engine import Engine, EngineConfig, ExchangeError
from kalshi.exchange.flow import FlowConfig

T0 = 1_781_159_360_000  # 2026-06-11T06:29:20Z, the demo capture session
ALICE = "user-alice"
BOB = "user-bob"
CAROL = "user-carol"

# Slot layout of Engine markets (engine.SLOT_SERIES): 0 quadratic linear_cent, 1 maker fees,
# 2 deci_cent, 3 fee multiplier 0.5, 5 tapered_deci_cent.
PLAIN, MAKER_FEES, DECI, HALF_FEE, TAPERED = 0, 1, 2, 3, 5


def make_engine(**kw) -> Engine:
    kw.setdefault("flow", FlowConfig.off())
    return Engine(EngineConfig(**kw), T0)


def call(eng: Engine, method: str, path: str, body=None, user: str | None = ALICE, query=None, now=None):
    """(status, body); ExchangeError turned into (status, error body) like the server would."""
    try:
        return eng.handle(method, path, query or {}, body, user, now if now is not None else eng.now_ms)
    except ExchangeError as exc:
        return exc.status, exc.body()


def order_body(ticker: str, side: str = "bid", price: str = "0.5000", count: str = "1.00",
               tif: str = "good_till_canceled", **extra) -> dict:
    body = {"ticker": ticker, "side": side, "price": price, "count": count, "time_in_force": tif,
            "self_trade_prevention_type": "taker_at_cross"}
    body.update(extra)
    return body


def place(eng: Engine, user: str, ticker: str, side: str = "bid", price: str = "0.5000", count: str = "1.00",
          tif: str = "good_till_canceled", expect: int = 201, **extra) -> dict:
    status, body = call(eng, "POST", "/portfolio/events/orders", order_body(ticker, side, price, count, tif, **extra), user)
    assert status == expect, body
    return body


def get_order(eng: Engine, user: str, order_id: str) -> dict:
    status, body = call(eng, "GET", f"/portfolio/orders/{order_id}", user=user)
    assert status == 200, body
    return body["order"]


class Recorder:
    """Listener that keeps every WS event as (channel, user, ticker, type, msg)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def __call__(self, channel, user, ticker, msg_type, msg) -> None:
        self.events.append((channel, user, ticker, msg_type, msg))

    def of(self, channel: str, user: str | None = None) -> list[dict]:
        return [e[4] for e in self.events if e[0] == channel and (user is None or e[1] == user)]


def load_capture(wire_dir: Path, name: str):
    return json.loads((wire_dir / f"{name}.json").read_text())


def test_error_shapes():
    nested = ExchangeError(409, "order_already_exists")
    assert nested.body() == {"error": {"code": "order_already_exists", "message": "order already exists", "service": "exchange"}}
    detailed = ExchangeError(400, "invalid_order", details="post only cross")
    assert detailed.body() == {"error": {"code": "invalid_order", "message": "invalid order", "details": "post only cross"}}
    flat = ExchangeError(400, "bad_request", "bad request", details="json: x", shape="flat")
    assert flat.body() == {"code": "bad_request", "message": "bad request", "details": "json: x"}
    bare = ExchangeError(400, "bad_request", "Parameter validation failed", shape="bare")
    assert bare.body() == {"msg": "Parameter validation failed"}


def test_engine_config_rejects_bad_values():
    with pytest.raises(ValueError):
        EngineConfig(dedupe_client_order_ids="sometimes")
    with pytest.raises(ValueError):
        EngineConfig(fee_rounding_unit=7)
    with pytest.raises(ValueError):
        FlowConfig(whale_sizes=(1, 2), whale_weights=(1,))
