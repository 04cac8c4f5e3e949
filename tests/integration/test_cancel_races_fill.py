"""F17 against the real LocalExchange: a resting GTC order of ours fills before our cancel reaches it. The
exchange answers the cancel 404 ``not_found`` (as Kalshi does for executed orders); the venue reads the order
back and reports it as filled, not canceled, and the position read over REST is the filled count."""

from __future__ import annotations

import pytest

from actors.context import SystemContext
from actors.venues import ExchangeVenue
from actors.whale_executor import WhaleExecutor
from kalshi import rest as R
from kalshi.units import COUNT_ONE, MONEY_ONE
from messages.control import SyncAccount, TradingClientReady
from messages.whale import CleanupCompleted, CleanupRequested, OrderPlan
from tests.actors.helpers_whale import Recorders, settings
from tests.helpers import wait_for
from tests.integration.helpers_whale import (
    KEY_ID,
    MM_USER,
    b3_keys,  # noqa: F401 - fixture
    credentials,
    our_orders,
    rest_for,
    start_exchange,
    tickers,
)

pytestmark = pytest.mark.timeout(60)

BID = 4000  # our resting YES bid at 0.40; the book is empty (flow off), so it rests


@pytest.fixture
def ex(b3_keys):
    exchange = start_exchange(b3_keys)
    yield exchange
    exchange.stop()


def cross(ex, ticker: str, contracts: int, price: int = BID) -> None:
    """Another user sells YES at ``price`` (an ask on the YES book): it hits our resting bid."""

    def place(e):
        e.ensure_flow_account(MM_USER, 10_000_000 * MONEY_ONE)
        e.place(MM_USER, ticker, False, price, contracts * COUNT_ONE)

    ex.call(place)


def resting_bid(venue: ExchangeVenue, ticker: str, cid: str, contracts: int) -> str:
    plan = OrderPlan(client_order_id=cid, whale_id="w-f17", market=ticker, outcome="yes", side="bid", price=BID,
                     count=contracts * COUNT_ONE, time_in_force="good_till_canceled")
    out = venue.place(plan, None)
    assert out.status == "accepted" and out.fill_count == 0 and out.remaining_count == contracts * COUNT_ONE, out
    return out.order_id


def position(rest: R.KalshiRest, ticker: str) -> int:
    return sum(p.position for p in rest.iter_positions() if p.ticker == ticker)


def test_cancel_of_an_order_that_filled_is_reported_filled_and_the_position_is_right(ex, b3_keys):
    ticker = tickers(ex)[0]
    venue = ExchangeVenue(rest_for(ex, b3_keys))
    try:
        order_id = resting_bid(venue, ticker, "f17-full", 3)
        cross(ex, ticker, 3)
        assert [(o, s, f) for o, _, s, f in our_orders(ex)] == [(order_id, "executed", 3 * COUNT_ONE)]
        # What the exchange answers a direct cancel: Kalshi's 404 not_found, nothing more.
        with pytest.raises(R.NotFoundError):
            venue.rest.cancel_order(order_id, ticker=ticker)
        report = venue.cancel(((order_id, ticker),))
        assert report.canceled == () and report.gone == () and report.failed == ()
        [filled] = report.filled
        assert (filled.order_id, filled.market, filled.status) == (order_id, ticker, "executed")
        assert filled.fill_count == 3 * COUNT_ONE and filled.remaining_count == 0
        assert "filled (3.00) before the cancel" in report.detail
        assert position(venue.rest, ticker) == 3 * COUNT_ONE
    finally:
        venue.close()


def test_partial_fill_then_cancel_is_a_cancel_and_the_fills_stay(ex, b3_keys):
    ticker = tickers(ex)[0]
    venue = ExchangeVenue(rest_for(ex, b3_keys))
    try:
        order_id = resting_bid(venue, ticker, "f17-part", 3)
        cross(ex, ticker, 1)
        report = venue.cancel(((order_id, ticker),))
        assert report.canceled == (order_id,) and report.filled == () and report.gone == ()
        # Canceled again (by "someone else" now): 404, read back as canceled with its one fill.
        again = venue.cancel(((order_id, ticker),))
        assert again.canceled == (order_id,) and again.filled == ()
        assert "already canceled, 1.00 filled before" in again.detail
        assert position(venue.rest, ticker) == COUNT_ONE
    finally:
        venue.close()


def test_unknown_order_id_is_gone(ex, b3_keys):
    venue = ExchangeVenue(rest_for(ex, b3_keys))
    try:
        report = venue.cancel((("00000000-0000-0000-0000-000000000000", tickers(ex)[0]),))
        assert report.gone == ("00000000-0000-0000-0000-000000000000",) and report.filled == ()
        assert "not found on cancel nor on read-back" in report.detail
    finally:
        venue.close()


class RacingVenue(ExchangeVenue):
    """The real venue, with the race window forced open: between listing our resting orders and canceling
    them, ``on_listed`` runs (it makes the exchange fill the order)."""

    def __init__(self, rest, on_listed) -> None:
        super().__init__(rest)
        self.on_listed = on_listed

    def resting_orders(self):
        listed = super().resting_orders()
        if listed:
            self.on_listed()
        return listed


def test_executor_cleanup_that_races_a_fill_reports_it_filled_and_syncs(ex, b3_keys, tmp_path):
    ticker = tickers(ex)[0]
    rec = Recorders()
    ref = None
    try:
        ctx = SystemContext(
            settings=settings(), rest_url=ex.rest_url, ws_url=ex.ws_url, credentials=credentials(b3_keys),
            data_dir=tmp_path, market_tickers=(), execution="exchange",
            rest_factory=lambda: rest_for(ex, b3_keys),
        )
        raced: list[bool] = []

        def fill_it():
            if not raced:  # once: the first listing after our order rests
                raced.append(True)
                cross(ex, ticker, 2)

        ref = WhaleExecutor.start("whale_executor", 1, rec.refs["supervisor"], rec.peers("whale_executor"),
                                  {"context": ctx},
                                  venue_factory=lambda c, books: RacingVenue(c.make_rest(), fill_it))
        wait_for(lambda: rec.got("supervisor", TradingClientReady), 15, message="TradingClientReady")
        # An orphaned resting bid of ours (not in the executor's order group), placed over REST.
        with rest_for(ex, b3_keys) as rest:
            order_id = rest.create_order(ticker, "bid", 2 * COUNT_ONE, BID, "good_till_canceled", "f17-orphan").order_id
        ref.tell(CleanupRequested(request_id=17, orphaned_only=True, reply_to="broadcaster"))
        done = wait_for(lambda: rec.got("broadcaster", CleanupCompleted), 15, message="CleanupCompleted")[0]
        assert raced == [True]
        assert done.request_id == 17 and done.filled == (order_id,) and done.canceled == () and done.failed == ()
        [sync] = wait_for(lambda: rec.got("state_keeper", SyncAccount), 15, message="SyncAccount to the state keeper")
        assert "cancel raced a fill" in sync.reason
        user = ex.user_id(KEY_ID)
        assert ex.call(lambda e: e.orders[order_id].status) == "executed" and ex.call(lambda e: e.orders[order_id].user) == user
        with rest_for(ex, b3_keys) as rest:
            assert position(rest, ticker) == 2 * COUNT_ONE
    finally:
        if ref is not None:
            ref.stop(timeout=15)
        rec.stop()
