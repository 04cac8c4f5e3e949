"""The order-book feed: ``orderbook_delta`` for the chosen markets, forwarded to the state keeper in batches.

Data path: the client's reader thread tells one ``FramesReceived`` per burst; this actor forwards it as ONE
``BookFramesReceived`` to ``state_keeper`` (the state keeper applies snapshots and deltas). In steady
state nothing is done per frame; while some markets still wait for a snapshot, each batch is scanned for
snapshots.

Readiness (the seed's ``wait_for_first_snapshot``): ``FeedReady`` once connected and every market subscribed
when the connection came up has its snapshot on that connection; ``FeedDown`` when the connection drops.
With no markets at all the feed is ready at once (and says so in a warning).

Recovery, per subscription (reliability rules 5 and 6, F01–F03):
- connection lost: every book is stale (``BookStale``) until its new snapshot (the client reconnects
  and replays the subscription, snapshots follow);
- seq gap on our sid: every book of that sid is stale, fresh snapshots are requested at once
  (``update_subscription get_snapshot``); no snapshot within ``snapshot_timeout_s`` → unsubscribe and
  subscribe again; still nothing → a new connection. The same ladder guards the first snapshots;
- duplicates and backward seqs are dropped by the client and only counted here;
- error 25 (server buffer overflow, terminal): the client resubscribes; the books are stale meanwhile;
- overflow (F15, ``actors.feed_base``): our own mailbox OR the state keeper's deeper than ``overflow_depth``.

Overflow policy of this channel — deltas are dropped, snapshots never, the books come back from snapshots:
1. on entering (checked in ``on_frames`` before the batch is forwarded) every book is marked stale
   (``BookStale`` to the state keeper), so the stale marks sit in its mailbox before any batch we alter;
2. while overflowed, order-book deltas are dropped (``deltas_dropped``); snapshots (and any other frame)
   are still forwarded. A snapshot makes its book valid again at the state keeper, so the first delta of
   that market we drop after it is preceded by a fresh ``BookStale`` (the batch is split there;
   ``overflow_restales``): a dropped delta can never be missing from a book the state keeper thinks valid;
   ``RequestSnapshot`` is skipped meanwhile (every book is re-snapshotted at the end);
3. on a Tick with both mailboxes at most a quarter of the bound: snapshots for every book are requested
   (the usual ladder guards them) and deltas flow again; the state keeper ignores deltas of its stale
   books until their snapshots arrive.
Both triggers drop deltas: either way the books are stale and will be re-snapshotted, so forwarding the
deltas would only lengthen the state keeper's backlog (it ignores deltas of stale books anyway).

``WatchMarkets`` adds markets (``add_markets``) up to a cap: ``market_cap`` in the actor's config, else
``max(settings.orderbook_market_limit, len(initial markets)) + 10``.

Config keys (besides those of ``actors.feed_base``): ``snapshot_timeout_s`` (5.0), ``market_cap``.
"""

from __future__ import annotations

import logging
from typing import Any

from kalshi.wire.frames import OrderbookDelta, OrderbookSnapshot
from kalshi.ws import WsCommandReply, WsConnected, WsSequenceIssue, WsSubscribed
from messages.feed import FramesReceived, RequestSnapshot, Resubscribe, WatchMarkets
from messages.market import BookFramesReceived, BookStale

from .base import handles
from ._util import NS_PER_S, config_int, config_seconds_ns
from .feed_base import WsFeedActor

log = logging.getLogger(__name__)

CHANNEL = "orderbook_delta"
DEFAULT_SNAPSHOT_TIMEOUT_S = 5.0
MARKET_CAP_SLACK = 10
OVERFLOW_CODE = 25
OVERFLOW_RESTALE = "feed overflow: delta dropped after a snapshot"

# Recovery stages: waiting for the first snapshots of a (re)subscription, for requested snapshots, after
# a resubscribe, after a new connection.
SUBSCRIBE, SNAPSHOT, RESUBSCRIBE, RECONNECT = "subscribe", "snapshot", "resubscribe", "reconnect"


class OrderbookFeed(WsFeedActor):
    overflow_consumer = "state_keeper"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.markets: dict[str, None] = {}  # ordered set of subscribed markets
        self.market_cap = 0
        self.snapshot_timeout_ns = int(DEFAULT_SNAPSHOT_TIMEOUT_S * NS_PER_S)
        self.handle: int | None = None  # the subscribe call's id: WsSubscribed tells its sid
        self.sid: int | None = None
        self.sid_raw_conn = 0
        self.pending: set[str] = set()  # markets without a fresh snapshot on this connection
        self.required: frozenset[str] = frozenset()  # markets that must have snapshots for FeedReady
        self.deferred_adds: set[str] = set()  # WatchMarkets additions waiting for a live sid
        self.stage: str | None = None
        self.deadline_ns = 0
        self.snapshots = 0
        self.snapshot_requests = 0
        self.snapshot_requests_skipped = 0
        self.resubscribes = 0
        self.stale_marks = 0
        self.watch_refused = 0
        self.error25 = 0
        self.deltas_dropped = 0
        self.overflow_restales = 0  # books staled again: a delta dropped after a snapshot forwarded in overflow

    # --- lifecycle ------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        ctx = self.ctx
        assert ctx is not None
        self.snapshot_timeout_ns = config_seconds_ns(self.config, "snapshot_timeout_s", DEFAULT_SNAPSHOT_TIMEOUT_S)
        initial = list(dict.fromkeys(ctx.market_tickers))
        default_cap = max(int(ctx.settings.orderbook_market_limit), len(initial)) + MARKET_CAP_SLACK
        self.market_cap = config_int(self.config, "market_cap", default_cap)
        if len(initial) > self.market_cap:
            log.warning("%s: %d markets given, keeping the first %d (market_cap)", self.name, len(initial),
                        self.market_cap)
            initial = initial[: self.market_cap]
        self.markets = dict.fromkeys(initial)
        if not self.markets:
            log.warning("%s: no markets to follow: ready without order books", self.name)
            self.set_ready(True)
        self.start_client()

    def subscribe_all(self, ws: Any) -> None:
        self.sid = None
        self.handle = None
        if self.markets:
            self.handle = ws.subscribe([CHANNEL], sorted(self.markets), use_yes_price=False)

    # --- data path --------------------------------------------------------------------------------

    @handles(FramesReceived)
    def on_frames(self, message: FramesReceived) -> None:
        if not self.accept_frames(message):  # may start an overflow episode (books marked stale first)
            return
        if self.overflowed:
            self._forward_without_deltas(message)
            return
        # Forward first: the state keeper must hold the snapshots before anyone hears the feed is ready.
        self._forward(message, message.frames)
        pending = self.pending
        if pending:
            for frame in message.frames:
                if type(frame) is OrderbookSnapshot:
                    self.snapshots += 1
                    pending.discard(frame.market_ticker)
            self._check_complete()

    def _forward(self, message: FramesReceived, frames: tuple) -> None:
        self.peers.tell(
            "state_keeper",
            BookFramesReceived(feed=self.name, conn_id=message.conn_id, frames=frames, recv_ns=message.recv_ns),
        )

    def _forward_without_deltas(self, message: FramesReceived) -> None:
        """Overflow: forward everything but the deltas. A delta of a book that a snapshot made valid again
        during this episode re-stales that book first, right after the frames that preceded it."""
        keep: list = []
        pending = self.pending
        for frame in message.frames:
            kind = type(frame)
            if kind is OrderbookDelta:
                self.deltas_dropped += 1
                ticker = frame.market_ticker
                if ticker not in pending and ticker in self.markets:
                    if keep:
                        self._forward(message, tuple(keep))
                        keep = []
                    self.overflow_restales += 1
                    self.peers.tell("state_keeper", BookStale(market_ticker=ticker, reason=OVERFLOW_RESTALE))
                    pending.add(ticker)
                continue
            if kind is OrderbookSnapshot:
                self.snapshots += 1
                pending.discard(frame.market_ticker)
            keep.append(frame)
        if keep:
            self._forward(message, tuple(keep))
        self._check_complete()

    def _check_complete(self) -> None:
        if not self.connected:
            return
        if not self.pending:
            if self.stage is not None:
                log.info("%s: all %d books have a fresh snapshot", self.name, len(self.markets))
            self.stage = None
        if not self.ready and not (self.pending & self.required) and not self.overflowed:
            self.set_ready(True)

    # --- connection events ------------------------------------------------------------------------

    def on_connected(self, event: WsConnected) -> None:
        self.sid = None
        self.required = frozenset(self.markets)
        self.pending = set(self.markets)
        self.deferred_adds.clear()  # the client replays the merged market set
        if self.markets:
            self._set_stage(SUBSCRIBE)
        else:
            self._check_complete()

    def on_disconnected(self, reason: str) -> None:
        self.sid = None
        self._mark_stale(f"connection lost: {reason}")
        self.stage = None  # the client reconnects by itself; on_connected restarts the ladder

    def on_subscribed(self, event: WsSubscribed) -> None:
        if event.handle != self.handle or event.channel != CHANNEL:
            return
        if self.sid is not None and event.sid != self.sid:
            # A new sid for our subscription (the client resubscribed after error 25): fresh snapshots follow.
            self._mark_stale("subscription renewed")
            self._set_stage(RESUBSCRIBE)
        self.sid = event.sid
        self.sid_raw_conn = event.conn_id
        if self.deferred_adds:
            adds, self.deferred_adds = sorted(self.deferred_adds), set()
            self.ws.update_subscription(self.sid, "add_markets", adds, conn_id=self.sid_raw_conn)

    def on_sequence_issue(self, event: WsSequenceIssue) -> None:
        if event.kind != "gap":
            return  # duplicate/backward frames were dropped by the client; a reorder also shows as a gap
        if self.sid is None or event.sid != self.sid:
            log.info("%s: gap on sid %d which is not ours (ours: %s)", self.name, event.sid, self.sid)
            return
        self._mark_stale(f"seq gap on sid {event.sid}: expected {event.expected} got {event.got}")
        self._request_snapshots("seq gap")

    def on_command_reply(self, event: WsCommandReply) -> None:
        frame = event.frame
        if type(frame).__name__ != "WsError":
            return
        code = getattr(frame, "code", None)
        sid = getattr(frame, "sid", None)
        if code == OVERFLOW_CODE and (sid is None or sid == self.sid):
            self.error25 += 1
            if sid is None:
                self._resubscribe("error 25 without a sid")
            else:
                # The client renews this subscription itself; the books are stale until the new snapshots.
                self.sid = None
                self._mark_stale("error 25: server buffer overflow")
                self._set_stage(RESUBSCRIBE)
            return
        bad = tuple(getattr(frame, "market_tickers", None) or ())
        if event.command_id == self.handle and bad:
            dropped = [t for t in bad if t in self.markets]
            for t in dropped:
                del self.markets[t]
            if dropped:
                log.warning("%s: exchange refused markets %s: dropped", self.name, dropped[:10])
                self.required -= set(dropped)
                self.pending -= set(dropped)
                self._resubscribe("markets refused")

    # --- overflow ---------------------------------------------------------------------------------

    def on_overflow(self) -> None:
        if self.overflow_cause == "consumer":
            self._mark_stale("feed overflow: state keeper behind, deltas dropped")
        else:
            self._mark_stale("feed overflow: processing behind the wire, deltas dropped")
        self.stage = None

    def on_caught_up(self) -> None:
        self._request_snapshots("caught up after overflow")

    # --- time -------------------------------------------------------------------------------------

    def on_feed_tick(self, now_ns: int) -> None:
        if self.stage is None or now_ns < self.deadline_ns:
            return
        if not self.pending:
            self.stage = None
            return
        stage = self.stage
        missing = len(self.pending)
        if stage in (SUBSCRIBE, SNAPSHOT):
            log.warning("%s: %d books still without a snapshot after %s: resubscribing", self.name, missing, stage)
            self._resubscribe(f"no snapshot after {stage}")
        elif stage == RESUBSCRIBE:
            log.warning("%s: %d books still without a snapshot after resubscribing: reconnecting", self.name, missing)
            self._set_stage(RECONNECT)
            self.replace_client("no snapshot after resubscribe")
        elif stage == RECONNECT:
            if self.connected:
                self._resubscribe("no snapshot after reconnect")
            else:
                self._set_stage(RECONNECT)  # the client is backing off; keep waiting

    # --- commands -----------------------------------------------------------------------------------

    @handles(Resubscribe)
    def on_resubscribe(self, message: Resubscribe) -> None:
        self._mark_stale(f"resubscribe: {message.reason}")
        self._resubscribe(message.reason)

    @handles(RequestSnapshot)
    def on_request_snapshot(self, message: RequestSnapshot) -> None:
        if self.overflowed:
            self.snapshot_requests_skipped += 1  # every book is re-snapshotted when the overflow ends
            return
        wanted = [t for t in message.market_tickers if t in self.markets] if message.market_tickers else list(self.markets)
        if self.stage is not None:
            # A snapshot, resubscription or connection is already on its way for pending books (the state keeper
            # may ask once per delta it cannot apply): ask only for the others.
            wanted = [t for t in wanted if t not in self.pending]
        if not wanted:
            self.snapshot_requests_skipped += 1
            return
        self._request_snapshots(message.reason or "requested", wanted)

    @handles(WatchMarkets)
    def on_watch_markets(self, message: WatchMarkets) -> None:
        new = sorted(t for t in message.market_tickers if t not in self.markets and isinstance(t, str) and t)
        if not new:
            return
        room = self.market_cap - len(self.markets)
        if len(new) > room:
            self.watch_refused += len(new) - max(room, 0)
            log.warning("%s: market cap %d reached: not watching %d markets (%s)", self.name, self.market_cap,
                        len(new) - max(room, 0), message.reason)
            new = new[: max(room, 0)]
        if not new:
            return
        for t in new:
            self.markets[t] = None
            self.pending.add(t)
            self.peers.tell("state_keeper", BookStale(market_ticker=t, reason="awaiting first snapshot"))
        log.info("%s: watching %d more markets (%s)", self.name, len(new), message.reason)
        ws = self.ws
        if self.handle is None:
            self.handle = ws.subscribe([CHANNEL], sorted(self.markets), use_yes_price=False)
            self.sid = None
        elif self.sid is not None and self.connected:
            ws.update_subscription(self.sid, "add_markets", new, conn_id=self.sid_raw_conn)
        else:
            self.deferred_adds.update(new)  # sent once the subscription has its sid
        if self.connected and self.stage is None:
            self._set_stage(SUBSCRIBE)

    # --- helpers ------------------------------------------------------------------------------------

    def set_ready(self, ready: bool, reason: str = "") -> None:
        if not ready and not self.markets:
            return  # no books to go stale: a dropped connection changes nothing for the system
        super().set_ready(ready, reason)

    def _set_stage(self, stage: str) -> None:
        self.stage = stage
        self.deadline_ns = self._now() + self.snapshot_timeout_ns

    def _mark_stale(self, reason: str) -> None:
        """Every book stale until its next snapshot."""
        self.stale_marks += 1
        tell = self.peers.tell
        for t in self.markets:
            tell("state_keeper", BookStale(market_ticker=t, reason=reason))
        self.pending = set(self.markets)

    def _request_snapshots(self, reason: str, markets: list[str] | None = None) -> None:
        if not self.markets:
            return
        if self.sid is None or not self.connected:
            # Nothing to ask yet: a (re)connection or a pending subscription brings snapshots anyway.
            self.snapshot_requests_skipped += 1  # counted: the state keeper keeps asking while we are down
            if self.connected and self.stage is None:
                self._set_stage(SUBSCRIBE)
            return
        wanted = sorted(markets if markets is not None else self.markets)
        self.pending.update(wanted)
        self.snapshot_requests += 1
        log.info("%s: requesting %d snapshots (%s)", self.name, len(wanted), reason)
        self.ws.update_subscription(self.sid, "get_snapshot", wanted, conn_id=self.sid_raw_conn)
        self._set_stage(SNAPSHOT)

    def _resubscribe(self, reason: str) -> None:
        """Unsubscribe and subscribe again (fresh snapshots); without a live sid, a new connection."""
        if not self.markets:
            return
        ws = self.ws
        if self.sid is None or not self.connected:
            self._set_stage(RECONNECT)
            self.replace_client(f"resubscribe without a live subscription ({reason})")
            return
        self.resubscribes += 1
        log.warning("%s: resubscribing %d markets: %s", self.name, len(self.markets), reason)
        ws.unsubscribe([self.sid], conn_id=self.sid_raw_conn)
        self.sid = None
        self.deferred_adds.clear()
        self.handle = ws.subscribe([CHANNEL], sorted(self.markets), use_yes_price=False)
        self.pending = set(self.markets)
        self._set_stage(RESUBSCRIBE)

    def feed_state(self) -> str:
        state = super().feed_state()
        if state == "live" and (self.pending or self.overflowed):
            return "stale"
        if state == "subscribed" and self.stage in (SNAPSHOT, RESUBSCRIBE, RECONNECT):
            return "stale"
        return state

    def feed_stats(self) -> dict[str, Any]:
        return {
            "markets": len(self.markets),
            "market_cap": self.market_cap,
            "pending_snapshots": len(self.pending),
            "stage": self.stage,
            "sid": self.sid,
            "snapshots": self.snapshots,
            "snapshot_requests": self.snapshot_requests,
            "snapshot_requests_skipped": self.snapshot_requests_skipped,
            "resubscribes": self.resubscribes,
            "stale_marks": self.stale_marks,
            "watch_refused": self.watch_refused,
            "error25": self.error25,
            "deltas_dropped": self.deltas_dropped,
            "overflow_restales": self.overflow_restales,
        }
