"""The whale executor against the real LocalExchange (flow off, rate limits on): whale → order → fill →
position, REST 500 then success (F06), lost response (F07), a 429 flood (F08) and a triggered order group (F18)."""

from __future__ import annotations

import pytest

from actors.context import wall_ms
from actors.journal import Journal
from kalshi.units import COUNT_ONE
from messages.state import BookViewsUpdated
from messages.whale import OrderAccepted, OrderOutcomeUnknown, OrderRejected, WhaleDecisionMade
from tests.actors.helpers_whale import book, whale
from tests.integration.helpers_whale import (
    KEY_ID,
    LiveRig,
    b3_keys,  # noqa: F401 - fixture
    our_orders,
    queue_update,
    rest_for,
    seed_liquidity,
    start_exchange,
    tickers,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ex(b3_keys):
    exchange = start_exchange(b3_keys)
    yield exchange
    exchange.stop()


@pytest.fixture
def rig(ex, b3_keys, tmp_path):
    r = LiveRig(ex, b3_keys, tmp_path)
    yield r
    r.close()


def outcomes(tmp_path) -> list[str]:
    with Journal(tmp_path) as j:
        return [row[0] for row in j._query("SELECT status FROM order_outcomes ORDER BY seq")]


def test_whale_to_order_to_fill_to_position(ex, rig, b3_keys, tmp_path):
    ticker = tickers(ex)[0]
    seed_liquidity(ex, ticker)
    rig.start()
    w = whale(ticker, "yes", 5500, 300, wall_ms())
    rig.open_market(ticker, w)
    accepted = rig.ticking(lambda: rig.rec.got("broadcaster", OrderAccepted), message="OrderAccepted")[0]
    assert accepted.fill_count == 5 * COUNT_ONE and accepted.average_fill_price == 5500
    [(order_id, cid, status, filled)] = our_orders(ex)
    assert order_id == accepted.order_id and status == "executed" and filled == 5 * COUNT_ONE
    with rest_for(ex, b3_keys) as rest:
        [pos] = [p for p in rest.iter_positions() if p.ticker == ticker]
        assert pos.position == 5 * COUNT_ONE
    # Our orders carry the session's order group.
    assert ex.call(lambda e: e.orders[order_id].group) == rig.stats()["order_group_id"]
    rig.stop()
    assert outcomes(tmp_path) == ["accepted"]


def test_rest_500_on_create_then_success_gives_exactly_one_order(ex, rig, tmp_path):
    ticker = tickers(ex)[0]
    seed_liquidity(ex, ticker)
    rig.start()
    ex.faults.fail_rest(count=1, status=500, method="POST", path_prefix="/portfolio/events/orders")
    w = whale(ticker, "yes", 5500, 300, wall_ms())
    rig.open_market(ticker, w)
    rig.ticking(lambda: rig.rec.got("broadcaster", OrderOutcomeUnknown), message="unknown outcome")
    rig.ticking(lambda: rig.rec.got("broadcaster", OrderAccepted), message="resent and accepted")
    orders = our_orders(ex)
    assert len(orders) == 1 and orders[0][1] == rig.rec.got("broadcaster", OrderAccepted)[0].client_order_id
    assert ex.faults.count("rest_500") == 1
    rig.stop()
    assert outcomes(tmp_path) == ["unknown", "accepted"]


def test_lost_response_gives_exactly_one_order_journaled_accepted(ex, rig, tmp_path):
    ticker = tickers(ex)[0]
    seed_liquidity(ex, ticker)
    rig.start()
    ex.faults.lose_response(count=1, method="POST", path_prefix="/portfolio/events/orders", mode="drop")
    w = whale(ticker, "yes", 5500, 300, wall_ms())
    rig.open_market(ticker, w)
    rig.ticking(lambda: rig.rec.got("broadcaster", OrderOutcomeUnknown), message="unknown outcome")
    rig.ticking(lambda: rig.rec.got("broadcaster", OrderAccepted), message="found by client_order_id")
    assert len(our_orders(ex)) == 1
    assert ex.faults.count("lost_response_drop") == 1
    rig.stop()
    assert outcomes(tmp_path) == ["unknown", "accepted"]


def test_429_flood_bounded_requests_and_stale_whales_expire(ex, b3_keys, tmp_path):
    rig = LiveRig(ex, b3_keys, tmp_path, whale_max_age_seconds=2)
    try:
        names = tickers(ex)[:3]
        for t in names:
            seed_liquidity(ex, t)
        rig.start(rate_backoff_s=1.0, rate_backoff_max_s=5.0)
        before = ex.stats()["rest"]
        ex.faults.flood_429(4)
        now = wall_ms()
        first = whale(names[0], "yes", 5500, 400, now)
        rig.open_market(names[0], first)
        rig.ticking(lambda: rig.stats()["counts"].get("place_rate_limited"), message="first 429")
        # More whales arrive during the back-off: rate limited now, too old by the time it ends.
        later = [whale(t, "yes", 5500, 300 + i, wall_ms()) for i, t in enumerate(names[1:])]
        rig.ref.tell(BookViewsUpdated(views=tuple(book(t, yes=(), no=((4500, 100 * COUNT_ONE),)) for t in names)))
        rig.ref.tell(queue_update(first, *later))
        rig.ticking(lambda: wall_ms() - now > 5_000 and not rig.stats()["open_orders"], timeout=20, message="flood over")
        requests_made = ex.stats()["rest"] - before
        assert requests_made <= 30, requests_made  # back-off: no hot loop
        assert our_orders(ex) == []  # nothing bursts out after the flood: the whales were too old
        actions = {}
        for m in rig.rec.got("broadcaster", WhaleDecisionMade):
            actions.setdefault(m.decision.market, []).append(m.decision.action)
        for market in names[1:]:
            assert actions[market][0] == "rate_limited", actions
            assert actions[market][-1] in ("skipped_age", "follow"), actions
        assert {r.code for r in rig.rec.got("broadcaster", OrderRejected)} <= {"rate_limited"}
        rig.stop()
        with Journal(tmp_path) as j:
            assert j.load().pending_intents == ()
    finally:
        rig.close()


def test_triggered_order_group_rejections_are_final(ex, rig, b3_keys):
    names = tickers(ex)
    seed_liquidity(ex, names[0])
    seed_liquidity(ex, names[1])
    rig.start()
    gid = rig.stats()["order_group_id"]
    user = ex.user_id(KEY_ID)
    ex.call(lambda e: e.trigger_group(user, gid))
    w = whale(names[0], "yes", 5500, 300, wall_ms())
    rig.open_market(names[0], w)
    rejected = rig.ticking(lambda: rig.rec.got("broadcaster", OrderRejected), message="rejected by the group")[0]
    assert rejected.status_code == 400
    for _ in range(20):
        rig.tick()
        rig.ref.tell(queue_update(w))
    rig.stats()
    assert our_orders(ex) == []
    stats = rig.stats()
    assert stats["counts"].get("place_rejected") == 1  # no re-placement loop
    assert stats["order_group_triggered"] is True
