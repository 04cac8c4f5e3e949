"""Bounded memory (finalized markets are pruned after a retention period, users' records stay) and the
flow switch (Engine.set_flow: pause, resume, retune; persisted)."""

from __future__ import annotations

import json

import pytest

from kalshi.exchange.engine import Engine, EngineConfig
from kalshi.exchange.flow import FlowConfig

from .test_engine_support import ALICE, BOB, T0, call, make_engine, place

HOUR_MS = 3_600_000


def test_long_run_with_flow_keeps_the_number_of_markets_bounded():
    flow = FlowConfig(messages_per_s=40, whale_every_s=20.0, noise_takers_per_s=0.5)
    cfg = EngineConfig(seed=4, n_markets=4, market_duration_s=600, settlement_timer_s=60,
                       finalized_retention_s=3600, flow=flow)
    eng = Engine(cfg, T0)
    step_ms = 120_000
    peak = 0
    for i in range(1, 3 * 24 * 30 + 1):  # three simulated days in 2-minute steps
        eng.advance(T0 + i * step_ms)
        peak = max(peak, len(eng.markets))
    created = eng._market_seq
    assert created > 4 * 3 * 24 * 5  # hundreds of markets came and went
    # per slot: the active market, the ones closing/settling, and an hour of finalized ones (6 at most)
    bound = 4 * (1 + 1 + (2 * 60_000 + 3_600_000 + step_ms) // 600_000 + 1)
    assert peak <= bound and len(eng.markets) <= bound
    assert len(eng.events) == len(eng.markets) and set(eng.market_trades) == set(eng.markets)
    assert set(eng.finalized) <= set(eng.markets)
    assert all(eng.markets[t].settled_ms + 3_600_000 > eng.now_ms for t in eng.finalized)
    for acct in eng.accounts.values():  # the synthetic traders' positions go with the markets
        assert set(acct.positions) <= set(eng.markets)
    assert eng.flow.whales > 50 and sum(len(eng.markets[t].book.yes.prices) > 0 for t in eng.slots) == 4


def test_pruned_market_keeps_the_users_settlements_positions_and_orders():
    eng = make_engine(n_markets=1, market_duration_s=100, settlement_timer_s=10, finalized_retention_s=60)
    t = eng.slots[0]
    event = eng.markets[t].event_ticker
    place(eng, BOB, t, "ask", "0.6000", "2.00")
    order = place(eng, ALICE, t, "bid", "0.6000", "2.00", "immediate_or_cancel")
    eng.advance(T0 + 120_000)  # finalized at +120 s
    assert eng.markets[t].status == "finalized"
    assert call(eng, "GET", f"/markets/{t}", user=None)[0] == 200
    eng.advance(T0 + 179_999)
    assert t in eng.markets
    eng.advance(T0 + 180_000)  # retention over: gone like Kalshi's /historical markets
    assert t not in eng.markets and event not in eng.events and t not in eng.market_trades
    assert call(eng, "GET", f"/markets/{t}", user=None)[0] == 404
    assert call(eng, "GET", f"/events/{event}", user=None)[0] == 404
    assert t not in {m["ticker"] for m in call(eng, "GET", "/markets", user=None)[1]["markets"]}
    rows = call(eng, "GET", "/portfolio/settlements")[1]["settlements"]
    assert [(r["ticker"], r["yes_count_fp"]) for r in rows] == [(t, "2.00")]
    settled = call(eng, "GET", "/portfolio/positions", query={"settlement_status": ["settled"]})[1]
    assert [p["ticker"] for p in settled["market_positions"]] == [t]
    orders = call(eng, "GET", "/portfolio/orders", query={"event_ticker": [event]})[1]["orders"]
    assert [o["order_id"] for o in orders] == [order["order_id"]]
    assert call(eng, "GET", f"/portfolio/orders/{order['order_id']}")[0] == 200
    assert len(call(eng, "GET", "/portfolio/fills")[1]["fills"]) == 1
    status, body = call(eng, "GET", "/portfolio/balance")
    assert status == 200
    status, _ = call(eng, "POST", "/portfolio/events/orders",
                     {"ticker": t, "side": "bid", "price": "0.5000", "count": "1.00",
                      "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross"})
    assert status == 404


def test_retention_zero_prunes_at_finalization_and_restart_keeps_pruning():
    eng = make_engine(n_markets=2, market_duration_s=100, settlement_timer_s=10, finalized_retention_s=600)
    eng.advance(T0 + 130_000)  # the first generation (closing at 50 s and 100 s) is finalized
    finalized = list(eng.finalized)
    assert len(finalized) == 2
    state = json.loads(json.dumps(eng.to_state()))
    again = Engine.from_state(state, T0 + 130_000)
    assert list(again.finalized) == finalized  # rebuilt from the markets' status and settle time
    again.advance(T0 + 800_000)
    assert not set(finalized) & set(again.markets)
    zero = make_engine(n_markets=1, market_duration_s=100, settlement_timer_s=10, finalized_retention_s=0)
    t = zero.slots[0]
    zero.advance(T0 + 120_000)
    assert t not in zero.markets and not zero.finalized


def test_engine_config_rejects_a_negative_retention():
    with pytest.raises(ValueError):
        EngineConfig(finalized_retention_s=-1)


# ---- flow switch -----------------------------------------------------------------------------------
def books(eng: Engine) -> dict:
    """Every active book as {ticker: (yes levels, no levels)} with the resting size per price."""
    def side(levels) -> dict:
        return {p: sum(o.remaining for o in orders) for p, orders in levels.items()}

    return {t: (side(eng.markets[t].book.yes.levels), side(eng.markets[t].book.no.levels)) for t in eng.slots}


def test_set_flow_off_pauses_and_on_resumes_without_a_burst():
    eng = Engine(EngineConfig(seed=3, n_markets=3, flow=FlowConfig(messages_per_s=200)), T0)
    eng.advance(T0 + 2_000)
    assert eng.public_events > 100
    eng.set_flow(FlowConfig.off())
    paused_events, paused_books, whales = eng.public_events, books(eng), eng.flow.whales
    for i in range(1, 31):
        eng.advance(T0 + 2_000 + i * 1_000)
    assert eng.public_events == paused_events and eng.flow.whales == whales
    assert books(eng) == paused_books and all(yes and no for yes, no in paused_books.values())
    assert eng.config.flow.enabled is False  # persisted with the config
    eng.set_flow(FlowConfig(messages_per_s=200))
    eng.advance(T0 + 32_100)  # 100 ms after resuming: ~20 events of budget, not 30 s of catch-up
    assert 0 < eng.public_events - paused_events < 200
    for t in eng.slots:  # the makers' quote slots were kept, not duplicated
        slots = eng.flow.quotes[t]
        assert len(slots) == eng.flow._n_slots
        resting = [o for o in eng.orders.values() if o.ticker == t and o.user.startswith("flow-mm-")
                   and o.status == "resting"]
        assert {o.order_id for o in resting} == {o.order_id for o in slots if o is not None and o.status == "resting"}


def test_set_flow_with_another_maker_layout_withdraws_the_old_quotes():
    eng = Engine(EngineConfig(seed=3, n_markets=2, flow=FlowConfig(messages_per_s=100)), T0)
    eng.advance(T0 + 1_000)
    eng.set_flow(FlowConfig(messages_per_s=100, maker_count=1, maker_levels=1))
    eng.advance(T0 + 1_020)
    for t in eng.slots:
        makers = {o.user for o in eng.orders.values() if o.ticker == t and o.status == "resting"}
        assert makers <= {"flow-mm-0"}
        assert len(eng.flow.quotes[t]) == 2
    state = json.loads(json.dumps(eng.to_state()))
    again = Engine.from_state(state, T0 + 1_020)
    assert again.config.flow.maker_count == 1 and again.flow._n_slots == 2


def test_set_flow_from_off_starts_a_flow_that_never_ran():
    eng = make_engine(n_markets=2)
    assert not eng.flow.started and all(not eng.markets[t].book.yes.prices for t in eng.slots)
    eng.set_flow(FlowConfig.calm())
    assert eng.flow.started and all(eng.markets[t].book.yes.prices for t in eng.slots)
    with pytest.raises(TypeError):
        eng.set_flow("calm")  # type: ignore[arg-type]
    assert call(eng, "GET", "/portfolio/balance", user=ALICE)[0] == 200
