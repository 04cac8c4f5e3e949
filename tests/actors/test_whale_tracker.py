"""The whale tracker by messages: trades in, one conflated WhaleQueueUpdated per batch out."""

from __future__ import annotations

import pytest

from actors.whale_tracker import WhaleTracker
from kalshi.units import COUNT_ONE, PRICE_ONE
from messages.control import RequestStats, Tick
from messages.execution import WhaleSightings
from messages.market import TradePrinted, TradesPrinted
from messages.whale import Decision, WhaleDecisionMade, WhaleQueueUpdated
from tests.actors.helpers_whale import FakeClock, Recorders, context
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


def trade(tid, market="EVT-A", side="yes", yes_price=5500, contracts=300, ts_ms=0, backfilled=False):
    return TradePrinted(trade_id=tid, market_ticker=market, taker_side=side, yes_price=yes_price,
                        no_price=PRICE_ONE - yes_price, count=contracts * COUNT_ONE, ts_ms=ts_ms, recv_ns=0,
                        backfilled=backfilled)


class TrackerRig:
    def __init__(self, tmp_path, **flags):
        self.clock = FakeClock()
        self.rec = Recorders(("broadcaster", "whale_executor"))
        ctx = context(tmp_path, self.clock, **flags)
        self.ref = WhaleTracker.start("whale_tracker", 1, None, self.rec.peers(), {"context": ctx, "stats_interval_s": 1.0})

    def sync(self):
        stats = self.ref.ask(RequestStats(), timeout=5)
        self.rec.barrier()
        return stats

    def updates(self, name="whale_executor"):
        return self.rec.got(name, WhaleQueueUpdated)

    def tick(self, seconds):
        self.clock.advance(seconds)
        self.ref.tell(Tick(now_mono_ns=self.clock.mono_ns(), now_wall_ms=self.clock.wall_ms()))

    def close(self):
        self.ref.stop(timeout=5)
        self.rec.stop()


@pytest.fixture
def tr(tmp_path):
    r = TrackerRig(tmp_path)
    yield r
    r.close()


def test_one_conflated_update_per_batch_to_executor_and_broadcaster(tr):
    now = tr.clock.wall_ms()
    small = [trade(f"s{i}", contracts=1, ts_ms=now) for i in range(50)]
    big = [trade("b1", "EVT-A", ts_ms=now - 1), trade("b2", "EVT-B", "no", 4000, 500, now - 2)]
    tr.ref.tell(TradesPrinted(trades=tuple(small + big)))
    stats = tr.sync()
    [update] = tr.updates()
    assert [w.market for w in update.queue] == ["EVT-B", "EVT-A"]  # largest first
    assert update.stats.trades_seen == 52 and update.stats.queue_size == 2
    assert len(tr.updates("broadcaster")) == 1
    assert stats["trades_seen"] == 52
    # A batch of only small trades changes nothing: no update (stats follow on a Tick).
    tr.ref.tell(TradesPrinted(trades=(trade("s99", contracts=1, ts_ms=now),)))
    tr.sync()
    assert len(tr.updates()) == 1
    tr.tick(1.5)
    tr.sync()
    assert len(tr.updates()) == 2 and tr.updates()[-1].stats.trades_seen == 53


def test_duplicates_and_backfill_never_make_a_second_whale(tr):
    now = tr.clock.wall_ms()
    tr.ref.tell(TradesPrinted(trades=(trade("t1", ts_ms=now),)))
    tr.ref.tell(TradesPrinted(trades=(trade("t1", ts_ms=now), trade("t1", ts_ms=now, backfilled=True))))
    stats = tr.sync()
    assert len(tr.updates()) == 1 and len(tr.updates()[0].queue) == 1
    assert stats["duplicates"] == 2
    # Both repeats reach the executor in one message, to be journaled as duplicate sightings (F04).
    [sightings] = tr.rec.got("whale_executor", WhaleSightings)
    assert [(w.whale_id, t) for w, t in sightings.sightings] == [(tr.updates()[0].queue[0].whale_id, "t1")] * 2


def test_sweep_prints_group_into_one_growing_whale(tr):
    now = tr.clock.wall_ms()
    tr.ref.tell(TradesPrinted(trades=(trade("p1", yes_price=5500, contracts=80, ts_ms=now),)))
    tr.ref.tell(TradesPrinted(trades=(trade("p2", yes_price=5600, contracts=80, ts_ms=now),)))
    tr.sync()
    updates = tr.updates()
    assert len(updates) == 1  # 80 contracts: below $100; with the second print the sweep qualifies
    [w] = updates[0].queue
    assert w.trade_ids == ("p1", "p2") and w.levels == 2


def test_bad_trades_are_counted_and_dropped(tr):
    now = tr.clock.wall_ms()
    bad = TradePrinted(trade_id="x", market_ticker="EVT-A", taker_side="yes", yes_price=5500, no_price=5500,
                       count=300 * COUNT_ONE, ts_ms=now, recv_ns=0)
    tr.ref.tell(TradesPrinted(trades=(bad, trade("ok", ts_ms=now))))
    stats = tr.sync()
    assert stats["bad_trades"] == 1 and len(tr.updates()[0].queue) == 1


def test_prune_on_tick_and_removal_on_final_decision(tr):
    now = tr.clock.wall_ms()
    tr.ref.tell(TradesPrinted(trades=(trade("a", "EVT-A", ts_ms=now), trade("b", "EVT-B", ts_ms=now - 200_000))))
    tr.sync()
    assert len(tr.updates()[-1].queue) == 2
    a_id = next(w.whale_id for w in tr.updates()[-1].queue if w.market == "EVT-A")
    tr.ref.tell(WhaleDecisionMade(decision=Decision(action="skipped_age", reason="old", whale_id=a_id, market="EVT-A",
                                                    final=True)))
    tr.sync()
    assert [w.market for w in tr.updates()[-1].queue] == ["EVT-B"]
    tr.tick(120)  # EVT-B's trade is now older than the 5-minute window
    tr.sync()
    wait_for(lambda: tr.updates()[-1].queue == (), message="pruned")
    # A later print of the removed whale's sweep does not bring it back.
    tr.ref.tell(TradesPrinted(trades=(trade("a2", "EVT-A", ts_ms=now),)))
    tr.sync()
    assert tr.updates()[-1].queue == ()


def test_detection_disabled_ignores_trades(tmp_path):
    tr = TrackerRig(tmp_path, enable_whale_detection=False)
    try:
        tr.ref.tell(TradesPrinted(trades=(trade("a", ts_ms=tr.clock.wall_ms()),)))
        tr.tick(2)
        tr.sync()
        assert tr.updates() == []
    finally:
        tr.close()
