"""Whale sizing, sweep grouping, the queue, the token bucket and every decision rule."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.journal import Journal
from actors.whale_rules import (
    Context,
    FollowRules,
    PublicTrade,
    TokenBucket,
    WhaleQueue,
    client_order_id_for,
    decide,
    event_of,
    process_queue,
    whale_id_for,
    whale_size,
)
from kalshi.book import OrderBook
from kalshi.units import CENT, COUNT_ONE, MONEY_ONE, PRICE_ONE, UnitError
from messages.whale import FINAL_ACTIONS, FOLLOW, NOT_FINAL_ACTIONS, WhaleQueueUpdated

T0 = 1_764_000_000_000  # an exchange time in ms
C = COUNT_ONE


def trade(tid, *, market="KXA-26-T1", side="yes", price=5000, contracts=200, ts=T0) -> PublicTrade:
    yes = price if side == "yes" else PRICE_ONE - price
    return PublicTrade(
        trade_id=tid, market=market, taker_side=side, yes_price=yes, no_price=PRICE_ONE - yes,
        count=contracts * C, ts_ms=ts,
    )


def book(market="KXA-26-T1", yes=((4800, 1000 * C),), no=((4800, 1000 * C),)) -> OrderBook:
    """Levels are bids in each leg's own price: a NO bid at 0.48 is a YES ask at 0.52."""
    b = OrderBook(market)
    assert b.apply_snapshot(list(yes), list(no))
    return b


def one_whale(queue_kwargs=None, **trade_kwargs):
    q = WhaleQueue(**(queue_kwargs or {}))
    outcome, whale = q.add(trade("t1", **trade_kwargs), T0)
    assert outcome == "new", outcome
    return whale


# --- sizing ---------------------------------------------------------------------------------


def test_whale_size_yes_uses_yes_price():
    q = whale_size("yes", 6500, 3500, 200 * C)
    assert (q.price, q.cost, q.payout, q.whale_size) == (6500, 130 * MONEY_ONE, 200 * MONEY_ONE, 200 * MONEY_ONE)


def test_whale_size_no_uses_no_price():
    q = whale_size("no", 6500, 3500, 200 * C)
    assert (q.price, q.cost, q.payout) == (3500, 70 * MONEY_ONE, 200 * MONEY_ONE)


def test_whale_size_fractional_count_is_exact():
    # 7.77 contracts at 0.03: cost 0.2331, payout 7.77
    q = whale_size("yes", 300, 9700, 777)
    assert (q.cost, q.payout, q.whale_size) == (2331, 77_700, 77_700)


@given(st.integers(1, PRICE_ONE - 1), st.integers(1, 10**8), st.sampled_from(["yes", "no"]))
def test_whale_size_below_one_dollar_is_payout(price, count, side):
    q = whale_size(side, price, PRICE_ONE - price, count)
    assert q.whale_size == q.payout >= q.cost


def test_whale_size_bad_side():
    with pytest.raises(UnitError):
        whale_size("maybe", 5000, 5000, 100)


def test_public_trade_validates_and_parses_wire():
    msg = {
        "trade_id": "5a3c", "market_ticker": "KXHIGHNY-26NOV25-T55", "yes_price_dollars": "0.5100",
        "no_price_dollars": "0.4900", "count_fp": "2.00", "taker_side": "yes", "taker_outcome_side": "yes",
        "ts": 1764000123, "ts_ms": 1764000123123,
    }
    t = PublicTrade.from_wire(msg)
    assert (t.yes_price, t.no_price, t.count, t.ts_ms, t.taker_price) == (5100, 4900, 200, 1764000123123, 5100)
    with pytest.raises(UnitError):
        PublicTrade.from_wire({**msg, "yes_price_dollars": "0.6000"})  # prices do not sum to 1
    with pytest.raises(UnitError):
        PublicTrade.from_wire({**msg, "taker_outcome_side": "maybe"})
    with pytest.raises(UnitError):
        PublicTrade.from_wire({**msg, "count_fp": "0.00"})
    with pytest.raises(UnitError):
        PublicTrade.from_wire({k: v for k, v in msg.items() if k not in ("ts", "ts_ms")})


def test_public_trade_from_trade_printed():
    from messages.market import TradePrinted

    printed = TradePrinted(trade_id="x", market_ticker="KXA-1", taker_side="no", yes_price=3000, no_price=7000,
                           count=250, ts_ms=T0, recv_ns=1)
    t = PublicTrade.from_printed(printed)
    assert (t.trade_id, t.market, t.taker_side, t.taker_price, t.count, t.ts_ms) == ("x", "KXA-1", "no", 7000, 250, T0)


# --- sweeps and the queue -------------------------------------------------------------------


def test_three_prints_same_ts_make_one_whale_with_vwap():
    q = WhaleQueue()
    assert q.add(trade("a", price=5000, contracts=50), T0)[0] == "below_threshold"
    assert q.add(trade("b", price=5100, contracts=30), T0)[0] == "below_threshold"
    outcome, whale = q.add(trade("c", price=5200, contracts=20), T0)
    assert outcome == "new"
    assert whale.count == 100 * C
    assert whale.trade_ids == ("a", "b", "c")
    assert whale.levels == 3
    assert (whale.min_price, whale.max_price) == (5000, 5200)
    # VWAP = (50·0.50 + 30·0.51 + 20·0.52) / 100 = 0.507 exactly
    assert whale.average_price == Fraction(5070)
    assert whale.cost == 50 * 5000 + 30 * 5100 + 20 * 5200  # money units: count/100 × price
    assert whale.payout == 100 * MONEY_ONE
    assert whale.whale_id == whale_id_for("a")
    assert len(q) == 1


def test_prints_at_different_ts_are_two_whales():
    q = WhaleQueue()
    assert q.add(trade("a", contracts=150), T0)[0] == "new"
    assert q.add(trade("b", contracts=150, ts=T0 + 1), T0)[0] == "new"
    assert len(q) == 2


def test_other_side_or_market_is_another_whale():
    q = WhaleQueue()
    q.add(trade("a", contracts=150), T0)
    q.add(trade("b", contracts=150, side="no"), T0)
    q.add(trade("c", contracts=150, market="KXB-26-T1"), T0)
    assert len(q) == 3


def test_whale_id_stable_as_sweep_grows():
    q = WhaleQueue()
    _, first = q.add(trade("a", contracts=150), T0)
    outcome, grown = q.add(trade("b", contracts=50, price=5100), T0)
    assert outcome == "grown"
    assert grown.whale_id == first.whale_id == whale_id_for("a")
    assert grown.count == 200 * C and grown.levels == 2
    assert q.snapshot() == (grown,)


def test_duplicate_trade_id_never_makes_a_second_whale():
    q = WhaleQueue()
    _, whale = q.add(trade("a", contracts=150), T0)
    assert q.add(trade("a", contracts=150), T0 + 10) == ("duplicate", whale)
    # the same id again with other fields (a backfill after a reconnect) is still a duplicate
    assert q.add(trade("a", contracts=900, ts=T0 + 5), T0 + 20) == ("duplicate", whale)
    assert q.snapshot() == (whale,)
    # a repeat of a trade that never made a whale is a duplicate too, with no whale to report
    q.add(trade("small", contracts=10, ts=T0 + 7), T0)
    assert q.add(trade("small", contracts=10, ts=T0 + 7), T0) == ("duplicate", None)
    assert q.stats().duplicates == 3


def test_capacity_keeps_the_largest():
    q = WhaleQueue(capacity=2)
    q.add(trade("a", contracts=150), T0)
    q.add(trade("b", contracts=300, ts=T0 + 1), T0)
    assert q.add(trade("c", contracts=120, ts=T0 + 2), T0)[0] == "queue_full"
    outcome, big = q.add(trade("d", contracts=500, ts=T0 + 3), T0)
    assert outcome == "new"
    assert [w.trade_ids for w in q.snapshot()] == [("d",), ("b",)]


def test_window_prunes_old_whales_and_refuses_stale_trades():
    q = WhaleQueue(window_minutes=5)
    q.add(trade("a", contracts=150), T0)
    q.add(trade("b", contracts=150, ts=T0 + 60_000), T0 + 60_000)
    assert q.prune(T0 + 5 * 60_000) == 0  # exactly at the edge: still inside
    assert q.prune(T0 + 5 * 60_000 + 1) == 1
    assert [w.trade_ids for w in q.snapshot()] == [("b",)]
    assert q.add(trade("old", contracts=150, ts=T0), T0 + 6 * 60_000)[0] == "stale"


def test_price_band_filter():
    q = WhaleQueue(band_min=500, band_max=9500)
    assert q.add(trade("hi", price=9500, contracts=500), T0)[0] == "band"
    assert q.add(trade("lo", price=500, contracts=500, ts=T0 + 1), T0)[0] == "band"
    assert q.add(trade("ok", price=9400, contracts=500, ts=T0 + 2), T0)[0] == "new"
    # a NO whale at NO price 0.96 is out of band too (YES 0.04 in the trade)
    assert q.add(trade("no", side="no", price=9600, contracts=500, ts=T0 + 3), T0)[0] == "band"


def test_markets_filter():
    q = WhaleQueue(markets=frozenset({"KXA-26-T1"}))
    assert q.add(trade("a", market="KXZ-1", contracts=500), T0)[0] == "market"
    assert q.add(trade("b", contracts=500), T0)[0] == "new"


def test_removed_whale_does_not_come_back():
    q = WhaleQueue()
    _, w = q.add(trade("a", contracts=150), T0)
    assert q.remove(w.whale_id)
    assert q.add(trade("b", contracts=50), T0)[0] == "processed"
    assert len(q) == 0
    assert not q.remove(w.whale_id)


def test_stats_and_json_view():
    q = WhaleQueue(min_size=100 * MONEY_ONE)
    q.add(trade("a", contracts=150), T0)
    q.add(trade("b", contracts=10, ts=T0 + 1), T0)
    q.add(trade("c", contracts=10, ts=T0 + 2), T0)
    q.add(trade("a", contracts=150), T0)
    s = q.stats()
    assert (s.trades_seen, s.trades_discarded, s.duplicates, s.queue_size) == (4, 3, 1, 1)
    assert s.discard_rate_bp == 7500
    j = s.to_json()
    assert j["discard_rate_percent"] == 75.0 and j["min_size_dollars"] == "100.0000"
    w = q.snapshot()[0].to_json(T0 + 45_200)
    assert w["whale_size_dollars"] == "150.0000" and w["cost_dollars"] == "75.0000"
    assert w["price_dollars"] == "0.5000" and w["count"] == "150.00" and w["age_seconds"] == 45.2
    msg = WhaleQueueUpdated(queue=q.snapshot(), stats=s, ts_ms=T0)
    with pytest.raises(AttributeError):
        msg.queue = ()  # frozen


def test_memory_bound_evicts_oldest():
    q = WhaleQueue(max_tracked_trades=3)
    for i in range(5):
        q.add(trade(f"t{i}", contracts=10, ts=T0 + i), T0 + 10)
    assert q.discards["evicted"] == 2
    assert q.add(trade("t0", contracts=10, ts=T0), T0 + 10)[0] != "duplicate"  # forgotten, counted


# --- token bucket ---------------------------------------------------------------------------


def test_token_bucket_capacity_and_refill():
    b = TokenBucket(3, 20)
    assert b.available(0) == 3
    assert all(b.try_take(0) for _ in range(3))
    assert not b.try_take(1)
    assert b.available(19_999) == 0
    assert b.available(20_000) == 1
    assert b.try_take(20_000) and not b.try_take(20_001)
    assert b.available(100_000) == 3  # capped
    assert b.available(50_000) == 3  # a clock going back gives nothing and breaks nothing


def test_token_bucket_full_bucket_banks_no_time():
    b = TokenBucket(1, 20)
    b.available(0)
    assert b.try_take(1_000_000)
    assert not b.try_take(1_000_001)
    assert b.try_take(1_020_000)


def test_token_bucket_from_history_survives_restart():
    b = TokenBucket.from_history(3, 20, [1000, 2000, 3000])
    assert b.available(3000) == 0
    assert b.available(21_000) == 1
    assert TokenBucket.from_history(3, 20, []).available(5) == 3


def test_token_bucket_rejects_bad_config():
    for args in ((0, 20), (3, 0), (3, -1), (3, Fraction(1, 3000))):
        with pytest.raises(ValueError):
            TokenBucket(*args)


# --- decisions ------------------------------------------------------------------------------


RULES = FollowRules(max_age_ms=120_000, follow_count=5 * C, max_slippage=2 * CENT)


def followable():
    """A YES whale at 0.50 and a book offering YES at 0.51 (NO bid 0.49) with depth."""
    whale = one_whale(price=5000, contracts=200)
    ctx = Context(
        gate_open=True,
        rules=RULES,
        books={whale.market: book(no=((4900, 1000 * C),))},
        tokens_available=1,
    )
    return whale, ctx


def test_follow_yes_is_a_bid_at_the_yes_price():
    whale, ctx = followable()
    d = decide(whale, ctx, T0 + 1000)
    assert d.action == FOLLOW and d.final
    assert (d.side, d.price, d.count, d.outcome) == ("bid", 5100, 5 * C, "yes")
    assert d.client_order_id == client_order_id_for(whale.whale_id, "v1")
    assert d.plan.to_v2_body() == {
        "ticker": whale.market, "client_order_id": d.client_order_id, "side": "bid", "count": "5.00",
        "price": "0.5100", "time_in_force": "immediate_or_cancel", "self_trade_prevention_type": "taker_at_cross",
        "post_only": False, "reduce_only": False,
    }


def test_follow_no_is_an_ask_at_one_minus_the_no_price():
    # The whale bought NO at 0.30; our book has a YES bid at 0.70 = a NO offer at 0.30.
    whale = one_whale(side="no", price=3000, contracts=500)
    assert whale.side == "no" and whale.average_price == 3000
    ctx = Context(gate_open=True, rules=RULES, books={whale.market: book(yes=((7000, 100 * C),))}, tokens_available=1)
    d = decide(whale, ctx, T0)
    assert d.action == FOLLOW
    assert (d.side, d.price, d.plan.outcome_price) == ("ask", 7000, 3000)
    assert d.plan.to_v2_body()["price"] == "0.7000" and d.plan.to_v2_body()["side"] == "ask"


def test_follow_price_is_the_worst_level_needed():
    whale, ctx = followable()
    # 2 contracts at 0.50, 3 at 0.51, more at 0.53 (beyond the 0.52 limit)
    b = book(no=((5000, 2 * C), (4900, 3 * C), (4700, 100 * C)))
    d = decide(whale, replace(ctx, books={whale.market: b}), T0)
    assert (d.action, d.price) == (FOLLOW, 5100)


def test_client_order_id_is_deterministic():
    a = client_order_id_for("w-1", "v1")
    assert a == client_order_id_for("w-1", "v1") and a.startswith("tv3-") and len(a) == 28
    assert a != client_order_id_for("w-2", "v1") and a != client_order_id_for("w-1", "v2")


def _case(name):
    whale, ctx = followable()
    m = whale.market
    now = T0 + 1000
    cases = {
        "skipped_gate": (replace(ctx, gate_open=False), now),
        "skipped_age": (ctx, T0 + 120_001),
        "skipped_position": (replace(ctx, position_markets=frozenset({m})), now),
        "skipped_position_inflight": (replace(ctx, inflight_markets=frozenset({m})), now),
        "skipped_orders": (replace(ctx, resting_order_markets=frozenset({m})), now),
        "skipped_book_stale": (replace(ctx, books={}), now),
        "skipped_book_stale_invalid": (replace(ctx, books={m: OrderBook(m)}), now),
        "skipped_chased": (replace(ctx, books={m: book(no=((4700, 1000 * C),))}), now),  # ask 0.53
        "skipped_depth": (replace(ctx, books={m: book(no=((4900, 4 * C),))}), now),
        "skipped_depth_empty": (replace(ctx, books={m: book(no=())}), now),
        "skipped_risk": (replace(ctx, kill_switch=True), now),
        "skipped_unknown_outcome": (replace(ctx, unknown_outcome_orders=1), now),
        "rate_limited": (replace(ctx, tokens_available=0), now),
    }
    c, t = cases[name]
    return whale, c, t


@pytest.mark.parametrize(
    "name",
    [
        "skipped_gate", "skipped_age", "skipped_position", "skipped_position_inflight", "skipped_orders",
        "skipped_book_stale", "skipped_book_stale_invalid", "skipped_chased", "skipped_depth",
        "skipped_depth_empty", "skipped_risk", "skipped_unknown_outcome", "rate_limited",
    ],
)
def test_every_decision_reason(name):
    whale, ctx, now = _case(name)
    d = decide(whale, ctx, now)
    action = name.replace("_inflight", "").replace("_invalid", "").replace("_empty", "")
    assert d.action == action, d.reason
    assert d.final == (action in FINAL_ACTIONS)
    assert d.plan is None and d.client_order_id == "" and d.whale_id == whale.whale_id and d.reason


def test_not_final_reasons():
    assert NOT_FINAL_ACTIONS == {"skipped_gate", "skipped_book_stale", "skipped_unknown_outcome", "rate_limited"}


def test_rule_order_gate_before_age_before_position():
    whale, ctx = followable()
    late = T0 + 200_000
    both = replace(ctx, gate_open=False, position_markets=frozenset({whale.market}))
    assert decide(whale, both, late).action == "skipped_gate"
    assert decide(whale, replace(both, gate_open=True), late).action == "skipped_age"


def test_already_evaluated_gives_no_decision():
    whale, ctx = followable()
    assert decide(whale, replace(ctx, evaluated_whale_ids=frozenset({whale.whale_id})), T0) is None
    assert decide(whale, replace(ctx, evaluated_trade_ids=frozenset({"t1"})), T0) is None
    assert decide(whale, replace(ctx, evaluated_sweeps=frozenset({whale.sweep_key})), T0) is None


def test_risk_limits():
    whale, ctx = followable()
    m = whale.market
    # our order costs 5 × 0.51 = $2.55
    r = replace(RULES, max_open_positions=2, max_cost_per_market=10 * MONEY_ONE, max_cost_per_event=20 * MONEY_ONE,
                max_daily_loss=50 * MONEY_ONE)
    ok = replace(ctx, rules=r)
    assert decide(whale, ok, T0).action == FOLLOW
    two_open = replace(ok, position_markets=frozenset({"KXQ-1-A", "KXQ-1-B"}))
    assert decide(whale, two_open, T0).action == "skipped_risk"
    assert decide(whale, replace(ok, exposure={m: 7 * MONEY_ONE + 4500}), T0).action == FOLLOW  # 7.45 + 2.55 = 10
    assert decide(whale, replace(ok, exposure={m: 7 * MONEY_ONE + 4501}), T0).action == "skipped_risk"
    sibling = "KXA-26-T2"
    assert event_of(m) == event_of(sibling) == "KXA-26"
    assert decide(whale, replace(ok, exposure={sibling: 18 * MONEY_ONE}), T0).action == "skipped_risk"
    assert decide(whale, replace(ok, exposure={sibling: 17 * MONEY_ONE}), T0).action == FOLLOW
    other_event = replace(ok, exposure={sibling: 18 * MONEY_ONE}, events={sibling: "ELSEWHERE"})
    assert decide(whale, other_event, T0).action == FOLLOW
    assert decide(whale, replace(ok, daily_pnl=-50 * MONEY_ONE), T0).action == "skipped_risk"
    assert decide(whale, replace(ok, daily_pnl=-50 * MONEY_ONE + 1), T0).action == FOLLOW


def test_context_mappings_are_read_only():
    _, ctx = followable()
    with pytest.raises(TypeError):
        ctx.books["x"] = None


def test_rate_limited_is_retried_then_expires_by_age():
    q = WhaleQueue()
    q.add(trade("a", contracts=300), T0)
    q.add(trade("b", contracts=200, market="KXB-26-T1"), T0)
    q.add(trade("c", contracts=150, market="KXC-26-T1"), T0)
    books = {m: book(m, no=((4900, 1000 * C),)) for m in ("KXA-26-T1", "KXB-26-T1", "KXC-26-T1")}
    ctx = Context(gate_open=True, rules=RULES, books=books)
    bucket = TokenBucket(1, 20)
    decisions, ctx = process_queue(q.snapshot(), ctx, T0 + 1000, bucket, 0)
    assert [d.action for d in decisions] == [FOLLOW, "rate_limited", "rate_limited"]  # biggest first
    assert decisions[0].trade_ids == ("a",)
    # 20 s later one token: the next largest is followed, the last still waits
    decisions, ctx = process_queue(q.snapshot(), ctx, T0 + 21_000, bucket, 20_000)
    assert [(d.action, d.trade_ids) for d in decisions] == [(FOLLOW, ("b",)), ("rate_limited", ("c",))]
    # by the next token the last one is too old: it expires instead of trading late
    decisions, ctx = process_queue(q.snapshot(), ctx, T0 + 130_000, bucket, 40_000)
    assert [(d.action, d.final) for d in decisions] == [("skipped_age", True)]
    assert bucket.available(40_000) == 1  # the expired whale did not take the token
    decisions, _ = process_queue(q.snapshot(), ctx, T0 + 131_000, bucket, 41_000)
    assert decisions == ()


def test_one_pass_does_not_trade_a_market_twice():
    q = WhaleQueue()
    q.add(trade("a", contracts=300), T0)
    q.add(trade("b", contracts=200, ts=T0 + 5), T0)
    ctx = Context(gate_open=True, rules=RULES, books={"KXA-26-T1": book(no=((4900, 1000 * C),))})
    decisions, _ = process_queue(q.snapshot(), ctx, T0 + 1000, TokenBucket(3, 20), 0)
    assert [d.action for d in decisions] == [FOLLOW, "skipped_position"]


def test_chased_reason_names_the_prices():
    whale, ctx, now = _case("skipped_chased")
    assert decide(whale, ctx, now).reason == "best ask 0.5300 is more than 0.0200 above the whale's 0.5000"


def test_from_settings_converts_cents_and_contracts():
    from actors.settings import load_settings

    s = load_settings(
        config_path=None, dotenv_path=None,
        environ={"WHALE_MIN_SIZE_CENTS": "25000", "WHALE_FOLLOW_CONTRACTS": "7", "WHALE_QUEUE_SIZE": "4",
                 "WHALE_MAX_AGE_SECONDS": "90", "WHALE_MAX_SLIPPAGE_CENTS": "3"},
    )
    q = WhaleQueue.from_settings(s)
    assert (q.min_size, q.capacity, q.band_min, q.band_max) == (250 * MONEY_ONE, 4, 5 * CENT, 95 * CENT)
    r = FollowRules.from_settings(s)
    assert (r.follow_count, r.max_age_ms, r.max_slippage) == (7 * C, 90_000, 3 * CENT)


def test_follow_rules_validation():
    with pytest.raises(ValueError):
        FollowRules(time_in_force="good_till_time")
    with pytest.raises(ValueError):
        FollowRules(follow_count=0)


# --- property: a stream with duplicates, reordering and restarts ----------------------------

MARKETS = ("KXA-26-T1", "KXA-26-T2", "KXB-26-T1")
CAPACITY, REFILL_S, MAX_AGE_MS = 2, 20, 120_000


@st.composite
def streams(draw):
    n = draw(st.integers(1, 40))
    trades = []
    for i in range(n):
        sweep_ts = T0 + draw(st.integers(0, 20)) * 3_000  # few distinct times → sweeps happen
        trades.append(
            trade(
                f"t{i}",
                market=draw(st.sampled_from(MARKETS)),
                side=draw(st.sampled_from(["yes", "no"])),
                price=draw(st.sampled_from([4000, 5000, 6000])),
                contracts=draw(st.integers(30, 250)),
                ts=sweep_ts,
            )
        )
    events = []
    for t in trades:
        for _ in range(draw(st.integers(1, 3))):  # duplicates
            events.append((t.ts_ms + draw(st.integers(0, 200_000)), "trade", t))  # late/reordered delivery
    for _ in range(draw(st.integers(0, 4))):
        events.append((T0 + draw(st.integers(0, 150_000)), "restart", None))
    events.sort(key=lambda e: e[0])
    return events


def _books():
    # YES offered at 0.41/0.51/0.61 and NO likewise, deep: whales at 0.40/0.50/0.60 are followable.
    return {
        m: book(m, yes=((3900, 10**6), (4900, 10**6), (5900, 10**6)), no=((3900, 10**6), (4900, 10**6), (5900, 10**6)))
        for m in MARKETS
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=streams())
def test_follow_at_most_once_with_duplicates_reordering_and_restarts(tmp_path_factory, events):
    data_dir = tmp_path_factory.mktemp("journal")
    rules = replace(RULES, max_age_ms=MAX_AGE_MS, max_slippage=5 * CENT, max_open_positions=100,
                    max_cost_per_market=10**9, max_cost_per_event=10**9)
    books = _books()
    sent: list[tuple[int, str, tuple[str, ...], int]] = []  # (time, client_order_id, trade ids, whale ts)

    def boot():
        journal = Journal(data_dir)
        view = journal.load()
        ctx = Context(
            gate_open=True, rules=rules, books=books,
            evaluated_whale_ids=view.evaluated_whale_ids,
            evaluated_trade_ids=view.evaluated_trade_ids,
            evaluated_sweeps=view.evaluated_sweeps,
        )
        bucket = TokenBucket.from_history(CAPACITY, REFILL_S, view.intent_times_ms)
        return journal, WhaleQueue(min_size=100 * MONEY_ONE), ctx, bucket

    journal, queue, ctx, bucket = boot()
    try:
        for now, kind, t in events:
            if kind == "restart":
                journal.close()
                journal, queue, ctx, bucket = boot()
                continue
            queue.add(t, now)
            queue.prune(now)
            decisions, ctx = process_queue(queue.snapshot(), ctx, now, bucket, now)
            for d in decisions:
                journal.record_decision(d)
                if d.action == FOLLOW:
                    journal.record_intent(d.plan, now)  # intent before "send"
                    sent.append((now, d.client_order_id, d.trade_ids, d.whale_ts_ms))
                    journal.record_outcome(d.client_order_id, "accepted", now, order_id=f"o-{len(sent)}")
                if d.final:
                    queue.remove(d.whale_id)
            # a position never blocks here: markets stay open so the rate limit is what binds
            ctx = replace(ctx, inflight_markets=frozenset())
    finally:
        journal.close()

    followed_trades = [tid for _, _, tids, _ in sent for tid in tids]
    assert len(followed_trades) == len(set(followed_trades)), "a trade was followed twice"
    assert len({c for _, c, _, _ in sent}) == len(sent), "a client_order_id was sent twice"
    for when, _, _, whale_ts in sent:
        assert when - whale_ts <= MAX_AGE_MS, "followed a whale older than the age limit"
    times = sorted(w for w, _, _, _ in sent)
    bound = CAPACITY + math.ceil(60 / REFILL_S)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 60_000) <= bound, "rate above the bucket"


# --- what a trade costs the queue -----------------------------------------------------------


def test_small_prints_build_no_whale_and_a_qualifying_sweep_builds_one(monkeypatch):
    import actors.whale_rules as rules

    built = []
    real = rules.Whale

    def counting(**kwargs):
        built.append(kwargs["whale_id"])
        return real(**kwargs)

    monkeypatch.setattr(rules, "Whale", counting)
    q = WhaleQueue()
    for i in range(200):
        assert q.add(trade(f"s{i}", contracts=5, ts=T0 + i), T0)[0] == "below_threshold"
    assert built == []
    outcome, w = q.add(trade("big", contracts=150, ts=T0 + 500), T0)
    assert outcome == "new" and built == [w.whale_id]
    q.snapshot()
    q.snapshot()
    assert q.add(trade("big", contracts=150, ts=T0 + 500), T0) == ("duplicate", w)
    assert len(built) == 1  # kept until the sweep grows
    outcome, grown = q.add(trade("big2", contracts=10, price=5100, ts=T0 + 500), T0)
    assert outcome == "grown" and len(built) == 2 and q.snapshot() == (grown,)


def test_a_small_sweep_is_dropped_once_its_lane_moves_on_but_its_ids_still_dedupe():
    q = WhaleQueue()
    assert q.add(trade("a1", contracts=40, ts=T0), T0)[0] == "below_threshold"
    assert q.add(trade("a2", contracts=40, ts=T0), T0)[0] == "below_threshold"  # same sweep: one group
    assert q.tracked_sweeps == 1
    # Another market or side does not end it; another ts_ms in its market and side does.
    q.add(trade("o1", contracts=10, ts=T0 + 1, market="KXB-26-T1"), T0)
    q.add(trade("o2", contracts=10, ts=T0 + 1, side="no"), T0)
    assert q.tracked_sweeps == 3
    assert q.add(trade("a3", contracts=40, ts=T0), T0)[0] == "new"  # 120 contracts: the sweep qualified
    assert q.snapshot()[0].trade_ids == ("a1", "a2", "a3")
    assert q.add(trade("b1", contracts=40, ts=T0 + 2), T0)[0] == "below_threshold"
    assert q.add(trade("b2", contracts=40, ts=T0 + 3), T0)[0] == "below_threshold"  # b1's sweep is over
    assert q.tracked_sweeps == 4  # a (queued), o1, o2 (latest of their lanes), b2
    assert q.tracked_trades == 7
    assert q.add(trade("b1", contracts=40, ts=T0 + 2), T0) == ("duplicate", None)
    assert q.stats().duplicates == 1


def test_dedupe_follows_each_trades_own_time_not_when_prune_runs():
    q = WhaleQueue(window_minutes=5)
    q.add(trade("s", contracts=10), T0)
    later = T0 + 5 * 60_000 + 1  # s is outside the window; prune() has not run
    assert q.add(trade("s", contracts=10), later)[0] == "stale"
    assert q.stats().duplicates == 0
    assert q.add(trade("s", contracts=10, ts=later), later)[0] == "below_threshold"  # a fresh print, same id


def test_prune_forgets_every_trade_id_and_sweep_of_the_window():
    q = WhaleQueue(window_minutes=1)
    for i in range(50):
        q.add(trade(f"t{i}", contracts=10 if i % 5 else 150, ts=T0 + i * 1000, market=MARKETS[i % 3]), T0 + i * 1000)
    assert q.tracked_trades == 50 and len(q) == 10
    assert q.prune(T0 + 45_000 + 60_000) == 9  # the last whale (ts T0 + 45 s) is exactly at the edge
    assert [w.trade_ids for w in q.snapshot()] == [("t45",)]
    assert q.tracked_trades == 5  # t45 .. t49
    q.prune(T0 + 200_000)
    assert (q.tracked_trades, q.tracked_sweeps, len(q)) == (0, 0, 0)


# --- read-only views and the executor's bounded memory ----------------------------------------


def test_set_view_layers_without_copying_or_changing_the_base():
    from actors.whale_rules import SetView

    base = {"a", "b"}
    view = SetView(base)
    more = view | {"c"}
    assert "c" in more and "c" not in view and base == {"a", "b"}
    base.add("d")  # a view, not a copy: the owner's later additions show
    assert "d" in view and "d" in more
    assert sorted(more) == ["a", "b", "c", "d"] and len(more) == 4
    assert more.isdisjoint(("x", "y")) and not more.isdisjoint(iter(["y", "c"]))
    assert not hasattr(view, "add") and not hasattr(view, "discard")
    assert frozenset({"z"}) | view == {"a", "b", "d", "z"}
    assert (view & {"a", "q"}) == frozenset({"a"})


def test_context_takes_live_sets_as_read_only_views():
    ids = {"w-1"}
    ctx = Context(gate_open=True, evaluated_whale_ids=ids)
    assert "w-1" in ctx.evaluated_whale_ids and not hasattr(ctx.evaluated_whale_ids, "add")
    whale, base = followable()
    ctx = replace(base, evaluated_trade_ids=ids)
    ids.add("t1")
    assert decide(whale, ctx, T0) is None


def test_process_queue_does_not_change_the_callers_sets():
    q = WhaleQueue()
    q.add(trade("a", contracts=300), T0)
    q.add(trade("b", contracts=200, market="KXB-26-T1"), T0)
    whale_ids, trade_ids, sweeps = set(), set(), set()
    books = {m: book(m, no=((4900, 1000 * C),)) for m in ("KXA-26-T1", "KXB-26-T1")}
    ctx = Context(gate_open=True, rules=RULES, books=books, evaluated_whale_ids=whale_ids,
                  evaluated_trade_ids=trade_ids, evaluated_sweeps=sweeps)
    decisions, after = process_queue(q.snapshot(), ctx, T0, TokenBucket(5, 20), 0)
    assert [d.action for d in decisions] == [FOLLOW, FOLLOW]
    assert whale_ids == trade_ids == sweeps == set()
    assert {"a", "b"} <= set(after.evaluated_trade_ids)
    assert process_queue(q.snapshot(), after, T0, TokenBucket(5, 20), 0)[0] == ()


def test_evaluated_whales_are_forgotten_after_the_retention():
    from actors.whale_rules import EvaluatedWhales

    ev = EvaluatedWhales(retention_ms=1000)
    ev.add("w-1", ("t1", "t2"), ("KXA-26-T1", "yes", T0), T0)
    ev.add("w-2", ("t3",), ("KXA-26-T1", "yes", T0 + 500), T0 + 500)
    assert "w-1" in ev.whale_ids and not ev.trade_ids.isdisjoint(("t2",)) and ("KXA-26-T1", "yes", T0) in ev.sweeps
    assert ev.prune(T0 + 1000) == 0  # exactly at the edge: kept
    assert ev.prune(T0 + 1001) == 1
    assert "w-1" not in ev.whale_ids and ev.trade_ids.isdisjoint(("t1", "t2")) and len(ev) == 1
    ev.add("w-2", ("t3",), None, T0 + 5000)  # evaluated again, later: the later time counts
    assert ev.prune(T0 + 1501) == 0 and "w-2" in ev.whale_ids and "t3" in ev.trade_ids
    assert ev.prune(T0 + 6001) == 1 and len(ev) == 0 and len(ev.trade_ids) == 0 and len(ev.sweeps) == 0
    with pytest.raises(ValueError):
        EvaluatedWhales(0)
