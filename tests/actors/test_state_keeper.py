"""State keeper: books from snapshot/delta batches, staleness, account state, REST sync, conflated StateChanged.

Handler tests build the actor without starting it and give it recording peers; threaded tests start it with
probe actors and a fake REST client (the SystemContext's ``rest_factory``).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from actors.base import PeerTable
from actors.context import SystemContext
from actors.settings import load_settings
from actors.state_keeper import StateKeeper, read_account
from kalshi.wire.frames import OrderbookDelta, OrderbookSnapshot, Trade
from messages.account import AccountSynced, FillReceived, OrderUpdated, PositionChanged
from messages.control import DataSynced, SyncAccount, Tick
from messages.feed import RequestSnapshot, SequenceGap
from messages.market import BookFramesReceived, BookStale
from messages.state import AccountViewUpdated, BookViewsUpdated, StateChanged, WatchBooks
from messages.status import SyncFinished
from messages.whale import OrderAccepted, OrderSubmitted
from tests.actors.conftest import Block, Probe, ProbeControl, ProbeLog
from tests.helpers import wait_for

MS = 1_000_000


class Recorder:
    """A stand-in ActorRef that records what it is told (handler tests run in the test thread)."""

    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, msg: Any) -> None:
        self.told.append(msg)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.told if type(m) is kind]


def settings():
    return load_settings(config_path=None, environ={}, dotenv_path=None)


def make_context(tmp_path, rest_factory=None, execution="exchange") -> SystemContext:
    return SystemContext(
        settings=settings(),
        rest_url="http://127.0.0.1:1/trade-api/v2",
        ws_url="ws://127.0.0.1:1/trade-api/ws/v2",
        credentials=None,
        data_dir=tmp_path,
        market_tickers=("M1", "M2"),
        execution=execution,
        rest_factory=rest_factory,
        wall_ms=lambda: 1_767_225_600_000,
    )


@pytest.fixture
def keeper(tmp_path):
    peers = {name: Recorder() for name in ("whale_executor", "broadcaster", "orderbook_feed")}
    sk = StateKeeper("state_keeper", 1, None, PeerTable(peers), {"context": make_context(tmp_path)})
    sk.setup()
    sk.rec = peers  # type: ignore[attr-defined]
    yield sk
    sk.cleanup()


def snap(ticker: str, seq: int, yes=((5000, 1000),), no=((4000, 500),)) -> OrderbookSnapshot:
    return OrderbookSnapshot(sid=1, seq=seq, market_ticker=ticker, yes=tuple(yes), no=tuple(no))


def delta(ticker: str, seq: int, price: int, d: int, side: str = "yes") -> OrderbookDelta:
    return OrderbookDelta(sid=1, seq=seq, market_ticker=ticker, price=price, delta=d, side=side)


def batch(*frames, feed="orderbook_feed") -> BookFramesReceived:
    return BookFramesReceived(feed=feed, conn_id=1, frames=tuple(frames), recv_ns=123)


def tick(sk: StateKeeper, ms: int) -> None:
    sk.on_tick(Tick(now_mono_ns=1_000_000 * MS + ms * MS, now_wall_ms=1_767_225_600_000 + ms))


def position(ticker: str, pos: int, cost: int = 0, source="ws") -> PositionChanged:
    return PositionChanged(market_ticker=ticker, position=pos, cost=cost, realized_pnl=0, fees_paid=0, source=source)


def order(order_id: str, status: str = "resting", ticker: str = "M1") -> OrderUpdated:
    return OrderUpdated(
        order_id=order_id, client_order_id=f"c-{order_id}", market_ticker=ticker, status=status, book_side="bid",
        outcome_side="yes", yes_price=5000, fill_count=0, remaining_count=500, initial_count=500,
        order_group_id=None, ts_ms=1, source="ws",
    )


def fill(fill_id: str, ticker: str = "M1", source="ws") -> FillReceived:
    return FillReceived(
        fill_id=fill_id, order_id="o1", client_order_id=None, market_ticker=ticker, is_taker=True,
        outcome_side="yes", book_side="bid", yes_price=5000, count=100, fee=70, post_position=100, ts_ms=1,
        source=source,
    )


def rest_fill(trade_id: str, ticker: str = "M1", ts_ms: int | None = 1_767_225_000_000):
    """A ``kalshi.wire.bodies.Fill``-shaped REST fill."""
    return SimpleNamespace(fill_id=trade_id, trade_id=trade_id, order_id="o1", ticker=ticker, book_side="bid",
                           outcome_side="yes", count=200, yes_price=5100, no_price=4900, is_taker=True,
                           fee_cost=350, created_time_ms=1_767_225_000_123, ts_ms=ts_ms, client_order_id=None)


# --- books ---------------------------------------------------------------------------------------


def test_snapshot_and_deltas_give_one_view_per_batch_for_watched_books_only(keeper):
    ex = keeper.rec["whale_executor"]
    keeper.on_watch_books(WatchBooks(market_tickers=frozenset({"M1"})))
    first = ex.of(BookViewsUpdated)
    assert len(first) == 1 and first[0].views[0].valid is False  # current state of a newly watched book

    keeper.on_book_frames(batch(snap("M1", 1), snap("M2", 1), delta("M1", 2, 5000, -200), delta("M1", 3, 5100, 300),
                                delta("M2", 2, 4000, 100, "no")))
    views = ex.of(BookViewsUpdated)
    assert len(views) == 2  # exactly one more message for the whole batch
    (view,) = views[1].views  # M2 changed too but is not watched
    assert view.market_ticker == "M1" and view.valid
    assert view.yes == ((5000, 800), (5100, 300)) and view.no == ((4000, 500),)
    assert view.seq == 3 and view.recv_ns == 123

    keeper.on_book_frames(batch(delta("M2", 3, 4000, 50, "no")))
    assert len(ex.of(BookViewsUpdated)) == 2  # an unwatched book changing tells the executor nothing
    assert keeper.books["M2"].levels("no") == ((4000, 650),)


def test_every_watched_book_is_sent_on_watch_books_even_if_already_watched(keeper):
    """A restarted executor asks for the books its predecessor watched: it must get them now, not when they
    next change (a quiet market may not change for minutes)."""
    ex = keeper.rec["whale_executor"]
    keeper.on_book_frames(batch(snap("M1", 1), snap("M2", 1)))
    keeper.on_watch_books(WatchBooks(market_tickers=frozenset({"M1", "M2"})))
    keeper.on_watch_books(WatchBooks(market_tickers=frozenset({"M1", "M2"})))  # the new executor, same set
    sent = ex.of(BookViewsUpdated)
    assert len(sent) == 2 and [v.market_ticker for v in sent[1].views] == ["M1", "M2"]
    assert all(v.valid and v.seq == 1 for v in sent[1].views)
    keeper.on_watch_books(WatchBooks(market_tickers=frozenset()))
    assert len(ex.of(BookViewsUpdated)) == 2  # nothing watched: nothing to send


def test_delta_before_snapshot_marks_stale_and_requests_a_snapshot_once(keeper):
    feed = keeper.rec["orderbook_feed"]
    keeper.on_watch_books(WatchBooks(market_tickers=frozenset({"M1"})))
    keeper.on_book_frames(batch(delta("M1", 5, 5000, 100), delta("M1", 6, 5000, 100)))
    reqs = feed.of(RequestSnapshot)
    assert len(reqs) == 1 and reqs[0].market_tickers == ("M1",)
    assert keeper.rec["whale_executor"].of(BookViewsUpdated)[-1].views[0].valid is False

    keeper.on_book_frames(batch(delta("M1", 7, 5000, 100)))
    assert len(feed.of(RequestSnapshot)) == 1  # already asked: not asked again per delta

    keeper.on_book_frames(batch(snap("M1", 8), delta("M1", 9, 5000, 1)))
    view = keeper.rec["whale_executor"].of(BookViewsUpdated)[-1].views[0]
    assert view.valid and view.yes == ((5000, 1001),)
    assert "M1" not in keeper.snapshot_requested


def test_missing_snapshot_is_asked_again_after_the_retry_interval(keeper):
    feed = keeper.rec["orderbook_feed"]
    tick(keeper, 0)
    keeper.on_book_frames(batch(delta("M1", 5, 5000, 100)))
    tick(keeper, 1000)
    assert len(feed.of(RequestSnapshot)) == 1
    tick(keeper, 5200)
    assert len(feed.of(RequestSnapshot)) == 2


def test_invalid_delta_makes_the_book_stale_until_the_next_snapshot(keeper):
    ex, feed = keeper.rec["whale_executor"], keeper.rec["orderbook_feed"]
    keeper.on_watch_books(WatchBooks(market_tickers=frozenset({"M1"})))
    keeper.on_book_frames(batch(snap("M1", 1), delta("M1", 2, 5000, -2000), delta("M1", 3, 5000, 10)))
    view = ex.of(BookViewsUpdated)[-1].views[0]
    assert not view.valid and view.yes == () and "would go to" in view.reason
    assert feed.of(RequestSnapshot)[0].market_tickers == ("M1",)
    keeper.on_book_frames(batch(snap("M1", 4)))
    assert ex.of(BookViewsUpdated)[-1].views[0].valid


def test_book_stale_invalidates_until_snapshot(keeper):
    ex = keeper.rec["whale_executor"]
    keeper.on_watch_books(WatchBooks(market_tickers=frozenset({"M1"})))
    keeper.on_book_frames(batch(snap("M1", 1)))
    keeper.on_book_stale(BookStale(market_ticker="M1", reason="seq gap on sid 1"))
    view = ex.of(BookViewsUpdated)[-1].views[0]
    assert not view.valid and view.reason == "seq gap on sid 1"
    before = len(ex.of(BookViewsUpdated))
    keeper.on_book_stale(BookStale(market_ticker="M1", reason="seq gap on sid 1"))
    assert len(ex.of(BookViewsUpdated)) == before  # no change, no message
    keeper.on_book_frames(batch(delta("M1", 3, 5000, 1)))
    assert keeper.books["M1"].valid is False  # deltas do not revive a stale book
    keeper.on_book_frames(batch(snap("M1", 4)))
    assert ex.of(BookViewsUpdated)[-1].views[0].valid


def test_other_frames_are_counted_not_applied(keeper):
    trade = Trade(sid=2, seq=1, trade_id="t", market_ticker="M1", yes_price=5000, no_price=5000, count=100,
                  taker_side="yes", ts_ms=1)
    keeper.on_book_frames(batch(trade))
    assert keeper.ignored_frames == 1 and "M1" not in keeper.books


# --- the versioned, conflated change feed -----------------------------------------------------------


def test_state_changed_is_conflated_to_one_per_tick_interval(keeper):
    bc = keeper.rec["broadcaster"]
    keeper.on_book_frames(batch(snap("M1", 1)))
    for i in range(500):
        keeper.on_book_frames(batch(delta("M1", 2 + i, 5000, 1)))
    assert bc.of(StateChanged) == []  # nothing before a Tick
    tick(keeper, 0)
    (first,) = bc.of(StateChanged)
    assert first.version == 501 and first.changed == frozenset({"books"})
    (summary,) = first.books
    assert summary.best_yes_bid == 5000 and summary.best_yes_ask == 6000 and summary.valid

    keeper.on_book_frames(batch(delta("M1", 600, 5000, 1)))
    tick(keeper, 50)
    assert len(bc.of(StateChanged)) == 1  # within the interval: held back
    tick(keeper, 100)
    assert len(bc.of(StateChanged)) == 2 and bc.of(StateChanged)[1].version == 502
    tick(keeper, 300)
    assert len(bc.of(StateChanged)) == 2  # nothing changed: nothing sent


def test_version_grows_only_on_real_change(keeper):
    keeper.on_position(position("M1", 500, 2500))
    v = keeper.version
    keeper.on_position(position("M1", 500, 2500, source="rest"))  # same values
    keeper.on_position(position("M2", 0))  # zero for a market we do not hold
    assert keeper.version == v
    keeper.on_position(position("M1", 0))
    assert keeper.version == v + 1 and keeper.account_view().positions == ()


def test_conflation_keeps_up_with_a_delta_storm(keeper):
    keeper.on_book_frames(batch(snap("M1", 1, yes=[(p, 1000) for p in range(100, 9900, 100)])))
    batches = [batch(*(delta("M1", 2 + b * 100 + i, 100 * (1 + i % 90), 1 if b % 2 == 0 else -1) for i in range(100)))
               for b in range(500)]
    started = time.perf_counter()
    for i, b in enumerate(batches):
        keeper.on_book_frames(b)
        if i % 50 == 0:
            tick(keeper, i * 2)  # 10 batches of 100 deltas per ms: 100 ms apart every 50 batches
    elapsed = time.perf_counter() - started
    assert keeper.deltas_applied == 50_000
    assert len(keeper.rec["broadcaster"].of(StateChanged)) <= 10
    assert elapsed < 5.0, f"50k deltas took {elapsed:.2f}s"


# --- account -----------------------------------------------------------------------------------------


def test_fills_are_deduplicated_by_id(keeper):
    ex = keeper.rec["whale_executor"]
    keeper.on_fill(fill("f1"))
    keeper.on_fill(fill("f1"))
    keeper.on_fill(fill("f2", "M2"))
    assert keeper.fills == 2 and keeper.duplicate_fills == 1
    views = ex.of(AccountViewUpdated)
    assert len(views) == 2
    assert views[-1].view.unsynced_fill_markets == frozenset({"M1", "M2"})


def test_fill_id_memory_is_bounded(tmp_path):
    sk = StateKeeper("state_keeper", 1, None, PeerTable(), {"context": make_context(tmp_path), "fill_id_memory": 3})
    sk.setup()
    for i in range(10):
        sk.on_fill(fill(f"f{i}"))
    assert len(sk.fill_ids) == 3 and list(sk.fill_ids) == ["f7", "f8", "f9"]


def test_orders_rest_until_terminal_and_in_flight_orders_are_tracked(keeper):
    keeper.on_order(order("o1"))
    keeper.on_order(order("o2"))
    assert [o.order_id for o in keeper.account_view().resting_orders] == ["o1", "o2"]
    keeper.on_order(order("o1", status="canceled"))
    keeper.on_order(order("o9", status="executed"))  # terminal and unknown: no change
    assert [o.order_id for o in keeper.account_view().resting_orders] == ["o2"]

    keeper.on_order_submitted(OrderSubmitted(client_order_id="c-x", whale_id="w", market="M1", ts_ms=1))
    assert keeper.stats()["inflight_orders"] == {"c-x": "submitted"}
    keeper.on_order_settled(OrderAccepted(client_order_id="c-x", order_id="ox", market="M1", fill_count=100,
                                          remaining_count=0, average_fill_price=5000, average_fee_paid=70, ts_ms=2))
    assert keeper.stats()["inflight_orders"] == {}
    tick(keeper, 0)
    assert "orders" in keeper.rec["broadcaster"].of(StateChanged)[-1].changed


def test_rest_sync_replaces_streamed_state(keeper):
    keeper.on_position(position("M1", 500, 2500))
    keeper.on_position(position("M2", -300, 1800))
    keeper.on_order(order("o1"))
    keeper.on_fill(fill("f1"))
    # As if the worker started sync 7 now (what _start_sync records), then a fill arrives during it.
    keeper.sync_inflight, keeper.fills_since_sync_start = 7, set()
    keeper.on_fill(fill("f2", "M2"))
    result = AccountSynced(balance=1_000_000, portfolio_value=1_200_000,
                           positions=(position("M1", 700, 3500, "rest"),), orders=(order("o5"),), at_ms=42)
    keeper.on_sync_finished(SyncFinished(sync_id=7, result=result))
    view = keeper.account_view()
    assert view.balance == 1_000_000 and view.portfolio_value == 1_200_000
    assert [(p.market_ticker, p.position) for p in view.positions] == [("M1", 700)]
    assert [o.order_id for o in view.resting_orders] == ["o5"]
    # M1's fill is in what REST returned; M2's arrived while the sync ran, so it may not be: still unsynced.
    assert view.unsynced_fill_markets == frozenset({"M2"}) and view.synced_at_ms == 42
    assert keeper.rec["whale_executor"].of(AccountViewUpdated)[-1].view == view
    tick(keeper, 0)
    assert {"balance", "positions", "orders", "sync"} <= keeper.rec["broadcaster"].of(StateChanged)[-1].changed


def test_an_answer_from_an_old_sync_is_ignored(keeper):
    keeper.sync_inflight = 3
    result = AccountSynced(balance=5, portfolio_value=5, positions=(), orders=(), at_ms=1)
    keeper.on_sync_finished(SyncFinished(sync_id=2, result=result))
    assert keeper.balance == 0 and keeper.sync_inflight == 3


def test_without_credentials_there_is_no_sync(keeper, tmp_path):
    keeper.on_sync_account(SyncAccount(reason="test"))
    assert keeper.worker is None and keeper.syncs_started == 0
    # A REST factory alone (no credentials) does not turn syncing on by default.
    sk = StateKeeper("state_keeper", 1, None, PeerTable(), {"context": make_context(tmp_path, lambda: FakeRest())})
    sk.setup()
    assert sk.sync_enabled is False and sk.worker is None


def test_paper_execution_answers_sync_at_once(tmp_path):
    sup = Recorder()
    sk = StateKeeper("state_keeper", 1, sup, PeerTable(), {"context": make_context(tmp_path, execution="paper")})
    sk.setup()
    sk.on_sync_account(SyncAccount(reason="KALSHI_DATA_SYNC"))
    assert [type(m) for m in sup.told] == [DataSynced]
    assert sk.worker is None


# --- REST sync with a real worker thread ---------------------------------------------------------------


class FakeRest:
    """Answers like KalshiRest with kalshi.wire.bodies-shaped values; can fail or block on demand."""

    def __init__(self) -> None:
        self.balance = 500_000
        self.positions = [SimpleNamespace(ticker="M1", position=300, market_exposure=1500, realized_pnl=0,
                                          fees_paid=20, last_updated_ms=None)]
        self.orders = [SimpleNamespace(order_id="o1", client_order_id="c1", ticker="M1", status="resting",
                                       book_side="bid", outcome_side="yes", yes_price=4500, fill_count=0,
                                       remaining_count=100, initial_count=100, order_group_id="g",
                                       last_update_time_ms=5, created_time_ms=4)]
        self.fills: list[Any] = []
        self.fills_fail_at: int | None = None  # index of the fill whose page fails
        self.fill_reads: list[int] = []  # min_ts (seconds) of every fill read
        self.fail = 0
        self.calls = 0
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()

    def get_balance(self):
        self.calls += 1
        if not self.gate.wait(10):
            raise TimeoutError("test gate")
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("exchange unreachable")
        return SimpleNamespace(balance=self.balance, portfolio_value=None, updated_ts_ms=None)

    def iter_positions(self, **filters):
        assert filters == {"count_filter": "position"}
        return iter(self.positions)

    def iter_orders(self, **filters):
        assert filters == {"status": "resting"}
        return iter(self.orders)

    def iter_fills(self, **filters):
        assert set(filters) == {"min_ts"}
        self.fill_reads.append(filters["min_ts"])
        for i, f in enumerate(self.fills):
            if i == self.fills_fail_at:
                raise ConnectionError("fills page 2 failed")
            yield f

    def close(self):
        self.closed = True


def test_read_account_refuses_a_partial_read():
    rest = FakeRest()
    rest.orders = rest.orders * 4
    with pytest.raises(ValueError, match="partial"):
        read_account(rest, 1, max_items=3)
    ok = read_account(FakeRest(), 9)
    assert ok.balance == 500_000 and ok.portfolio_value == 0 and ok.at_ms == 9
    assert ok.positions[0].cost == 1500 and ok.orders[0].order_group_id == "g"


def test_read_account_reads_fills_since_the_cursor_in_seconds():
    rest = FakeRest()
    rest.fills = [rest_fill("t2"), rest_fill("t1", ts_ms=None)]
    assert read_account(rest, 9).fills == () and rest.fill_reads == []  # no cursor: no fill read
    result = read_account(rest, 9, fills_min_ms=1_767_225_000_999)
    assert rest.fill_reads == [1_767_225_000] and result.fills_read and result.fills_error is None
    first, second = result.fills
    assert first == FillReceived(fill_id="t2", order_id="o1", client_order_id=None, market_ticker="M1", is_taker=True,
                                 outcome_side="yes", book_side="bid", yes_price=5100, count=200, fee=350,
                                 post_position=None, ts_ms=1_767_225_000_000, source="rest")
    assert second.ts_ms == 1_767_225_000_123  # no ts: the created time


def test_a_failed_fill_page_keeps_what_was_read_and_the_rest_of_the_sync():
    rest = FakeRest()
    rest.fills = [rest_fill("t1"), rest_fill("t2"), rest_fill("t3")]
    rest.fills_fail_at = 2
    result = read_account(rest, 9, fills_min_ms=0)
    assert [f.fill_id for f in result.fills] == ["t1", "t2"]
    assert result.fills_read is False and result.fills_error.startswith("ConnectionError")
    assert result.positions[0].position == 300 and result.orders[0].order_id == "o1"
    capped = read_account(rest, 9, max_items=1, fills_min_ms=0)
    assert len(capped.fills) == 2 and "more than 1 fills" in capped.fills_error


def test_a_fill_seen_on_the_stream_and_again_over_rest_reaches_the_executor_once(keeper):
    ex = keeper.rec["whale_executor"]
    keeper.on_fill(fill("t1"))
    keeper.sync_inflight, keeper.fills_since_sync_start = 7, set()
    synced = AccountSynced(balance=1, portfolio_value=1, positions=(), orders=(), at_ms=1_767_225_600_000,
                           fills=(fill("t1", source="rest"), fill("t2", "M2", source="rest")), fills_read=True)
    keeper.on_sync_finished(SyncFinished(sync_id=7, result=synced))
    assert [(f.fill_id, f.source) for f in ex.of(FillReceived)] == [("t1", "ws"), ("t2", "rest")]
    assert keeper.fills == 2 and keeper.duplicate_fills == 1 and keeper.rest_fills == 1
    # A REST fill is already in the REST positions: it does not make its market unsynced.
    assert keeper.account_view().unsynced_fill_markets == frozenset()
    keeper.on_fill(fill("t2"))  # the stream catching up late
    assert len(ex.of(FillReceived)) == 2 and keeper.duplicate_fills == 2
    # Paper fills were journaled by the executor before it told us: not echoed back.
    keeper.on_fill(fill("p1", source="paper"))
    assert len(ex.of(FillReceived)) == 2 and keeper.fills == 3


def test_a_failed_fill_read_is_counted_and_positions_still_replace(keeper):
    keeper.on_position(position("M2", 100))
    keeper.sync_inflight = 7
    synced = AccountSynced(balance=1, portfolio_value=1, positions=(position("M1", 700, 3500, "rest"),),
                           orders=(order("o5"),), at_ms=5_000, fills=(fill("t1", source="rest"),),
                           fills_error="ConnectionError: boom")
    keeper.on_sync_finished(SyncFinished(sync_id=7, result=synced))
    view = keeper.account_view()
    assert [p.market_ticker for p in view.positions] == ["M1"] and [o.order_id for o in view.resting_orders] == ["o5"]
    assert keeper.syncs_ok == 1 and keeper.fill_read_errors == 1
    assert keeper.stats()["last_fill_read_error"] == "ConnectionError: boom"
    assert [f.fill_id for f in keeper.rec["whale_executor"].of(FillReceived)] == ["t1"]  # what was read counts
    assert keeper.fills_read_ms is None  # the cursor does not move past a fill read with a hole


def test_a_fill_the_executor_cannot_take_yet_is_told_again_on_the_next_tick(tmp_path):
    # The state keeper starts (and syncs) before the executor: its first fills may find no executor yet.
    peers = PeerTable({"broadcaster": Recorder()})
    sk = StateKeeper("state_keeper", 1, None, peers, {"context": make_context(tmp_path)})
    sk.setup()
    sk.on_fill(fill("t1"))
    assert sk.stats()["fills_undelivered"] == 1
    tick(sk, 0)
    assert sk.stats()["fills_undelivered"] == 1  # still no executor: kept
    ex = Recorder()
    peers.set("whale_executor", ex)
    tick(sk, 100)
    assert [f.fill_id for f in ex.of(FillReceived)] == ["t1"] and sk.stats()["fills_undelivered"] == 0
    tick(sk, 200)
    assert len(ex.of(FillReceived)) == 1 and sk.fills_lost == 0


@pytest.fixture
def live_keeper(tmp_path):
    plog = ProbeLog()
    refs = {}
    for name in ("supervisor", "whale_executor", "broadcaster"):
        refs[name] = Probe.start(name, 1, None, PeerTable(), {}, probe_log=plog, control=ProbeControl())
    rest = FakeRest()
    ctx = make_context(tmp_path, rest_factory=lambda: rest)
    peers = PeerTable({"whale_executor": refs["whale_executor"], "broadcaster": refs["broadcaster"]})
    ref = StateKeeper.start("state_keeper", 1, refs["supervisor"], peers, {"context": ctx, "sync_interval_s": 30, "sync": True})
    yield SimpleNamespace(ref=ref, log=plog, rest=rest, probes=refs)
    ref.stop(block=True, timeout=10)
    for r in refs.values():
        r.stop(block=True, timeout=10)
    assert rest.closed  # the worker closed its REST client


def test_sync_on_start_and_on_request_answers_data_synced(live_keeper):
    k = live_keeper
    wait_for(lambda: k.log.received("whale_executor", AccountViewUpdated), message="first sync")
    assert k.log.received("supervisor", DataSynced) == []  # the start-up sync was not requested
    view = k.log.received("whale_executor", AccountViewUpdated)[-1].view
    assert view.balance == 500_000 and view.positions[0].position == 300 and view.resting_orders[0].order_id == "o1"

    k.rest.balance = 600_000
    k.ref.tell(SyncAccount(reason="KALSHI_DATA_SYNC"))
    synced = wait_for(lambda: k.log.received("supervisor", DataSynced), message="DataSynced")
    assert synced[0].actor == "state_keeper" and synced[0].generation == 1
    assert k.log.received("whale_executor", AccountViewUpdated)[-1].view.balance == 600_000


def test_sync_failure_is_counted_and_retried_without_crashing(live_keeper):
    k = live_keeper
    wait_for(lambda: k.log.received("whale_executor", AccountViewUpdated), message="first sync")
    k.rest.fail = 1
    k.ref.tell(SyncAccount(reason="KALSHI_DATA_SYNC"))
    wait_for(lambda: _stats(k.ref)["syncs_failed"] == 1, message="failed sync")
    stats = _stats(k.ref)
    assert stats["last_sync_error"].startswith("ConnectionError") and k.ref.is_alive()
    assert k.log.received("supervisor", DataSynced) == []
    # The owed sync is retried ~2 s (of Tick time) later and then answered.
    k.ref.tell(Tick(now_mono_ns=10 * 10**9, now_wall_ms=1))
    k.ref.tell(Tick(now_mono_ns=13 * 10**9, now_wall_ms=2))
    wait_for(lambda: k.log.received("supervisor", DataSynced), message="DataSynced after retry")
    assert _stats(k.ref)["syncs_ok"] == 2


def test_a_request_during_a_running_sync_runs_another_one(live_keeper):
    k = live_keeper
    wait_for(lambda: k.log.received("whale_executor", AccountViewUpdated), message="first sync")
    k.rest.gate.clear()  # the next sync blocks inside get_balance
    k.ref.tell(SequenceGap(feed="position_listener", conn_id=1, sid=3, expected=5, got=7))
    wait_for(lambda: _stats(k.ref)["syncs_started"] == 2, message="gap sync started")
    k.ref.tell(SyncAccount(reason="KALSHI_DATA_SYNC"))
    assert _stats(k.ref)["syncs_started"] == 2  # waits for the running one
    k.rest.gate.set()
    wait_for(lambda: k.log.received("supervisor", DataSynced), message="DataSynced")
    assert _stats(k.ref)["syncs_started"] == 3


def test_fill_reads_start_a_day_back_then_from_the_last_complete_read(live_keeper):
    k = live_keeper
    wall = 1_767_225_600_000  # make_context's wall clock
    # The keeper syncs as it starts: let that first (fill-less) read finish before adding a fill.
    wait_for(lambda: k.log.received("whale_executor", AccountViewUpdated), message="start-up sync")
    assert k.rest.fill_reads == [(wall - 86_400_000) // 1000]
    k.rest.fills = [rest_fill("t1")]
    k.ref.tell(SyncAccount(reason="KALSHI_DATA_SYNC"))
    wait_for(lambda: k.log.received("whale_executor", FillReceived), message="REST fill told")
    wait_for(lambda: len(k.log.received("supervisor", DataSynced)) == 1, message="second sync")
    k.rest.fills_fail_at = 0
    k.ref.tell(SyncAccount(reason="KALSHI_DATA_SYNC"))
    wait_for(lambda: len(k.log.received("supervisor", DataSynced)) == 2, message="third sync")
    assert _stats(k.ref)["fill_read_errors"] == 1
    k.rest.fills_fail_at = None
    k.ref.tell(SyncAccount(reason="KALSHI_DATA_SYNC"))
    wait_for(lambda: len(k.log.received("supervisor", DataSynced)) == 3, message="fourth sync")
    # The failed read did not move the cursor; the complete ones did: their start minus the 300 s overlap.
    assert k.rest.fill_reads == [(wall - 86_400_000) // 1000] + [(wall - 300_000) // 1000] * 3
    assert [f.fill_id for f in k.log.received("whale_executor", FillReceived)] == ["t1"]  # once, over three reads


def _stats(ref) -> dict[str, Any]:
    from messages.control import RequestStats

    return ref.ask(RequestStats(), timeout=5)


def test_after_book_stale_the_feed_is_asked_only_if_the_snapshot_never_comes(keeper):
    feed = keeper.rec["orderbook_feed"]
    tick(keeper, 0)
    keeper.on_book_stale(BookStale(market_ticker="M1", reason="seq gap"))
    keeper.on_book_frames(batch(delta("M1", 3, 5000, 1)))
    tick(keeper, 1000)
    assert feed.of(RequestSnapshot) == []  # the feed that reported the gap is already fetching one
    tick(keeper, 5000)
    (req,) = feed.of(RequestSnapshot)
    assert req.market_tickers == ("M1",) and req.reason == "snapshot still missing"


def test_public_trades_are_accepted_not_unknown(keeper):
    from messages.market import TradePrinted, TradesPrinted

    t = TradePrinted(trade_id="t1", market_ticker="M1", taker_side="yes", yes_price=5200, no_price=4800,
                     count=100, ts_ms=9, recv_ns=1)
    keeper.on_receive(TradesPrinted(trades=(t, t)))
    assert keeper.unknown == 0 and keeper.trades_seen == 2 and keeper.last_trade["M1"] == (5200, 100, 9)


# --- against the real local exchange ------------------------------------------------------------------------


def test_sync_reads_the_local_exchange(tmp_path):
    from kalshi.auth import Credentials, generate_key_pair
    from kalshi.exchange import LocalExchange
    from kalshi.rest import KalshiRest

    keys = {kid: generate_key_pair() for kid in ("22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb",
                                                  "33333333-cccc-4ccc-8ccc-cccccccccccc")}
    (us, (our_priv, _)), (them, (their_priv, _)) = keys.items()
    plog = ProbeLog()
    probes = {n: Probe.start(n, 1, None, PeerTable(), {}, probe_log=plog, control=ProbeControl())
              for n in ("supervisor", "whale_executor")}
    ex = LocalExchange(api_keys={k: pub for k, (_, pub) in keys.items()}, flow="off", rate_limits=False).start()
    ref = None
    try:
        ours = Credentials.from_pem_text(us, our_priv)
        with KalshiRest(ex.rest_url, Credentials.from_pem_text(them, their_priv)) as other, \
                KalshiRest(ex.rest_url, ours) as mine:
            ticker = ex.call(lambda e: e.market_tickers())[0]
            other.create_order(ticker, "ask", 300, 6000, "good_till_canceled", "their-ask")
            mine.create_order(ticker, "bid", 200, 6000, "immediate_or_cancel", "our-buy")
            mine.create_order(ticker, "bid", 500, 100, "good_till_canceled", "our-rest")
        ctx = SystemContext(settings=settings(), rest_url=ex.rest_url, ws_url=ex.ws_url, credentials=ours,
                            data_dir=tmp_path, market_tickers=(ticker,))
        ref = StateKeeper.start("state_keeper", 1, probes["supervisor"],
                                PeerTable({"whale_executor": probes["whale_executor"]}), {"context": ctx})
        ref.tell(SyncAccount(reason="KALSHI_DATA_SYNC"))
        wait_for(lambda: plog.received("supervisor", DataSynced), timeout=15, message="DataSynced")
        view = plog.received("whale_executor", AccountViewUpdated)[-1].view
        assert [(p.market_ticker, p.position, p.source) for p in view.positions] == [(ticker, 200, "rest")]
        assert view.positions[0].cost == 12_000  # 2 contracts at $0.60 = $1.20
        assert [(o.client_order_id, o.yes_price, o.remaining_count) for o in view.resting_orders] == [
            ("our-rest", 100, 500)]
        assert 0 < view.balance < 100_000_000 and view.synced_at_ms > 0
    finally:
        if ref is not None:
            ref.stop(block=True, timeout=10)
        for p in probes.values():
            p.stop(block=True, timeout=10)
        ex.stop()


def test_broadcasts_and_decisions_are_not_unknown_messages(keeper):
    from messages.control import SupervisorReport, SystemStateChanged, TradingGateChanged

    keeper.on_receive(SystemStateChanged(previous="A", state="READY", reason="r", degraded=False, at_ms=1))
    keeper.on_receive(TradingGateChanged(open=True, reason="r"))
    keeper.on_receive(SupervisorReport(state="READY", state_reason="", degraded=False, gate_open=True,
                                       total_restarts=0, restarts_in_window=0, children=(), at_ms=1))
    assert keeper.unknown == 0 and keeper.ignored_messages == 3 and keeper.version == 0


def test_our_fills_bring_the_next_sync_forward(live_keeper):
    k = live_keeper
    wait_for(lambda: k.log.received("whale_executor", AccountViewUpdated), message="first sync")
    k.ref.tell(Tick(now_mono_ns=100 * 10**9, now_wall_ms=1))  # next cycle sync planned at 130 s
    k.ref.tell(fill("f1"))
    k.ref.tell(Tick(now_mono_ns=100 * 10**9 + 500 * MS, now_wall_ms=2))
    assert _stats(k.ref)["syncs_started"] == 1
    k.rest.balance = 1
    k.ref.tell(Tick(now_mono_ns=101 * 10**9 + 100 * MS, now_wall_ms=3))
    wait_for(lambda: k.log.received("whale_executor", AccountViewUpdated)[-1].view.balance == 1, message="sync")
    view = k.log.received("whale_executor", AccountViewUpdated)[-1].view
    assert view.unsynced_fill_markets == frozenset()  # the fill predates the sync: REST has it


# --- backpressure: book views to a backlogged executor are latest-wins per market (F15) -------------------------


class FakeInbox:
    """An ``actor_inbox`` whose depth the test sets (all ``mailbox_depth`` reads)."""

    def __init__(self) -> None:
        self.depth = 0

    def qsize(self) -> int:
        return self.depth


class BackloggedRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.actor_inbox = FakeInbox()


def _backlog_keeper(tmp_path, bound: int | None) -> tuple[StateKeeper, BackloggedRecorder]:
    ex = BackloggedRecorder()
    peers = PeerTable({"whale_executor": ex, "broadcaster": Recorder(), "orderbook_feed": Recorder()})
    config: dict[str, Any] = {"context": make_context(tmp_path)}
    if bound is not None:
        config["executor_backlog"] = bound
    sk = StateKeeper("state_keeper", 1, None, peers, config)
    sk.setup()
    return sk, ex


def _seqs(views) -> dict[str, int]:
    return {v.market_ticker: v.seq for v in views}


def test_executor_backlog_defaults_to_50_and_refuses_bad_values(tmp_path):
    sk, _ = _backlog_keeper(tmp_path, None)
    assert sk.executor_backlog == 50 and sk.stats()["views_held"] == 0 and sk.stats()["views_conflated"] == 0
    sk.cleanup()
    for bad in (-1, "50", 2.5):
        with pytest.raises(ValueError, match="executor_backlog"):
            _backlog_keeper(tmp_path, bad)  # type: ignore[arg-type]


def test_views_are_held_newest_per_market_while_the_executor_is_backlogged(tmp_path):
    sk, ex = _backlog_keeper(tmp_path, 3)
    sk.on_watch_books(WatchBooks(market_tickers=frozenset({"M1", "M2"})))
    sk.on_book_frames(batch(snap("M1", 1), snap("M2", 1)))
    assert len(ex.of(BookViewsUpdated)) == 2  # below the bound: told as before

    ex.actor_inbox.depth = 3  # at the bound: hold
    sk.on_book_frames(batch(delta("M1", 2, 5000, 10)))
    sk.on_book_frames(batch(delta("M1", 3, 5000, 10), delta("M2", 2, 4000, 5, "no")))
    assert len(ex.of(BookViewsUpdated)) == 2
    assert sk.stats()["views_held"] == 2 and sk.stats()["views_conflated"] == 1  # M1 seq 2 replaced by seq 3

    # Private data is never held: account views and fills still go at once.
    sk.on_position(position("M1", 300))
    sk.on_fill(fill("f1"))
    assert len(ex.of(AccountViewUpdated)) == 2 and [f.fill_id for f in ex.of(FillReceived)] == ["f1"]

    # Stale, then valid again while held: the newest (valid) view wins.
    sk.on_book_stale(BookStale(market_ticker="M2", reason="seq gap"))
    assert sk.views_pending["M2"].valid is False
    sk.on_book_frames(batch(snap("M2", 7, no=((4100, 900),))))
    assert sk.views_pending["M2"].valid and sk.views_pending["M2"].seq == 7

    # A WatchBooks answer takes the same path: held behind the bound, not sent ahead of the older held views.
    sk.on_watch_books(WatchBooks(market_tickers=frozenset({"M1", "M2", "M3"})))
    assert len(ex.of(BookViewsUpdated)) == 2 and sk.stats()["views_held"] == 3

    tick(sk, 0)
    assert len(ex.of(BookViewsUpdated)) == 2  # still at the bound on the Tick
    ex.actor_inbox.depth = 2
    tick(sk, 100)
    told = ex.of(BookViewsUpdated)
    assert len(told) == 3 and sk.stats()["views_held"] == 0
    flushed = told[-1].views
    assert [v.market_ticker for v in flushed] == ["M1", "M2", "M3"]  # one message, stable order
    assert _seqs(flushed) == {"M1": 3, "M2": 7, "M3": 0}
    assert flushed[0].yes == ((5000, 1020),) and flushed[1].valid and flushed[1].no == ((4100, 900),)
    # M1 once, M2 twice (stale view, then the snapshot), then M1 and M2 again by the WatchBooks answer (which
    # sends every watched book's current view).
    assert sk.stats()["views_conflated"] == 5
    tick(sk, 200)
    assert len(ex.of(BookViewsUpdated)) == 3  # nothing held, nothing more to send


def test_held_views_are_flushed_with_the_next_batch_and_unwatched_ones_forgotten(tmp_path):
    sk, ex = _backlog_keeper(tmp_path, 2)
    sk.on_watch_books(WatchBooks(market_tickers=frozenset({"M1", "M2", "M3"})))
    sk.on_book_frames(batch(snap("M1", 1), snap("M2", 1), snap("M3", 1)))
    assert len(ex.of(BookViewsUpdated)) == 2

    ex.actor_inbox.depth = 5
    sk.on_book_frames(batch(delta("M1", 2, 5000, 1), delta("M3", 2, 5000, 1)))
    ex.actor_inbox.depth = 1
    # The next batch changes M2 only: the held M1 and M3 views go with it, newest per market, in one message.
    sk.on_book_frames(batch(delta("M2", 2, 5000, 1)))
    told = ex.of(BookViewsUpdated)
    assert len(told) == 3 and _seqs(told[-1].views) == {"M1": 2, "M2": 2, "M3": 2}
    assert [v.market_ticker for v in told[-1].views] == ["M1", "M2", "M3"]
    assert sk.views_conflated == 0  # merged, none replaced

    # A batch of unwatched books only (no views of its own) still flushes what is held.
    ex.actor_inbox.depth = 2
    sk.on_book_frames(batch(delta("M1", 3, 5000, 1)))
    ex.actor_inbox.depth = 0
    sk.on_book_frames(batch(snap("X9", 1)))
    assert _seqs(ex.of(BookViewsUpdated)[-1].views) == {"M1": 3}

    # Held views of markets the executor stops watching are forgotten, not sent.
    ex.actor_inbox.depth = 2
    sk.on_book_frames(batch(delta("M1", 4, 5000, 1), delta("M2", 3, 5000, 1)))
    sk.on_watch_books(WatchBooks(market_tickers=frozenset({"M2"})))
    assert set(sk.views_pending) == {"M2"}
    ex.actor_inbox.depth = 0
    tick(sk, 0)
    assert _seqs(ex.of(BookViewsUpdated)[-1].views) == {"M2": 3} and sk.stats()["views_held"] == 0


@pytest.fixture
def blocked_executor():
    """A real executor actor stuck in a handler (a slow fsync) until the test, or teardown, releases it."""
    plog = ProbeLog()
    control = ProbeControl()
    ex = Probe.start("whale_executor", 1, None, PeerTable(), {}, probe_log=plog, control=control)
    keepers: list[Any] = []

    def start_keeper(bound: int):
        ref = StateKeeper.start("state_keeper", 1, None, PeerTable({"whale_executor": ex}), {"executor_backlog": bound})
        keepers.append(ref)
        return ref

    ex.tell(Block())
    assert control.blocked.wait(5), "executor did not block"
    yield SimpleNamespace(ref=ex, log=plog, control=control, start_keeper=start_keeper)
    control.release.set()
    for ref in keepers:
        ref.stop(block=True, timeout=10)
    ex.stop(block=True, timeout=10)


def _burst(keeper_ref, markets: tuple[str, ...], batches: int) -> dict[str, int]:
    """Watch ``markets``, snapshot them, then ``batches`` batches each moving every one of them.
    Returns the last seq per market."""
    keeper_ref.tell(WatchBooks(market_tickers=frozenset(markets)))
    seq = 1
    keeper_ref.tell(batch(*(snap(m, seq) for m in markets)))
    last = dict.fromkeys(markets, seq)
    for _ in range(batches):
        frames = []
        for m in markets:
            seq += 1
            frames.append(delta(m, seq, 5000, 1))
            last[m] = seq
        keeper_ref.tell(batch(*frames))
    return last


def _assert_views_in_order(received: list[BookViewsUpdated]) -> None:
    """Per market, every view the executor got is newer than the one before (no older view after a newer)."""
    seen: dict[str, int] = {}
    for msg in received:
        for v in msg.views:
            before = seen.get(v.market_ticker, -1)
            assert v.seq > before, f"{v.market_ticker}: seq {v.seq} arrived after seq {before}"
            seen[v.market_ticker] = v.seq


def test_a_stalled_executor_gets_a_bounded_inbox_then_one_message_of_newest_views(blocked_executor):
    from actors.base import mailbox_depth

    b = blocked_executor
    bound = 5
    markets = ("M1", "M2", "M3")
    keeper = b.start_keeper(bound)
    last = _burst(keeper, markets, batches=200)
    stats = _stats(keeper)  # a barrier: every batch above is applied
    assert mailbox_depth(b.ref) <= bound + 1
    assert stats["views_held"] == 3 and stats["views_conflated"] > 0
    assert b.log.received("whale_executor", BookViewsUpdated) == []  # still blocked

    b.control.release.set()
    wait_for(lambda: mailbox_depth(b.ref) < bound, message="executor works off its backlog")
    keeper.tell(Tick(now_mono_ns=2 * 10**9, now_wall_ms=1))  # the first Tick below the bound flushes
    wait_for(lambda: _stats(keeper)["views_held"] == 0, message="held views flushed")
    received = wait_for(
        lambda: (r := b.log.received("whale_executor", BookViewsUpdated)) and len(r) == bound + 1 and r,
        message="backlog plus one flush",
    )
    _assert_views_in_order(received)
    final = received[-1].views
    assert [v.market_ticker for v in final] == list(markets)
    assert _seqs(final) == last  # the newest view of every market
    assert all(v.valid and v.yes == ((5000, 1200),) for v in final)  # 1000 + 200 deltas of +1
    # Everything before the flush was the backlog told while below the bound: the watch answer, the
    # snapshots, then the first batches; each of the 200 - (bound - 2) later batches was held instead.
    assert _stats(keeper)["views_conflated"] == 3 * (200 - (bound - 2)) - 3


def test_with_a_bound_of_0_views_are_never_held(blocked_executor):
    from actors.base import mailbox_depth

    b = blocked_executor
    keeper = b.start_keeper(0)
    last = _burst(keeper, ("M1", "M2"), batches=30)
    stats = _stats(keeper)
    assert stats["views_held"] == 0 and stats["views_conflated"] == 0
    assert mailbox_depth(b.ref) == 32  # the watch answer, the snapshots and every batch: one message each
    b.control.release.set()
    received = wait_for(
        lambda: (r := b.log.received("whale_executor", BookViewsUpdated)) and len(r) == 32 and r,
        message="every view",
    )
    _assert_views_in_order(received)
    assert _seqs(received[-1].views) == last
