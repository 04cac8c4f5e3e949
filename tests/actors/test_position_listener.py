"""PositionListener with a scripted WebSocket client: private frames → account messages, fill dedup,
readiness, REST sync requests after reconnects / restarts / overflow, and the no-credentials idle mode."""

from __future__ import annotations

import pytest

from actors.position_listener import PositionListener
from kalshi.wire.frames import Fill, MarketPosition, Ticker, UserOrder, WsError
from kalshi.ws import WsCommandReply
from messages.account import FillReceived, OrderUpdated, PositionChanged
from messages.control import FeedDown, FeedReady, SyncAccount, Tick
from messages.feed import FeedStatus
from tests.actors.helpers_feeds import FeedHarness, Hold, Recorders, harnesses, holdable
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)

WALL_MS = 1_767_225_600_123
CREDS = object()  # the scripted client never signs anything


def fill(tid: str, count: int = 500, post: int | None = 500) -> Fill:
    return Fill(sid=4, seq=None, trade_id=tid, order_id="o-1", client_order_id="cid-1", market_ticker="KX-A",
                is_taker=True, outcome_side="yes", book_side="bid", yes_price=5100, count=count, fee=350,
                post_position=post, ts_ms=WALL_MS - 5)


def position(value: int) -> MarketPosition:
    return MarketPosition(sid=5, seq=None, market_ticker="KX-A", position=value, position_cost=10_200,
                          realized_pnl=0, fees_paid=350, volume=abs(value))


def order(status: str = "resting") -> UserOrder:
    return UserOrder(sid=6, seq=None, order_id="o-1", client_order_id="cid-1", ticker="KX-A", status=status,
                     book_side="bid", outcome_side="yes", yes_price=5200, fill_count=200, remaining_count=300,
                     initial_count=500, order_group_id="og-1", last_update_reason="Trade", ts_ms=WALL_MS)




@pytest.fixture
def rec():
    r = Recorders()
    yield r
    r.stop()


class Harness(FeedHarness):
    def __init__(self, tmp_path, rec, credentials=CREDS, generation=1, cls=PositionListener, **config) -> None:
        super().__init__(tmp_path, rec, cls, "position_listener", generation=generation,
                         context={"credentials": credentials, "wall_ms": lambda: WALL_MS}, **config)

    def handles(self) -> dict[str, int]:
        return {cmd[2][0]: cmd[0] for cmd in self.ws.find("subscribe")}

    def live(self) -> None:
        self.ws.connect()
        for sid, (channel, handle) in enumerate(sorted(self.handles().items()), start=4):
            self.ws.subscribed(handle, channel, sid)


@pytest.fixture
def harness(tmp_path, rec):
    yield from harnesses(lambda **kw: Harness(tmp_path, rec, **kw))


def test_without_credentials_reports_down_once_and_stays_idle(harness, rec):
    h = harness(credentials=None)
    down = rec.wait("supervisor", FeedDown)[0]
    assert (down.feed, down.reason) == ("position_listener", "no credentials")
    assert h.registry.clients == []
    h.ref.tell(Tick(now_mono_ns=h.clock.now_ns, now_wall_ms=WALL_MS))
    status = rec.wait("supervisor", FeedStatus)[0]
    assert (status.state, status.connected) == ("stopped", False)
    assert len(rec.got("supervisor", FeedDown)) == 1
    assert h.stats()["idle"] is True


def test_each_private_channel_is_its_own_subscription_and_ready_needs_fill_and_positions(harness, rec):
    h = harness()
    wait_for(lambda: h.registry.clients and h.ws.started, 5, message="client started")
    assert sorted(cmd[2] for cmd in h.ws.find("subscribe")) == [("fill",), ("market_positions",), ("user_orders",)]
    assert all(cmd[3] is None for cmd in h.ws.find("subscribe"))  # all markets
    handles_ = h.handles()
    h.ws.connect()
    h.ws.subscribed(handles_["fill"], "fill", 4)
    h.ws.subscribed(handles_["user_orders"], "user_orders", 6)
    h.stats()
    assert rec.got("supervisor", FeedReady) == []
    h.ws.subscribed(handles_["market_positions"], "market_positions", 5)
    rec.wait("supervisor", FeedReady)
    assert rec.got("state_keeper", SyncAccount) == []  # the first connection: the supervisor syncs


def test_frames_become_account_messages_in_wire_order(harness, rec):
    h = harness()
    h.live()
    h.ws.frames(order(), fill("tr-1"), position(500), Ticker(sid=9, seq=None, market_ticker="KX-A", price=None,
                                                              yes_bid=None, yes_ask=None, volume=None,
                                                              open_interest=None, ts_ms=WALL_MS))
    rec.wait("state_keeper", PositionChanged)
    kinds = [type(e[3]).__name__ for e in rec.log.events("message", "state_keeper")]
    assert kinds == ["OrderUpdated", "FillReceived", "PositionChanged"]
    f = rec.got("state_keeper", FillReceived)[0]
    assert f == FillReceived(fill_id="tr-1", order_id="o-1", client_order_id="cid-1", market_ticker="KX-A",
                             is_taker=True, outcome_side="yes", book_side="bid", yes_price=5100, count=500, fee=350,
                             post_position=500, ts_ms=WALL_MS - 5, source="ws")
    p = rec.got("state_keeper", PositionChanged)[0]
    assert p == PositionChanged(market_ticker="KX-A", position=500, cost=10_200, realized_pnl=0, fees_paid=350,
                                source="ws", ts_ms=WALL_MS)
    o = rec.got("state_keeper", OrderUpdated)[0]
    assert (o.order_id, o.status, o.market_ticker, o.fill_count, o.remaining_count, o.initial_count,
            o.order_group_id, o.source) == ("o-1", "resting", "KX-A", 200, 300, 500, "og-1", "ws")
    assert h.stats()["other_frames"] == 1


def test_duplicate_fills_are_applied_once_positions_pass_as_absolute(harness, rec):
    h = harness()
    h.live()
    h.ws.frames(fill("tr-1"), fill("tr-1"))
    h.ws.frames(fill("tr-1"), fill("tr-2"), position(1000), position(1000))
    rec.wait("state_keeper", PositionChanged, 2)
    assert [f.fill_id for f in rec.got("state_keeper", FillReceived)] == ["tr-1", "tr-2"]
    assert [p.position for p in rec.got("state_keeper", PositionChanged)] == [1000, 1000]
    stats = h.stats()
    assert (stats["fills"], stats["fill_duplicates"], stats["positions"]) == (2, 2, 2)


def test_reconnect_asks_for_a_rest_sync_once_subscriptions_are_back(harness, rec):
    h = harness()
    h.live()
    h.ws.disconnect("stalled")
    assert rec.wait("supervisor", FeedDown)[0].reason == "stalled"
    h.ws.connect()
    handles_ = h.handles()
    h.ws.subscribed(handles_["fill"], "fill", 14)
    h.stats()
    assert rec.got("state_keeper", SyncAccount) == []  # not before the private channels are back
    h.ws.subscribed(handles_["market_positions"], "market_positions", 15)
    sync = rec.wait("state_keeper", SyncAccount)[0]
    assert "reconnected" in sync.reason
    h.ws.subscribed(handles_["user_orders"], "user_orders", 16)
    h.stats()
    assert len(rec.got("state_keeper", SyncAccount)) == 1
    rec.wait("supervisor", FeedReady, 2)


def test_a_restarted_listener_syncs_after_its_first_connection(harness, rec):
    h = harness(generation=2)
    h.live()
    assert rec.wait("state_keeper", SyncAccount)[0].reason.startswith("position_listener")


def test_refused_subscription_is_logged_and_counted(harness, rec):
    h = harness()
    h.ws.connect()
    handle = h.handles()["user_orders"]
    h.ws.event(WsCommandReply(h.ws.conn_id, handle, WsError(id=handle, sid=None, seq=None, code=8, msg="Unknown channel")))
    stats = h.stats()
    assert stats["refused_channels"] == ["user_orders"] and stats["command_errors"] == 1


def test_overflow_never_drops_and_asks_for_a_sync_when_caught_up(harness, rec):
    held_cls = holdable(PositionListener)
    h = harness(cls=held_cls, overflow_depth=2)
    h.live()
    h.ref.tell(Hold())
    assert held_cls.held.wait(5)
    for i in range(6):
        h.ws.frames(fill(f"tr-{i}"))
    held_cls.release.set()
    rec.wait("state_keeper", FillReceived, 6)
    h.stats()
    assert rec.got("state_keeper", SyncAccount) == []
    h.ref.tell(Tick(now_mono_ns=h.clock.now_ns, now_wall_ms=WALL_MS))
    sync = rec.wait("state_keeper", SyncAccount)[0]
    assert "overflow" in sync.reason
    assert h.stats()["overflow_events"] == 1
