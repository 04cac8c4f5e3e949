"""The public trades feed: the ``trade`` channel for all markets, with a REST backfill after reconnects.

Each batch of ``Trade`` frames becomes ONE ``TradesPrinted`` (``TradePrinted`` values, ``recv_ns`` of the
batch) told to ``whale_tracker`` and ``state_keeper``. Trade ids seen recently are remembered (bounded), so
a trade delivered twice — by the stream, or by the stream and a backfill — is passed on once.

After a reconnect the trades printed while we were away are read over REST (``GET /markets/trades`` with
``min_ts`` = the last trade seen, in seconds, minus ``backfill_overlap_s``; newest first, paginated, at most
``backfill_max_pages`` pages of ``backfill_page_limit``) on a worker thread this actor owns (one at a time;
a reconnect during a backfill schedules one more). The result comes back as ``TradesBackfilled``; the
unseen trades go on oldest first with ``backfilled=True``. Backfilled trades may arrive after newer live
ones: late, never dropped.

A non-critical feed: FeedReady once the ``trade`` subscription is confirmed, FeedDown when the connection
drops (the supervisor then flags the system degraded). An overflowing mailbox only delays trades.

Config keys (besides those of ``actors.feed_base``): ``dedup_capacity`` (50,000 trade ids),
``backfill_max_pages`` (10), ``backfill_page_limit`` (1000), ``backfill_overlap_s`` (1).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kalshi.wire.frames import Trade
from kalshi.ws import WsConnected, WsSubscribed
from messages.feed import FramesReceived
from messages.feed_backfill import TradesBackfilled
from messages.market import TradePrinted, TradesPrinted

from .base import error_text, handles
from ._util import BoundedIdSet, config_int
from .feed_base import WsFeedActor

log = logging.getLogger(__name__)

CHANNEL = "trade"
DEFAULT_DEDUP_CAPACITY = 50_000
DEFAULT_BACKFILL_MAX_PAGES = 10
DEFAULT_BACKFILL_PAGE_LIMIT = 1000
DEFAULT_BACKFILL_OVERLAP_S = 1
BACKFILL_JOIN_S = 12.0  # a REST call ends within its own total deadline (10 s by default)


def _trade_from_frame(f: Trade, recv_ns: int) -> TradePrinted:
    return TradePrinted(
        trade_id=f.trade_id,
        market_ticker=f.market_ticker,
        taker_side=f.taker_side,  # type: ignore[arg-type]  # 'yes' | 'no', checked by the decoder
        yes_price=f.yes_price,
        no_price=f.no_price,
        count=f.count,
        ts_ms=f.ts_ms,
        recv_ns=recv_ns,
    )


def fetch_backfill(rest: Any, min_ts: int, *, max_pages: int, page_limit: int, stop: threading.Event,
                   mono_ns: Any) -> tuple[list[TradePrinted], int, bool, str | None]:
    """Read trades since ``min_ts`` (s), newest first, page by page; → (trades oldest first, pages,
    truncated, error). Never raises."""
    newest_first: list[TradePrinted] = []
    pages = 0
    truncated = False
    error: str | None = None
    cursor: str | None = None
    seen_cursors: set[str] = set()
    try:
        while True:
            if stop.is_set():
                error = "stopped"
                break
            if pages >= max_pages:
                truncated = True
                break
            page = rest.get_trades(min_ts=min_ts, limit=page_limit, cursor=cursor)
            pages += 1
            now = mono_ns()
            for t in page.trades:
                newest_first.append(
                    TradePrinted(
                        trade_id=t.trade_id,
                        market_ticker=t.ticker,
                        taker_side=t.taker_side,
                        yes_price=t.yes_price,
                        no_price=t.no_price,
                        count=t.count,
                        ts_ms=t.created_time_ms,
                        recv_ns=now,
                        backfilled=True,
                    )
                )
            cursor = page.cursor or None
            if cursor is None:
                break
            if cursor in seen_cursors:  # a server looping on one cursor: stop, keep what we have
                truncated = True
                error = "cursor loop"
                break
            seen_cursors.add(cursor)
    except Exception as exc:  # REST errors are typed KalshiApiError; anything else is reported the same way
        error = error_text(exc)
    newest_first.reverse()  # newest first within a page and across pages → oldest first
    # Stable sort: equal timestamps keep the (reversed) server order.
    newest_first.sort(key=lambda t: t.ts_ms)
    return newest_first, pages, truncated, error


class TradesFeed(WsFeedActor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handle: int | None = None
        self.subscribed = False
        self.seen = BoundedIdSet(DEFAULT_DEDUP_CAPACITY)
        self.last_trade_ts_ms: int | None = None
        self.first_live_ms: int | None = None  # wall time the stream first went live (backfill floor)
        self.trades = 0
        self.trade_duplicates = 0
        self.other_frames = 0
        self.backfills = 0
        self.backfilled = 0
        self.backfill_duplicates = 0
        self.backfill_errors = 0
        self.last_backfill_error: str | None = None
        self._backfill_threads: list[threading.Thread] = []
        self._backfill_running = False
        self._backfill_again = False
        self._backfill_id = 0
        self._backfill_stop = threading.Event()
        self.max_pages = DEFAULT_BACKFILL_MAX_PAGES
        self.page_limit = DEFAULT_BACKFILL_PAGE_LIMIT
        self.overlap_s = DEFAULT_BACKFILL_OVERLAP_S

    def setup(self) -> None:
        super().setup()
        self.seen = BoundedIdSet(config_int(self.config, "dedup_capacity", DEFAULT_DEDUP_CAPACITY))
        self.max_pages = config_int(self.config, "backfill_max_pages", DEFAULT_BACKFILL_MAX_PAGES)
        self.page_limit = config_int(self.config, "backfill_page_limit", DEFAULT_BACKFILL_PAGE_LIMIT)
        self.overlap_s = config_int(self.config, "backfill_overlap_s", DEFAULT_BACKFILL_OVERLAP_S, minimum=0)
        self.start_client()

    def subscribe_all(self, ws: Any) -> None:
        self.subscribed = False
        self.handle = ws.subscribe([CHANNEL])

    # --- data path --------------------------------------------------------------------------------

    @handles(FramesReceived)
    def on_frames(self, message: FramesReceived) -> None:
        if not self.accept_frames(message):
            return
        recv_ns = message.recv_ns
        seen = self.seen
        out: list[TradePrinted] = []
        last = self.last_trade_ts_ms or 0
        for f in message.frames:
            if type(f) is not Trade:
                self.other_frames += 1
                continue
            if not seen.add(f.trade_id):
                self.trade_duplicates += 1
                continue
            out.append(_trade_from_frame(f, recv_ns))
            if f.ts_ms > last:
                last = f.ts_ms
        if out:
            self.last_trade_ts_ms = last
            self.trades += len(out)
            self._publish(tuple(out))

    def _publish(self, trades: tuple[TradePrinted, ...]) -> None:
        batch = TradesPrinted(trades=trades)
        self.peers.tell("whale_tracker", batch)
        self.peers.tell("state_keeper", batch)

    # --- connection ---------------------------------------------------------------------------------

    def on_connected(self, event: WsConnected) -> None:
        self.subscribed = False
        if self.connections > 1:
            self._start_backfill(f"reconnected (connection {self.conn_id})")

    def on_subscribed(self, event: WsSubscribed) -> None:
        if event.handle != self.handle or event.channel != CHANNEL:
            return
        self.subscribed = True
        if self.first_live_ms is None and self.ctx is not None:
            self.first_live_ms = self.ctx.wall_ms()
        self.set_ready(True)

    def on_disconnected(self, reason: str) -> None:
        self.subscribed = False

    # --- backfill -----------------------------------------------------------------------------------

    def _start_backfill(self, reason: str) -> None:
        since_ms = self.last_trade_ts_ms if self.last_trade_ts_ms is not None else self.first_live_ms
        if since_ms is None:
            log.info("%s: no trade seen yet: nothing to backfill (%s)", self.name, reason)
            return
        if self._backfill_running:
            self._backfill_again = True
            return
        ctx = self.ctx
        assert ctx is not None
        min_ts = max(0, since_ms // 1000 - self.overlap_s)
        self._backfill_id += 1
        self.backfills += 1
        request_id = self._backfill_id
        ref = self.actor_ref
        stop = self._backfill_stop
        max_pages, page_limit, name = self.max_pages, self.page_limit, self.name

        def work() -> None:
            rest = None
            try:
                rest = ctx.make_rest()
                trades, pages, truncated, error = fetch_backfill(
                    rest, min_ts, max_pages=max_pages, page_limit=page_limit, stop=stop, mono_ns=ctx.mono_ns
                )
            except Exception as exc:
                trades, pages, truncated, error = [], 0, False, error_text(exc)
            finally:
                if rest is not None:
                    try:
                        rest.close()
                    except Exception:
                        pass
            try:
                ref.tell(TradesBackfilled(request_id=request_id, min_ts=min_ts, trades=tuple(trades), pages=pages,
                                          truncated=truncated, error=error))
            except Exception:  # the actor is gone: nothing to deliver to
                log.debug("%s: backfill result dropped: actor stopped", name)

        log.info("%s: backfilling trades since %d (%s)", self.name, min_ts, reason)
        thread = threading.Thread(target=work, name=f"{self.name}-backfill", daemon=True)
        self._backfill_threads = [t for t in self._backfill_threads if t.is_alive()] + [thread]
        self._backfill_running = True
        thread.start()

    @handles(TradesBackfilled)
    def on_backfilled(self, message: TradesBackfilled) -> None:
        if message.request_id == self._backfill_id:
            self._backfill_running = False  # its thread ends right after telling us
        if message.error is not None:
            self.backfill_errors += 1
            self.last_backfill_error = message.error
            log.warning("%s: backfill %d stopped early after %d pages: %s", self.name, message.request_id,
                        message.pages, message.error)
        if message.truncated:
            log.warning("%s: backfill %d hit its cap (%d pages): older missed trades not read", self.name,
                        message.request_id, message.pages)
        seen = self.seen
        fresh: list[TradePrinted] = []
        for t in message.trades:
            if seen.add(t.trade_id):
                fresh.append(t)
            else:
                self.backfill_duplicates += 1
        if fresh:
            self.backfilled += len(fresh)
            newest = fresh[-1].ts_ms
            if self.last_trade_ts_ms is None or newest > self.last_trade_ts_ms:
                self.last_trade_ts_ms = newest
            self._publish(tuple(fresh))
        log.info("%s: backfill %d: %d trades read, %d new", self.name, message.request_id, len(message.trades),
                 len(fresh))
        if self._backfill_again and not self._backfill_running:
            self._backfill_again = False
            self._start_backfill("reconnected during the previous backfill")

    def cleanup_feed(self) -> None:
        self._backfill_stop.set()
        for thread in self._backfill_threads:
            thread.join(BACKFILL_JOIN_S)
            if thread.is_alive():
                log.warning("%s: backfill thread still running after %.0fs", self.name, BACKFILL_JOIN_S)
        self._backfill_threads = []

    def feed_state(self) -> str:
        state = super().feed_state()
        if state == "live" and not self.subscribed:
            return "subscribed"
        return state

    def feed_stats(self) -> dict[str, Any]:
        return {
            "trades": self.trades,
            "trade_duplicates": self.trade_duplicates,
            "other_frames": self.other_frames,
            "backfills": self.backfills,
            "backfilled": self.backfilled,
            "backfill_duplicates": self.backfill_duplicates,
            "backfill_errors": self.backfill_errors,
            "last_backfill_error": self.last_backfill_error,
            "backfill_running": self._backfill_running,
        }
