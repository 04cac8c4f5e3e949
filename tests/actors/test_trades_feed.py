"""TradesFeed with a scripted WebSocket client and a fake REST client: batching, dedup, readiness and the
REST backfill after reconnects."""

from __future__ import annotations

import threading

import pytest

from actors.trades_feed import TradesFeed, fetch_backfill
from kalshi.rest import ServerError
from kalshi.wire.bodies import PublicTrade, TradesPage
from kalshi.wire.frames import Trade, UnknownFrame
from messages.control import FeedDown, FeedReady
from messages.market import TradePrinted, TradesPrinted
from tests.actors.helpers_feeds import FeedHarness, Recorders, harnesses
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def trade(tid: str, ts_ms: int, seq: int = 1, ticker: str = "KX-A", side: str = "yes") -> Trade:
    return Trade(sid=2, seq=seq, trade_id=tid, market_ticker=ticker, yes_price=5200, no_price=4800, count=1000,
                 taker_side=side, ts_ms=ts_ms)


def public(tid: str, ts_ms: int, ticker: str = "KX-B") -> PublicTrade:
    return PublicTrade(trade_id=tid, ticker=ticker, count=500, yes_price=3000, no_price=7000, taker_side="no",
                       created_time_ms=ts_ms, is_block_trade=False)


class FakeRest:
    """get_trades over a fixed list of pages (newest first), recording the calls."""

    def __init__(self, pages: list[tuple[list[PublicTrade], str]] | None = None, fail: Exception | None = None,
                 gate: threading.Event | None = None) -> None:
        self.pages = pages or []
        self.fail = fail
        self.gate = gate
        self.calls: list[dict] = []
        self.closed = 0

    def get_trades(self, ticker=None, min_ts=None, max_ts=None, limit=None, cursor=None) -> TradesPage:
        self.calls.append({"min_ts": min_ts, "limit": limit, "cursor": cursor})
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        index = 0 if cursor is None else int(cursor)
        trades, next_cursor = self.pages[index]
        return TradesPage(trades=tuple(trades), cursor=next_cursor)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def rec():
    r = Recorders()
    yield r
    r.stop()


class Harness(FeedHarness):
    def __init__(self, tmp_path, rec, rest: FakeRest | None = None, **config) -> None:
        self.rest = rest or FakeRest()
        self.wall = [T0_MS]
        super().__init__(tmp_path, rec, TradesFeed, "trades_feed",
                         context={"rest_factory": lambda: self.rest, "wall_ms": lambda: self.wall[0]}, **config)

    def live(self, sid: int = 2) -> None:
        self.ws.connect()
        self.ws.subscribed(1, "trade", sid)
        self.rec.wait("supervisor", FeedReady)


@pytest.fixture
def harness(tmp_path, rec):
    made: list[Harness] = []

    def release_gates() -> None:
        for h in made:
            if h.rest.gate is not None:
                h.rest.gate.set()

    def make(**kw) -> Harness:
        made.append(Harness(tmp_path, rec, **kw))
        return made[-1]

    yield from harnesses(make, release_gates)


def test_subscribes_trade_for_all_markets_and_is_ready_when_subscribed(harness, rec):
    h = harness()
    wait_for(lambda: h.registry.clients and h.ws.started, 5, message="client started")
    assert h.ws.find("subscribe") == [(1, "subscribe", ("trade",), None, ())]
    h.ws.connect()
    h.stats()
    assert rec.got("supervisor", FeedReady) == []
    h.ws.subscribed(1, "trade", 2)
    assert rec.wait("supervisor", FeedReady)[0].feed == "trades_feed"


def test_one_trades_printed_per_batch_to_tracker_and_state_keeper(harness, rec):
    h = harness()
    h.live()
    h.clock.now_ns = 5_000
    h.ws.frames(trade("t1", T0_MS, 1), UnknownFrame(type="mystery", sid=2, seq=None), trade("t2", T0_MS + 5, 2, side="no"))
    batch = rec.wait("whale_tracker", TradesPrinted)[0]
    assert rec.wait("state_keeper", TradesPrinted)[0] == batch
    assert [t.trade_id for t in batch.trades] == ["t1", "t2"]
    first = batch.trades[0]
    assert first == TradePrinted(trade_id="t1", market_ticker="KX-A", taker_side="yes", yes_price=5200,
                                 no_price=4800, count=1000, ts_ms=T0_MS, recv_ns=5_000, backfilled=False)
    assert batch.trades[1].taker_side == "no"
    assert h.stats()["other_frames"] == 1


def test_duplicate_trade_ids_are_passed_on_once(harness, rec):
    h = harness(dedup_capacity=2)
    h.live()
    h.ws.frames(trade("t1", T0_MS, 1), trade("t1", T0_MS, 2))
    h.ws.frames(trade("t1", T0_MS, 3), trade("t2", T0_MS, 4))
    batches = rec.wait("whale_tracker", TradesPrinted, 2)
    assert [[t.trade_id for t in b.trades] for b in batches] == [["t1"], ["t2"]]
    assert h.stats()["trade_duplicates"] == 2
    # The memory is bounded: after two newer ids, t1 is forgotten.
    h.ws.frames(trade("t3", T0_MS, 5), trade("t1", T0_MS, 6))
    batch = rec.wait("whale_tracker", TradesPrinted, 3)[-1]
    assert [t.trade_id for t in batch.trades] == ["t3", "t1"]


def test_no_batch_when_every_trade_is_a_duplicate(harness, rec):
    h = harness()
    h.live()
    h.ws.frames(trade("t1", T0_MS))
    rec.wait("whale_tracker", TradesPrinted)
    h.ws.frames(trade("t1", T0_MS))
    h.stats()
    assert len(rec.got("whale_tracker", TradesPrinted)) == 1


def test_reconnect_backfills_missed_trades_oldest_first_without_duplicates(harness, rec):
    last_ms = T0_MS + 10_500
    pages = [
        ([public("r5", last_ms + 3000), public("r4", last_ms + 2000)], "1"),
        ([public("r3", last_ms + 1000), public("t9", last_ms)], ""),  # t9 was seen live
    ]
    h = harness(rest=FakeRest(pages), backfill_page_limit=2)
    h.live()
    h.ws.frames(trade("t9", last_ms))
    rec.wait("whale_tracker", TradesPrinted)
    h.ws.disconnect()
    rec.wait("supervisor", FeedDown)
    h.ws.connect()
    h.ws.subscribed(1, "trade", 3)
    batch = rec.wait("whale_tracker", TradesPrinted, 2)[-1]
    assert [t.trade_id for t in batch.trades] == ["r3", "r4", "r5"]
    assert all(t.backfilled and t.market_ticker == "KX-B" and t.taker_side == "no" for t in batch.trades)
    assert rec.wait("state_keeper", TradesPrinted, 2)[-1] == batch
    assert h.rest.calls == [{"min_ts": last_ms // 1000 - 1, "limit": 2, "cursor": None},
                            {"min_ts": last_ms // 1000 - 1, "limit": 2, "cursor": "1"}]
    wait_for(lambda: h.stats()["backfill_running"] is False, 5, message="backfill done")
    stats = h.stats()
    assert (stats["backfills"], stats["backfilled"], stats["backfill_duplicates"]) == (1, 3, 1)
    assert h.rest.closed == 1
    # A backfilled trade later seen live is not passed on again.
    h.ws.frames(trade("r5", last_ms + 3000, 1), trade("n1", last_ms + 4000, 2))
    latest = rec.wait("whale_tracker", TradesPrinted, 3)[-1]
    assert [t.trade_id for t in latest.trades] == ["n1"]


def test_backfill_without_any_trade_starts_from_when_the_stream_went_live(harness, rec):
    h = harness(rest=FakeRest([([], "")]))
    h.live()
    h.ws.disconnect()
    h.ws.connect()
    wait_for(lambda: h.rest.calls, 5, message="backfill call")
    assert h.rest.calls[0]["min_ts"] == T0_MS // 1000 - 1


def test_first_connection_does_not_backfill(harness, rec):
    h = harness()
    h.live()
    h.ws.frames(trade("t1", T0_MS))
    rec.wait("whale_tracker", TradesPrinted)
    assert h.stats()["backfills"] == 0 and h.rest.calls == []


def test_backfill_failure_is_counted_and_the_feed_carries_on(harness, rec):
    h = harness(rest=FakeRest(fail=ServerError(503, "unavailable", "try later")))
    h.live()
    h.ws.frames(trade("t1", T0_MS))
    h.ws.disconnect()
    h.ws.connect()
    wait_for(lambda: h.stats()["backfill_errors"] == 1, 5, message="backfill error counted")
    stats = h.stats()
    assert "ServerError" in stats["last_backfill_error"]
    h.ws.frames(trade("t2", T0_MS + 1))
    rec.wait("whale_tracker", TradesPrinted, 2)


def test_one_backfill_at_a_time_and_a_reconnect_during_it_runs_one_more(harness, rec):
    gate = threading.Event()
    h = harness(rest=FakeRest([([public("r1", T0_MS + 2000)], "")], gate=gate))
    h.live()
    h.ws.frames(trade("t1", T0_MS))
    for _ in range(3):
        h.ws.disconnect()
        h.ws.connect()
    wait_for(lambda: h.rest.calls, 5, message="first backfill running")
    assert h.stats()["backfills"] == 1
    gate.set()
    wait_for(lambda: h.stats()["backfills"] == 2 and not h.stats()["backfill_running"], 5,
             message="second backfill done")
    assert len(h.rest.calls) == 2
    # The second backfill starts from the newest trade the first one found (r1, minus the overlap).
    assert h.rest.calls[1]["min_ts"] == (T0_MS + 2000) // 1000 - 1
    batches = rec.wait("whale_tracker", TradesPrinted, 2)
    assert [t.trade_id for t in batches[1].trades] == ["r1"]


def test_fetch_backfill_caps_pages_and_detects_cursor_loops():
    stop = threading.Event()
    looping = FakeRest([([public("a", 3)], "0")])  # always answers cursor "0"
    trades, pages, truncated, error = fetch_backfill(looping, 10, max_pages=5, page_limit=1, stop=stop,
                                                     mono_ns=lambda: 7)
    assert (pages, truncated, error) == (2, True, "cursor loop")
    endless = FakeRest([([public(f"x{i}", 100 - i)], str(i + 1)) for i in range(10)])
    trades, pages, truncated, error = fetch_backfill(endless, 10, max_pages=3, page_limit=1, stop=stop,
                                                     mono_ns=lambda: 7)
    assert (pages, truncated, error) == (3, True, None)
    assert [t.trade_id for t in trades] == ["x2", "x1", "x0"]  # oldest first
    assert all(t.recv_ns == 7 and t.backfilled for t in trades)
    stop.set()
    assert fetch_backfill(endless, 10, max_pages=3, page_limit=1, stop=stop, mono_ns=lambda: 7)[3] == "stopped"
