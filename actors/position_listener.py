"""The position listener: our private channels (``fill``, ``user_orders``, ``market_positions``).

Every frame becomes one account message to ``state_keeper``, in wire order:
- ``Fill`` → ``FillReceived`` (``fill_id`` = Kalshi's ``trade_id``), deduplicated against the fill ids seen
  recently (bounded) — reliability rule 4;
- ``MarketPosition`` → ``PositionChanged(source="ws")``: an absolute position, never a delta
  (``ts_ms`` = wall time of receipt: the channel carries no timestamp);
- ``UserOrder`` → ``OrderUpdated(source="ws")``.
The whale executor learns about fills and orders from the state keeper's account view, not from here.

Private channels are not replayable (rule 3): after a reconnect — and on the first connection of a
restarted actor — this feed tells ``state_keeper`` a ``SyncAccount`` once its subscriptions are back, so
REST reconciles what was missed. Nothing is ever dropped; if our mailbox overflows, the backlog is still
applied and a ``SyncAccount`` follows once we have caught up (rule 6).

Each channel is its own subscription, so an exchange without ``user_orders`` still gives fills and
positions. FeedReady when ``fill`` and ``market_positions`` are subscribed; FeedDown on disconnect.
Without credentials the listener reports FeedDown "no credentials" once and stays idle (no connection).

Config keys (besides those of ``actors.feed_base``): ``dedup_capacity`` (20,000 fill ids).
"""

from __future__ import annotations

import logging
from typing import Any

from kalshi.wire.frames import Fill, MarketPosition, UserOrder
from kalshi.ws import WsCommandReply, WsConnected, WsSubscribed
from messages.account import FillReceived, PositionChanged
from messages.control import FeedDown, SyncAccount
from messages.feed import FramesReceived

from .base import handles
from ._util import BoundedIdSet, config_int
from .feed_base import WsFeedActor
from .state_keeper import order_updated

log = logging.getLogger(__name__)

CHANNELS = ("fill", "user_orders", "market_positions")
REQUIRED = frozenset({"fill", "market_positions"})
DEFAULT_DEDUP_CAPACITY = 20_000
NO_CREDENTIALS = "no credentials"


class PositionListener(WsFeedActor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle = False  # no credentials: no connection at all
        self.channel_handles: dict[int, str] = {}  # subscribe call id → channel
        self.live_channels: set[str] = set()
        self.seen_fills = BoundedIdSet(DEFAULT_DEDUP_CAPACITY)
        self.sync_due = False
        self.fills = 0
        self.fill_duplicates = 0
        self.positions = 0
        self.orders = 0
        self.other_frames = 0
        self.sync_requests = 0
        self.refused_channels: set[str] = set()

    def setup(self) -> None:
        super().setup()
        ctx = self.ctx
        assert ctx is not None
        self.seen_fills = BoundedIdSet(config_int(self.config, "dedup_capacity", DEFAULT_DEDUP_CAPACITY))
        if ctx.credentials is None:
            self.idle = True
            log.warning("%s: no API credentials: private channels unavailable, staying idle", self.name)
            self.tell_supervisor(FeedDown(feed=self.name, generation=self.generation, reason=NO_CREDENTIALS))
            return
        self.start_client()

    def subscribe_all(self, ws: Any) -> None:
        self.channel_handles = {ws.subscribe([channel]): channel for channel in CHANNELS}
        self.live_channels = set()

    # --- data path --------------------------------------------------------------------------------

    @handles(FramesReceived)
    def on_frames(self, message: FramesReceived) -> None:
        if not self.accept_frames(message):
            return
        tell = self.peers.tell
        for f in message.frames:
            kind = type(f)
            if kind is Fill:
                if not self.seen_fills.add(f.trade_id):
                    self.fill_duplicates += 1
                    continue
                self.fills += 1
                tell("state_keeper", FillReceived(
                    fill_id=f.trade_id,
                    order_id=f.order_id,
                    client_order_id=f.client_order_id,
                    market_ticker=f.market_ticker,
                    is_taker=f.is_taker,
                    outcome_side=f.outcome_side,  # type: ignore[arg-type]  # checked by the decoder
                    book_side=f.book_side,  # type: ignore[arg-type]
                    yes_price=f.yes_price,
                    count=f.count,
                    fee=f.fee,
                    post_position=f.post_position,
                    ts_ms=f.ts_ms,
                    source="ws",
                ))
            elif kind is MarketPosition:
                self.positions += 1
                tell("state_keeper", PositionChanged(
                    market_ticker=f.market_ticker,
                    position=f.position,
                    cost=f.position_cost,
                    realized_pnl=f.realized_pnl,
                    fees_paid=f.fees_paid,
                    source="ws",
                    ts_ms=self.ctx.wall_ms() if self.ctx is not None else 0,
                ))
            elif kind is UserOrder:
                self.orders += 1
                tell("state_keeper", order_updated(f, ts_ms=f.ts_ms, source="ws"))
            else:
                self.other_frames += 1

    # --- connection ---------------------------------------------------------------------------------

    def on_connected(self, event: WsConnected) -> None:
        self.live_channels = set()
        if self.connections > 1 or self.generation > 1:
            self.sync_due = True  # what happened while we were away is only in REST

    def on_disconnected(self, reason: str) -> None:
        self.live_channels = set()

    def on_subscribed(self, event: WsSubscribed) -> None:
        channel = self.channel_handles.get(event.handle)
        if channel is None or channel != event.channel:
            return
        self.live_channels.add(channel)
        if REQUIRED <= self.live_channels:
            self.set_ready(True)
            if self.sync_due:
                self.sync_due = False
                self._request_sync("reconnected")

    def on_command_reply(self, event: WsCommandReply) -> None:
        frame = event.frame
        if type(frame).__name__ == "WsError" and event.command_id in self.channel_handles:
            channel = self.channel_handles[event.command_id]
            if channel not in self.refused_channels:
                self.refused_channels.add(channel)
                log.warning("%s: subscription to %s refused: code %s", self.name, channel,
                            getattr(frame, "code", "?"))

    # --- overflow ---------------------------------------------------------------------------------

    def on_caught_up(self) -> None:
        self._request_sync("mailbox overflow")

    def _request_sync(self, why: str) -> None:
        self.sync_requests += 1
        log.info("%s: asking for a REST account sync (%s)", self.name, why)
        self.peers.tell("state_keeper", SyncAccount(reason=f"{self.name}: {why}"))

    # --- status -------------------------------------------------------------------------------------

    def feed_state(self) -> str:
        if self.idle:
            return "stopped"
        return super().feed_state()

    def feed_stats(self) -> dict[str, Any]:
        return {
            "idle": self.idle,
            "live_channels": sorted(self.live_channels),
            "fills": self.fills,
            "fill_duplicates": self.fill_duplicates,
            "positions": self.positions,
            "orders": self.orders,
            "other_frames": self.other_frames,
            "sync_requests": self.sync_requests,
            "refused_channels": sorted(self.refused_channels),
        }
