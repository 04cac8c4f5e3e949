"""Paper execution: fills and fees against hand-computed values, netting, settlement."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.paper_broker import PaperBroker
from kalshi.book import OrderBook
from kalshi.fees import FeeSchedule
from kalshi.units import COUNT_ONE, MONEY_ONE, PRICE_ONE
from messages.whale import OrderPlan

C = COUNT_ONE
T = 1_764_000_000_000
M = "KXHIGHNY-26NOV25-T55"
START = 1000 * MONEY_ONE


def broker(balance=START, schedules=None):
    schedules = schedules or {}
    return PaperBroker(lambda ticker: schedules.get(ticker, FeeSchedule()), balance=balance)


def book(yes=(), no=(), ticker=M):
    b = OrderBook(ticker)
    assert b.apply_snapshot(list(yes), list(no))
    return b


def buy_yes(coid, limit, contracts, tif="immediate_or_cancel", ticker=M):
    return OrderPlan(client_order_id=coid, whale_id="w", market=ticker, outcome="yes", side="bid", price=limit,
                     count=contracts * C, time_in_force=tif)


def buy_no(coid, no_limit, contracts, tif="immediate_or_cancel", ticker=M):
    return OrderPlan(client_order_id=coid, whale_id="w", market=ticker, outcome="no", side="ask",
                     price=PRICE_ONE - no_limit, count=contracts * C, time_in_force=tif)


def test_buy_yes_walks_no_bids_at_resting_prices_with_fees_per_fill():
    b = broker()
    # NO bids 0.48 ×2 and 0.47 ×10 are YES offers at 0.52 and 0.53; 0.44 (YES 0.56) is past the limit
    bk = book(no=((4400, 50 * C), (4700, 10 * C), (4800, 2 * C)))
    r = b.submit(buy_yes("c1", 5500, 5), bk, T)
    assert r.accepted
    assert [(f.count, f.yes_price, f.no_price, f.fee, f.book_side) for f in r.fills] == [
        (2 * C, 5200, 4800, 350, "bid"),  # 0.07·2·0.52·0.48 = 0.034944 → 0.0350
        (3 * C, 5300, 4700, 524, "bid"),  # 0.07·3·0.53·0.47 = 0.052311 → 0.0524
    ]
    o = r.order
    assert (o.status, o.fill_count, o.remaining_count, o.fill_cost, o.fees) == ("executed", 5 * C, 0, 26_300, 874)
    assert o.average_fill_price == 5260
    p = b.position(M)
    assert (p.position, p.exposure, p.realized_pnl, p.fees_paid) == (5 * C, 26_300, 0, 874)
    assert b.cash == START - 26_300 - 874
    assert bk.levels("no") == ((4400, 50 * C), (4700, 10 * C), (4800, 2 * C))  # the real book is untouched


def test_buy_no_is_an_ask_walking_yes_bids():
    b = broker()
    # the whale bought NO at 0.30: we send ask @ YES 0.70; a YES bid at 0.70 is a NO offer at 0.30
    r = b.submit(buy_no("c1", 3000, 5), book(yes=((7000, 100 * C),)), T)
    assert buy_no("c1", 3000, 5).price == 7000
    [f] = r.fills
    assert (f.outcome, f.book_side, f.yes_price, f.no_price, f.count) == ("no", "ask", 7000, 3000, 5 * C)
    assert f.fee == 735  # 0.07·5·0.3·0.7 = 0.0735
    p = b.position(M)
    assert (p.position, p.exposure) == (-5 * C, 15_000)
    s = b.settle(M, "no", T + 1)
    assert (s.no_count, s.payout, s.realized_pnl) == (5 * C, 50_000, 35_000)
    assert b.cash == START - 15_000 - 735 + 50_000
    assert b.positions() == ()


def test_netting_buy_yes_then_no_closes_and_settles():
    b = broker()
    b.submit(buy_yes("c1", 5500, 5), book(no=((4700, 10 * C), (4800, 2 * C))), T)
    # buy NO 3 with a NO limit of 0.60: YES bids 0.45 ×1 (NO 0.55) and 0.42 ×10 (NO 0.58)
    r = b.submit(buy_no("c2", 6000, 3), book(yes=((4200, 10 * C), (4500, 1 * C))), T + 1)
    assert [(f.count, f.no_price, f.fee) for f in r.fills] == [(1 * C, 5500, 174), (2 * C, 5800, 342)]
    p = b.position(M)
    # closes at YES 0.45 and 0.42 against an average cost of 0.526: realized = 1.29 − 1.578
    assert (p.position, p.exposure, p.realized_pnl, p.fees_paid) == (2 * C, 10_520, -2_880, 874 + 516)
    assert b.cash == START - 27_174 + 4_500 + 8_400 - 516
    s = b.settle(M, "yes", T + 2)
    assert (s.yes_count, s.no_count, s.payout, s.realized_pnl) == (2 * C, 0, 20_000, 6_600)
    assert b.cash == START + 6_600 - 1_390  # P&L less all fees
    assert b.position(M).position == 0


def test_flip_through_zero():
    b = broker()
    b.submit(buy_yes("c1", 5000, 2), book(no=((5000, 10 * C),)), T)  # 2 YES @ 0.50
    b.submit(buy_no("c2", 4000, 5), book(yes=((6000, 10 * C),)), T)  # 5 NO @ 0.40
    p = b.position(M)
    # 2 close (proceeds 2 × 0.60 = 1.20 vs basis 1.00), 3 open NO at 0.40
    assert (p.position, p.exposure, p.realized_pnl) == (-3 * C, 12_000, 2_000)


def test_scalar_settlement():
    b = broker()
    b.submit(buy_yes("c1", 5000, 2), book(no=((5000, 10 * C),)), T)
    s = b.settle(M, "scalar", T, settlement_value=3000)
    assert (s.payout, s.realized_pnl) == (6_000, -4_000)
    with pytest.raises(ValueError):
        b.settle(M, "scalar", T)
    with pytest.raises(ValueError):
        b.settle(M, "void?", T)


def test_ioc_partial_is_canceled_and_fok_fills_all_or_nothing():
    b = broker()
    bk = book(no=((4800, 2 * C),))
    fok = b.submit(buy_yes("f1", 5500, 5, tif="fill_or_kill"), bk, T)
    assert fok.accepted and fok.fills == () and fok.order.status == "canceled" and fok.order.fill_count == 0
    assert b.position(M).position == 0 and b.cash == START
    ioc = b.submit(buy_yes("i1", 5500, 5), bk, T)
    assert (ioc.order.status, ioc.order.fill_count, ioc.order.remaining_count) == ("canceled", 2 * C, 0)


def test_rejections():
    b = broker(balance=MONEY_ONE)  # $1
    stale = OrderBook(M)
    r = b.submit(buy_yes("c1", 5500, 1), stale, T)
    assert (r.accepted, r.reject_code) == (False, "book_stale")
    r = b.submit(buy_yes("c2", 5500, 1, tif="good_till_canceled"), book(no=((4800, 5 * C),)), T)
    assert (r.accepted, r.reject_code) == (False, "invalid_order")
    r = b.submit(buy_yes("c3", 5500, 5), book(no=((4800, 5 * C),)), T)  # $2.60 + fees > $1
    assert (r.accepted, r.reject_code) == (False, "insufficient_balance")
    r = b.submit(buy_yes("c5", 5500, 1), book(no=((4800, 5 * C),), ticker="KXOTHER-1"), T)
    assert (r.accepted, r.reject_reason) == (False, "book of another market")
    ok = b.submit(buy_yes("c4", 5500, 1), book(no=((4800, 5 * C),)), T)
    assert ok.accepted
    r = b.submit(buy_yes("c4", 5500, 1), book(no=((4800, 5 * C),)), T)
    assert (r.accepted, r.reject_code) == (False, "order_already_exists")
    assert b.order("c4") == ok.order


def test_ids_are_deterministic():
    a = broker().submit(buy_yes("c1", 5500, 5), book(no=((4700, 10 * C), (4800, 2 * C))), T)
    b = broker().submit(buy_yes("c1", 5500, 5), book(no=((4700, 10 * C), (4800, 2 * C))), T)
    assert a.order.order_id == b.order.order_id and a.order.order_id.startswith("paper-")
    assert [f.fill_id for f in a.fills] == [f.fill_id for f in b.fills]
    assert len({f.fill_id for f in a.fills}) == 2


def test_fee_schedule_per_series():
    b = broker(schedules={M: FeeSchedule.from_series("quadratic", 0.5)})
    r = b.submit(buy_yes("c1", 5500, 2), book(no=((4800, 5 * C),)), T)
    assert r.fills[0].fee == 175  # 0.5 × 0.034944 = 0.017472 → 0.0175


@given(
    levels=st.lists(st.tuples(st.integers(1, 99), st.integers(1, 5000)), max_size=8, unique_by=lambda x: x[0]),
    outcome=st.sampled_from(["yes", "no"]),
    limit=st.integers(1, 99),
    count=st.integers(1, 20_000),
)
def test_paper_fills_agree_with_the_book_quote(levels, outcome, limit, count):
    side = "no" if outcome == "yes" else "yes"  # the bids a buy of `outcome` walks
    bk = book(**{side: [(p * 100, s) for p, s in levels]})
    plan = (buy_yes if outcome == "yes" else buy_no)("c", limit * 100, 1)
    plan = OrderPlan(**{**{f: getattr(plan, f) for f in plan.__dataclass_fields__}, "count": count})
    r = PaperBroker(lambda t: FeeSchedule(), balance=None).submit(plan, bk, T)
    quote = bk.buy_cost(outcome, count, limit * 100)
    assert r.order.fill_count == quote.count_filled
    assert r.order.fill_cost == quote.cost
    assert len(r.fills) == quote.levels_walked
    if r.fills:
        assert max(f.outcome_price for f in r.fills) == quote.worst_price <= limit * 100
        exact = sum(Fraction(f.count * f.outcome_price) for f in r.fills) / r.order.fill_count
        assert r.order.average_fill_price == -(-exact.numerator // exact.denominator)


# --- restore: the paper account rebuilt from journaled fills (a restart) ---


def body(f, source="paper"):
    """A paper fill as the whale executor journals it (``record_fill`` adds the fill id)."""
    return {"fill_id": f.fill_id, "order_id": f.order_id, "client_order_id": f.client_order_id, "market": f.ticker,
            "outcome": f.outcome, "yes_price": f.yes_price, "count": f.count, "fee": f.fee, "ts_ms": f.ts_ms,
            "source": source}


def account_of(b):
    return b.cash, b.positions(), tuple(b.position(t) for t in (M, "KXOTHER-1"))


def test_restore_rebuilds_positions_cash_pnl_and_orders():
    a = broker()
    results = [
        a.submit(buy_yes("c1", 5500, 5), book(no=((4700, 10 * C), (4800, 2 * C))), T),
        a.submit(buy_no("c2", 6000, 3), book(yes=((4200, 10 * C), (4500, 1 * C))), T + 1),  # nets against c1
        a.submit(buy_yes("c3", 5500, 5), book(no=((4800, 2 * C),)), T + 2),  # IOC partial: 2 of 5
        a.submit(buy_no("c4", 3000, 5, ticker="KXOTHER-1"), book(yes=((7000, 100 * C),), ticker="KXOTHER-1"), T + 3),
        a.submit(buy_yes("c5", 5500, 5, tif="fill_or_kill"), book(no=((4800, 2 * C),)), T + 4),  # nothing filled
    ]
    fills = [body(f) for r in results for f in r.fills]
    b = broker()
    report = b.restore(fills)
    assert (report.applied, report.skipped, report.orders) == (len(fills), 0, 4)
    assert account_of(b) == account_of(a)
    assert report.positions == a.positions()
    assert dict(report.fill_cost) == {M: sum(r.order.fill_cost for r in results[:3] + results[4:]),
                                      "KXOTHER-1": results[3].order.fill_cost}
    for r in results[:4]:
        o, restored = r.order, b.order(r.order.client_order_id)
        assert (restored.order_id, restored.ticker, restored.side, restored.fill_count, restored.fill_cost,
                restored.fees, restored.average_fill_price, restored.remaining_count) == (
            o.order_id, o.ticker, o.side, o.fill_count, o.fill_cost, o.fees, o.average_fill_price, 0)
        assert restored.status == "executed" and restored.initial_count == o.fill_count
    assert b.order("c1").price == 5300 and b.order("c2").price == 4200  # the worst YES price each filled at
    # An order that filled nothing left no fill: absent, and sending it again is a first fill, not a second.
    assert b.order("c5") is None
    # A restored order is known: the same client_order_id again is a duplicate, never a second fill.
    again = b.submit(buy_yes("c1", 5500, 5), book(no=((4800, 20 * C),)), T + 5)
    assert (again.accepted, again.reject_code) == (False, "order_already_exists")
    # Restoring the same fills twice changes nothing.
    before = account_of(b)
    assert (b.restore(fills).applied, account_of(b)) == (0, before)


def test_restore_then_trading_continues_like_the_original_broker():
    a, b = broker(), broker()
    first = a.submit(buy_yes("c1", 5500, 5), book(no=((4700, 10 * C),)), T)
    b.restore([body(f) for f in first.fills])
    more = [(buy_no("c2", 6000, 7), book(yes=((4200, 10 * C),))), (buy_yes("c3", 5600, 1), book(no=((4600, 3 * C),)))]
    for plan, bk in more:
        assert a.submit(plan, bk, T + 1).fills == b.submit(plan, bk, T + 1).fills
    assert account_of(b) == account_of(a)


def test_restore_skips_bad_and_foreign_bodies_with_a_warning(caplog):
    a = broker()
    r = a.submit(buy_yes("c1", 5500, 5), book(no=((4700, 10 * C), (4800, 2 * C))), T)
    good = [body(f) for f in r.fills]
    other = a.submit(buy_yes("c9", 5500, 1), book(no=((4700, 10 * C),)), T).fills[0]
    bad = [
        None,
        "text",
        body(other, source="ws"),  # an exchange fill: not ours to restore
        {k: v for k, v in body(other).items() if k != "market"},
        {**body(other), "count": True},
        {**body(other), "count": 0},
        {**body(other), "count": "100"},
        {**body(other), "fee": -1},
        {**body(other), "fee": None},
        {**body(other), "yes_price": PRICE_ONE},
        {**body(other), "outcome": "maybe"},
        {**body(other), "ts_ms": 1.5},
        {**body(other), "client_order_id": ""},
        {**good[1], "fill_id": "pf-x", "order_id": "paper-other"},  # contradicts c1's first fill
        {**good[1], "fill_id": "pf-y", "market": "KXOTHER-1"},
        good[0],  # the same fill id twice
    ]
    b = broker()
    with caplog.at_level("WARNING", logger="actors.paper_broker"):
        report = b.restore([good[0], *bad, good[1]])
    assert (report.applied, report.skipped, report.orders) == (2, len(bad), 1)
    assert account_of(b) == account_of(_restored(good))
    assert b.order("c1").fill_count == 5 * C and b.order("c9") is None
    assert sum("paper restore" in m for m in caplog.messages) == 11  # ten one by one, then a summary line
    # A fill of an order this broker made itself is not applied again under another fill id.
    c = broker()
    made = c.submit(buy_yes("c1", 5500, 5), book(no=((4700, 10 * C),)), T)
    assert c.restore([{**body(made.fills[0]), "fill_id": "pf-z"}]).skipped == 1
    assert c.position(M).position == 5 * C


def _restored(bodies):
    b = broker()
    b.restore(bodies)
    return b


@given(
    orders=st.lists(
        st.tuples(st.sampled_from(["yes", "no"]), st.integers(1, 99), st.integers(1, 30),
                  st.sampled_from([M, "KXOTHER-1"]),
                  st.lists(st.tuples(st.integers(1, 99), st.integers(1, 1500)), max_size=4, unique_by=lambda x: x[0])),
        max_size=8,
    )
)
def test_restore_round_trip_equals_the_broker_that_made_the_fills(orders):
    a = broker(balance=None)
    fills = []
    for i, (outcome, limit, contracts, ticker, levels) in enumerate(orders):
        side = "no" if outcome == "yes" else "yes"
        bk = book(**{side: [(p * 100, s) for p, s in levels]}, ticker=ticker)
        plan = (buy_yes if outcome == "yes" else buy_no)(f"c{i}", limit * 100, contracts, ticker=ticker)
        fills += [body(f) for f in a.submit(plan, bk, T + i).fills]
    b = broker(balance=None)
    assert b.restore(fills).applied == len(fills)
    assert account_of(b) == account_of(a)
