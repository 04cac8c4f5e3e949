"""Property test: random order streams from a few users keep the exchange's books and money sound."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalshi.units import COUNT_ONE, PRICE_ONE

from .test_engine_support import MAKER_FEES, PLAIN, T0, call, make_engine, order_body

USERS = ("user-a", "user-b", "user-c")
START = 1_000 * 10_000

action = st.tuples(
    st.sampled_from(USERS),
    st.sampled_from(("bid", "ask")),
    st.integers(1, 99),  # cents
    st.integers(1, 40),  # contracts
    st.sampled_from(("good_till_canceled", "immediate_or_cancel", "fill_or_kill", "cancel", "amend")),
    st.sampled_from(("taker_at_cross", "maker")),
    st.booleans(),  # which market
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=60))
def test_books_positions_and_money_stay_consistent(actions):
    eng = make_engine(start_balance=START)
    markets = (eng.slots[PLAIN], eng.slots[MAKER_FEES])
    for user in USERS:
        eng.ensure_account(user)
    for user, side, cents, contracts, kind, stp, which in actions:
        t = markets[which]
        if kind in ("cancel", "amend"):
            resting = [o for o in eng.orders.values() if o.user == user and o.status == "resting"]
            if not resting:
                continue
            o = resting[cents % len(resting)]
            if kind == "cancel":
                assert call(eng, "DELETE", f"/portfolio/events/orders/{o.order_id}", user=user)[0] == 200
            else:
                body = {"ticker": o.ticker, "side": "bid" if o.is_bid else "ask", "price": f"0.{cents:02d}00",
                        "count": f"{o.filled // COUNT_ONE + contracts}.00"}
                status, resp = call(eng, "POST", f"/portfolio/events/orders/{o.order_id}/amend", body, user=user)
                assert status in (200, 400), resp
            continue
        status, resp = call(eng, "POST", "/portfolio/events/orders",
                            order_body(t, side, f"0.{cents:02d}00", f"{contracts}.00", kind,
                                       self_trade_prevention_type=stp), user=user)
        assert status in (201, 400), resp
    fees = 0
    for t in markets:
        m = eng.markets[t]
        yes, no = m.book.yes, m.book.no
        if yes.prices and no.prices:
            assert yes.prices[-1] + no.prices[-1] < PRICE_ONE  # never crossed
        for side in (yes, no):
            for p in side.prices:
                assert side.totals[p] == sum(o.remaining for o in side.levels[p]) > 0
        qs = [eng.accounts[u].positions[t].q for u in USERS if t in eng.accounts[u].positions]
        assert sum(qs) == 0
        assert m.open_interest == sum(q for q in qs if q > 0)
    for u in USERS:
        acct = eng.accounts[u]
        fees += sum(p.fees for p in acct.positions.values())
        assert acct.reserved == sum(o.reserved for o in eng.orders.values() if o.user == u and o.status == "resting")
        assert acct.available >= 0
    collateral = sum(eng.markets[t].open_interest for t in markets) * PRICE_ONE // COUNT_ONE
    assert sum(eng.accounts[u].cash for u in USERS) + collateral + fees == START * len(USERS)
    # settle everything: collateral goes back to holders, money is conserved
    eng.advance(T0 + 10 * 3600 * 1000)
    assert all(eng.markets[t].status == "finalized" for t in markets)
    assert sum(eng.accounts[u].cash for u in USERS) + fees == START * len(USERS)
