"""Broadcaster: the status snapshot, the GetStatus ask, and conflating fan-out to slow subscribers.

These run without the HTTP server (``status_api = False``); tests/integration/test_status_api.py covers it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pykka
import pytest

from actors.base import PeerTable
from actors.broadcaster import Broadcaster, Subscriber
from messages.account import OrderUpdated, PositionChanged
from messages.control import ChildReport, RequestStats, SupervisorReport, SystemStateChanged, Tick
from messages.feed import FeedStatus
from messages.state import AccountView, BookSummary, StateChanged
from messages.status import GetStatus, Subscribe, SystemActivity, Unsubscribe
from messages.whale import (
    Decision,
    OrderAccepted,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderSubmitted,
    QueueStats,
    Whale,
    WhaleDecisionMade,
    WhaleProcessing,
    WhaleQueueUpdated,
)
from tests.actors.conftest import Block, Probe, ProbeControl, ProbeLog
from tests.helpers import wait_for


def account(version: int = 1, balance: int = 1_234_567) -> AccountView:
    pos = PositionChanged(market_ticker="M1", position=-300, cost=1800, realized_pnl=-5, fees_paid=21, source="ws")
    order = OrderUpdated(order_id="o1", client_order_id="c1", market_ticker="M1", status="resting", book_side="bid",
                         outcome_side="yes", yes_price=4500, fill_count=0, remaining_count=100, initial_count=100,
                         order_group_id=None, ts_ms=1, source="rest")
    return AccountView(version=version, balance=balance, portfolio_value=2_000_000, positions=(pos,),
                       resting_orders=(order,), unsynced_fill_markets=frozenset({"M1"}), synced_at_ms=99)


def state_changed(version: int, balance: int = 1_234_567) -> StateChanged:
    book = BookSummary(market_ticker="M1", valid=True, best_yes_bid=5000, best_yes_ask=5200, yes_levels=3,
                       no_levels=2, last_update_ms=7)
    return StateChanged(version=version, changed=frozenset({"balance", "books"}), account=account(version, balance),
                        books=(book,), at_ms=1000)


def whale(i: int = 0) -> Whale:
    return Whale(whale_id=f"M1:{i}", market="M1", side="yes", count=20_000, price_volume=20_000 * 6500,
                 cost=1_300_000, payout=2_000_000, whale_size=2_000_000, min_price=6500, max_price=6500, levels=1,
                 trade_ids=(f"t{i}",), ts_ms=1_000_000)


def queue_update(n: int = 2) -> WhaleQueueUpdated:
    stats = QueueStats(trades_seen=1500, trades_discarded=1450, duplicates=3, discard_rate_bp=9667, queue_size=n,
                       window_minutes=5, min_size=1_000_000)
    return WhaleQueueUpdated(queue=tuple(whale(i) for i in range(n)), stats=stats, ts_ms=1_045_200)


def decision(i: int, action: str = "follow") -> WhaleDecisionMade:
    return WhaleDecisionMade(decision=Decision(action=action, reason="ok", whale_id=f"M1:{i}", market="M1",
                                               final=True, outcome="yes", side="bid", price=6600, count=500,
                                               client_order_id=f"c{i}", decided_ms=5))


def report() -> SupervisorReport:
    child = ChildReport(name="state_keeper", status="running", generation=2, restarts=1, alive=True,
                        mailbox_depth=3, last_failure="RuntimeError: boom")
    return SupervisorReport(state="READY", state_reason="all ready", degraded=False, gate_open=True,
                            total_restarts=1, restarts_in_window=1, children=(child,), at_ms=10)


@pytest.fixture
def bc():
    b = Broadcaster("broadcaster", 1, None, PeerTable(), {"status_api": False})
    b.setup()
    yield b
    b.cleanup()


def test_snapshot_has_every_section_in_json_types_and_money_strings(bc):
    bc.on_report(report())
    bc.on_feed_status(FeedStatus(feed="orderbook_feed", connected=True, conn_id=2, messages=900, gaps=1,
                                 reconnects=1, last_message_age_ms=12, state="live"))
    bc.on_state_changed(state_changed(7))
    bc.on_whale_queue(queue_update())
    bc.on_decision(decision(1))
    bc.on_decision(decision(2, "skipped_age"))
    bc.on_order_submitted(OrderSubmitted(client_order_id="c1", whale_id="w", market="M1", ts_ms=1))
    bc.on_order_accepted(OrderAccepted(client_order_id="c1", order_id="o", market="M1", fill_count=500,
                                       remaining_count=0, average_fill_price=6600, average_fee_paid=None, ts_ms=2))
    bc.on_order_rejected(OrderRejected(client_order_id="c2", market="M1", status_code=400, code="invalid",
                                       detail="bad", ts_ms=3))
    bc.on_order_unknown(OrderOutcomeUnknown(client_order_id="c3", market="M1", reason="timeout", ts_ms=4))
    bc.on_processing(WhaleProcessing(whale_id="M1:1", status="complete", action="follow", ts_ms=6))
    snap = bc.status_snapshot()
    json.dumps(snap)  # plain JSON types only

    assert snap["state"] == "READY" and snap["trading_gate"]["open"] is True and snap["degraded"] is False
    assert snap["actors"]["state_keeper"] == {"alive": True, "status": "running", "generation": 2, "restarts": 1,
                                              "mailbox_depth": 3, "last_error": "RuntimeError: boom"}
    assert snap["feeds"]["orderbook_feed"]["messages"] == 900 and snap["feeds"]["orderbook_feed"]["gaps"] == 1
    assert snap["whales"]["trades_seen"] == 1500 and snap["whales"]["queue_size"] == 2
    assert snap["whales"]["queue"][0]["cost_dollars"] == "130.0000"
    assert snap["decisions"] == {"follow": 1, "skipped_age": 1}
    assert snap["orders"] == {"submitted": 1, "accepted": 1, "filled": 1, "rejected": 1, "unknown": 1, "resolved": 0}
    assert snap["balance"] == "123.4567" and snap["portfolio_value"] == "200.0000"
    assert snap["positions"] == [{"market_ticker": "M1", "position": "-3.00", "side": "no", "cost_dollars": "0.1800",
                                  "realized_pnl_dollars": "-0.0005", "fees_paid_dollars": "0.0021", "source": "ws"}]
    assert snap["open_orders"][0]["yes_price_dollars"] == "0.4500"
    assert snap["books"][0]["best_yes_bid"] == "0.5000"
    assert snap["recent_decisions"][0]["whale_id"] == "M1:2"  # newest first
    assert snap["state_version"] == 7 and snap["unsynced_fill_markets"] == ["M1"]

    def no_money_floats(value: Any, path: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                no_money_floats(v, f"{path}.{k}")
        elif isinstance(value, list):
            for v in value:
                no_money_floats(v, path)
        elif isinstance(value, float):
            assert any(w in path for w in ("uptime", "timestamp", "percent", "age_seconds")), path

    no_money_floats(snap)


def test_recent_decisions_are_bounded(bc):
    for i in range(250):
        bc.on_decision(decision(i))
    assert len(bc.decisions) == 200 and bc.decision_counts["follow"] == 250
    assert len(bc.status_snapshot()["recent_decisions"]) == 50


def test_state_transitions_are_kept_for_replay(bc):
    for i in range(105):
        bc.on_state(SystemStateChanged(previous="READY", state="ACTING", reason=f"r{i}", degraded=False, at_ms=i))
    assert len(bc.transitions) == 100 and bc.transitions[-1]["reason"] == "r104"
    assert bc.status_snapshot()["recent_transitions"][-1]["to_state"] == "ACTING"


# --- Subscriber conflation without threads ---------------------------------------------------------------


class FakeRef:
    def __init__(self, depth: int = 0) -> None:
        self.depth = depth
        self.told: list[Any] = []
        self.dead = False
        self.actor_inbox = self

    def qsize(self) -> int:
        return self.depth

    def tell(self, msg: Any) -> None:
        if self.dead:
            raise pykka.ActorDeadError("gone")
        self.told.append(msg)


def test_subscriber_delivers_directly_while_inbox_has_room_then_conflates():
    ref = FakeRef()
    sub = Subscriber("s", ref, max_inbox=10, max_pending=3)  # type: ignore[arg-type]
    assert sub.offer(state_changed(1)) and ref.told == [state_changed(1)]
    ref.depth = 10  # the subscriber falls behind
    for v in range(2, 50):
        sub.offer(state_changed(v))
    for i in range(5):
        sub.offer(decision(i))
    sub.offer(FeedStatus(feed="a", connected=True, conn_id=1, messages=1, gaps=0, reconnects=0,
                         last_message_age_ms=0, state="live"))
    sub.offer(FeedStatus(feed="b", connected=True, conn_id=1, messages=1, gaps=0, reconnects=0,
                         last_message_age_ms=0, state="live"))
    assert len(ref.told) == 1
    assert sub.conflated == 47 and sub.dropped == 2  # 48 states → 1; 5 decisions → the newest 3
    ref.depth = 0
    assert sub.flush()
    kinds = [type(m).__name__ for m in ref.told[1:]]
    assert kinds == ["StateChanged", "WhaleDecisionMade", "WhaleDecisionMade", "WhaleDecisionMade", "FeedStatus",
                     "FeedStatus"]
    assert ref.told[1].version == 49 and [m.decision.whale_id for m in ref.told[2:5]] == ["M1:2", "M1:3", "M1:4"]


def test_subscriber_keeps_order_after_falling_behind():
    ref = FakeRef(depth=5)
    sub = Subscriber("s", ref, max_inbox=5, max_pending=10)  # type: ignore[arg-type]
    sub.offer(decision(1))
    ref.depth = 0
    sub.offer(decision(2))  # buffered messages go first: no overtaking
    assert ref.told == [] and len(sub.pending) == 2
    sub.flush()
    assert [m.decision.whale_id for m in ref.told] == ["M1:1", "M1:2"]


def test_dead_subscriber_is_removed(bc):
    ref = FakeRef()
    bc.on_subscribe(Subscribe(subscriber="ui", ref=ref))  # type: ignore[arg-type]
    bc.on_decision(decision(1))
    ref.dead = True
    bc.on_decision(decision(2))
    assert "ui" not in bc.subscribers and bc.removed_subscribers == 1
    bc.on_subscribe(Subscribe(subscriber="ui2", ref=FakeRef()))  # type: ignore[arg-type]
    bc.on_unsubscribe(Unsubscribe(subscriber="ui2"))
    assert bc.subscribers == {}


# --- threaded: a blocked subscriber never stalls the broadcaster --------------------------------------------


def test_slow_subscriber_does_not_block_and_gets_the_latest():
    plog, control = ProbeLog(), ProbeControl()
    probe = Probe.start("ui", 1, None, PeerTable(), {}, probe_log=plog, control=control)
    ref = Broadcaster.start("broadcaster", 1, None, PeerTable(), {"status_api": False})
    try:
        ref.tell(Subscribe(subscriber="ui", ref=probe, max_inbox=3, max_pending=4))
        probe.tell(Block())
        assert control.blocked.wait(5)
        started = time.monotonic()
        for v in range(1, 2001):
            ref.tell(state_changed(v))
        for i in range(10):
            ref.tell(decision(i))
        status = ref.ask(GetStatus(), timeout=5)
        assert time.monotonic() - started < 5
        sub = status["subscribers"]["ui"]
        assert sub["conflated"] > 1900 and sub["dropped"] == 6 and sub["pending"] == 5
        control.release.set()
        wait_for(lambda: probe.ask(RequestStats(), timeout=5)["mailbox_depth"] == 0, message="probe drained")

        def flushed() -> bool:  # each Tick flushes as much as the subscriber's inbox has room for
            ref.tell(Tick(now_mono_ns=1, now_wall_ms=1))
            return len(plog.received("ui", WhaleDecisionMade)) == 4

        wait_for(flushed, message="flushed")
        states = plog.received("ui", StateChanged)
        assert states[-1].version == 2000 and len(states) <= 4
        got = [m.decision.whale_id for m in plog.received("ui", WhaleDecisionMade)]
        assert got[-4:] == ["M1:6", "M1:7", "M1:8", "M1:9"]
    finally:
        control.release.set()
        ref.stop(block=True, timeout=10)
        probe.stop(block=True, timeout=10)


def test_get_status_ask_and_activity(bc):
    bc.on_system_activity(SystemActivity(activity_type="sync", message="synced", at_ms=5,
                                         metadata=(("markets", "3"),)))
    assert bc.activity[-1]["metadata"] == {"markets": "3"} and bc.activity[-1]["activity_type"] == "sync"
    assert bc.on_get_status(GetStatus())["state"] == "STARTUP"


def test_status_reports_schema_drift_from_both_decoders():
    """Deprecated fields the wire decoders met show up in /v3/status (the health view of schema drift)."""
    from actors.broadcaster import Broadcaster
    from kalshi.wire import frames

    frames.decode_frame(
        '{"type":"trade","sid":2,"seq":5,"msg":{"trade_id":"t-drift","market_ticker":"DRIFT-1",'
        '"yes_price_dollars":"0.5100","no_price_dollars":"0.4900","count_fp":"2.00","taker_side":"yes",'
        '"ts":1764000123}}'
    )
    ref = Broadcaster.start("broadcaster", 1, None, None, {"status_api": False})
    try:
        status = ref.ask(GetStatus(), timeout=5)
    finally:
        ref.stop(timeout=5)
    drift = status["schema_drift"]
    assert set(drift) == {"ws", "rest"}
    assert any("taker_side" in key or key.endswith(".ts") for key in drift["ws"]), drift
