"""The state keeper: the single writer of order books, positions, orders and balance.

What it does:
- Books: one ``kalshi.book.OrderBook`` per market, fed by ``BookFramesReceived`` batches (snapshots and
  deltas applied in order). A delta for a market without a valid book, or a delta the book refuses,
  leaves that book stale and asks the feed that sent the batch for a fresh snapshot (``RequestSnapshot``,
  re-asked every ``snapshot_retry_s`` while still stale). ``BookStale`` invalidates a book until its next
  snapshot. Per batch it builds ``BookView``s only for books that changed AND that the executor watches
  (``WatchBooks``) and tells them as ONE ``BookViewsUpdated``.
- Account: absolute positions (``PositionChanged``), fills deduplicated by ``fill_id`` (bounded memory),
  resting orders (``OrderUpdated``; terminal statuses leave), the executor's in-flight orders (Order*
  messages), balance. ``unsynced_fill_markets`` = markets with stream fills since the last REST sync
  started. Every account change → ``AccountViewUpdated`` to the executor at once (rare, and the executor
  must see fills promptly).
- REST sync (the seed's KalshiDataSync): on start, every ``settings.cycle_seconds``, on ``SyncAccount``,
  after a private-feed ``SequenceGap`` and ~1 s after our fills (the seed's post-execution sync: balance
  has no stream). A worker thread owned by this actor reads balance, positions and resting orders (all
  pages, capped) and tells ``SyncFinished``; REST replaces the streamed state. It also reads our fills
  since a cursor (fills made while we were down or during a WS gap); they go through the stream's dedup.
- Every new fill (stream or REST) is told to the executor, which journals it once (``record_fill``).
  A sync started after a ``SyncAccount`` answers ``DataSynced`` to the supervisor. No credentials → no
  sync; paper execution → the in-process paper account is the truth, so ``SyncAccount`` is answered at once.
- Versioned state: ``version`` grows by one per message that really changed something; ``StateChanged``
  (version, what changed, account view, book summaries) goes to the broadcaster at most once per
  ``min_emit_interval_ms`` and only from ``Tick`` (a dirty set is kept between ticks), so 50k deltas/s
  cost one StateChanged per tick.

Overflow policy of the book-view channel to the executor: LATEST-WINS per market. While the executor's
mailbox holds ``executor_backlog`` messages or more (a slow fsync, a GC pause during a burst), views are not
told but kept newest-per-market and flushed as one ``BookViewsUpdated`` as soon as it is below the bound again
(checked on every book change and every Tick). A stalled executor thus gets a bounded inbox and one current
view per market instead of a stale view per batch to rebuild; every view (WatchBooks answers too) goes
through this one path, so an older view of a market never arrives after a newer one. Account views, fills
and order events are private and never held, conflated or dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kalshi.book import OrderBook
from kalshi.wire.frames import OrderbookDelta, OrderbookSnapshot
from messages.account import AccountSynced, BalanceSynced, FillReceived, OrderUpdated, PositionChanged, Source
from messages.control import DataSynced, SupervisorReport, SyncAccount, SystemStateChanged, Tick, TradingGateChanged
from messages.feed import RequestSnapshot, SequenceGap
from messages.market import BookFramesReceived, BookStale, TradesPrinted
from messages.state import (
    AccountView,
    AccountViewUpdated,
    BookSummary,
    BookView,
    BookViewsUpdated,
    StateChanged,
    WatchBooks,
)
from messages.status import SyncFinished
from messages.whale import (
    OrderAccepted,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderResolved,
    OrderSubmitted,
    WhaleDecisionMade,
    WhaleProcessing,
)

from ._util import NS_PER_MS, BoundedIdSet, WorkerThread, config_int, config_seconds_ns
from .base import SupervisedActor, error_text, handles, mailbox_depth
from .context import SystemContext

log = logging.getLogger(__name__)

# Kalshi order statuses that keep an order on the book; anything else (canceled, executed) is terminal.
RESTING_STATUSES = frozenset({"resting", "pending"})
# Private channels: a sequence gap there means streamed fills/positions may be missing → REST sync.
PRIVATE_FEEDS = frozenset({"position_listener"})
# New fills kept for the executor while it is not reachable (beyond this they are counted and logged as lost).
UNDELIVERED_FILLS_MAX = 10_000



def position_from_rest(p: Any) -> PositionChanged:
    """``kalshi.wire.bodies.Position`` → ``PositionChanged`` (market exposure is the cost basis)."""
    return PositionChanged(
        market_ticker=p.ticker,
        position=p.position,
        cost=p.market_exposure,
        realized_pnl=p.realized_pnl,
        fees_paid=p.fees_paid,
        source="rest",
        ts_ms=p.last_updated_ms or 0,
    )


def order_updated(o: Any, *, ts_ms: int, source: Source) -> OrderUpdated:
    """An order as Kalshi gives it (REST ``bodies.Order`` or the ``user_orders`` frame ``frames.UserOrder``,
    which share these field names) → ``OrderUpdated``."""
    return OrderUpdated(
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        market_ticker=o.ticker,
        status=o.status,
        book_side=o.book_side,
        outcome_side=o.outcome_side,
        yes_price=o.yes_price,
        fill_count=o.fill_count,
        remaining_count=o.remaining_count,
        initial_count=o.initial_count,
        order_group_id=o.order_group_id,
        ts_ms=ts_ms,
        source=source,
    )


def order_from_rest(o: Any) -> OrderUpdated:
    """``kalshi.wire.bodies.Order`` → ``OrderUpdated``."""
    return order_updated(o, ts_ms=o.last_update_time_ms or o.created_time_ms or 0, source="rest")


def fill_from_rest(f: Any) -> FillReceived:
    """``kalshi.wire.bodies.Fill`` → ``FillReceived``. The id is the ``trade_id`` (as on the WS ``fill`` channel)
    so one fill seen on both has one id; REST fills carry no client_order_id (since 2026-03-30) or post_position."""
    return FillReceived(
        fill_id=f.trade_id,
        order_id=f.order_id,
        client_order_id=f.client_order_id,
        market_ticker=f.ticker,
        is_taker=f.is_taker,
        outcome_side=f.outcome_side,
        book_side=f.book_side,
        yes_price=f.yes_price,
        count=f.count,
        fee=f.fee_cost,
        post_position=None,
        ts_ms=f.ts_ms or f.created_time_ms or 0,
        source="rest",
    )


def read_fills(rest: Any, min_ts_ms: int, max_items: int) -> tuple[tuple[FillReceived, ...], str | None]:
    """Our fills since ``min_ts_ms`` (all pages, the client's page cap) → (fills, error or None).

    An error (a bad page, the page cap, more than ``max_items``) keeps the fills read so far — they are real —
    and is reported instead of raised: fills must not stop balance, positions and orders from syncing."""
    fills: list[FillReceived] = []
    try:
        for f in rest.iter_fills(min_ts=max(0, min_ts_ms // 1000)):  # Kalshi's min_ts is in seconds
            fills.append(fill_from_rest(f))
            if len(fills) > max_items:
                return tuple(fills), f"more than {max_items} fills; read stopped"
    except Exception as exc:  # noqa: BLE001 — any failure is reported with the sync, never raised
        return tuple(fills), error_text(exc)
    return tuple(fills), None


def read_account(rest: Any, at_ms: int, max_items: int = 10_000, fills_min_ms: int | None = None) -> AccountSynced:
    """One REST reconciliation: balance, every non-zero position, every resting order (all pages), and
    (``fills_min_ms`` given) our fills since then.

    More than ``max_items`` positions or orders is refused (ValueError) rather than silently truncated:
    a partial read must not replace the streamed state. Fills only add (deduplicated), so a failed fill read
    is carried in ``fills_error`` and the rest of the sync still applies.
    """
    balance = rest.get_balance()
    positions: list[PositionChanged] = []
    for p in rest.iter_positions(count_filter="position"):
        if p.position:
            positions.append(position_from_rest(p))
            if len(positions) > max_items:
                raise ValueError(f"more than {max_items} positions; refusing a partial sync")
    orders: list[OrderUpdated] = []
    for o in rest.iter_orders(status="resting"):
        if o.status in RESTING_STATUSES:
            orders.append(order_from_rest(o))
            if len(orders) > max_items:
                raise ValueError(f"more than {max_items} resting orders; refusing a partial sync")
    fills: tuple[FillReceived, ...] = ()
    fills_error: str | None = None
    if fills_min_ms is not None:
        fills, fills_error = read_fills(rest, fills_min_ms, max_items)
    return AccountSynced(
        balance=balance.balance,
        portfolio_value=balance.portfolio_value or 0,
        positions=tuple(positions),
        orders=tuple(orders),
        at_ms=at_ms,
        fills=fills,
        fills_read=fills_min_ms is not None and fills_error is None,
        fills_error=fills_error,
    )


class SyncWorker:
    """The REST sync thread: each ``request(sync_id)`` runs ``read_account`` on a ``WorkerThread`` (its own REST
    client, made on that thread and closed on stop) and reports ``SyncFinished``. Every call inside has the
    client's total deadline, so a sync never holds the thread for long."""

    def __init__(
        self,
        make_rest: Callable[[], Any],
        report: Callable[[SyncFinished], None],
        wall_ms: Callable[[], int],
        name: str = "state-keeper-sync",
        max_items: int = 10_000,
    ) -> None:
        self._wall_ms = wall_ms
        self._max_items = max_items
        self._thread = WorkerThread(make_rest, report, name, label="REST client")

    def start(self) -> None:
        self._thread.start()

    def request(self, sync_id: int, fills_min_ms: int | None = None) -> None:
        self._thread.submit(
            lambda rest: read_account(rest, self._wall_ms(), self._max_items, fills_min_ms),
            lambda result, error: SyncFinished(sync_id=sync_id, result=result, error=error or None),
        )

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask the thread to finish after the current sync; True when it ended within ``timeout_s``."""
        return self._thread.stop(timeout_s)


class StateKeeper(SupervisedActor):
    """Config keys (all optional): ``context`` (SystemContext), ``executor`` (peer name, default
    whale_executor), ``broadcaster`` (default broadcaster), ``min_emit_interval_ms`` (100),
    ``snapshot_retry_s`` (5), ``fill_id_memory`` (100_000), ``sync`` (None = when credentials are set,
    True, False), ``sync_interval_s`` (settings.cycle_seconds), ``owed_sync_retry_s`` (2),
    ``post_fill_sync_s`` (1: a sync this long after our first fill or filled order), ``fills_lookback_s``
    (86_400: how far back the first fill read of a run goes), ``fills_overlap_s`` (300: each later fill read
    starts this long before the last complete one did, for fills REST shows late), ``executor_backlog``
    (50: the executor's mailbox depth at which book views are held latest-wins; 0 = never hold)."""

    def setup(self) -> None:
        cfg = self.config
        ctx = cfg.get("context")
        self.context: SystemContext | None = ctx if isinstance(ctx, SystemContext) else None
        self.executor_name: str = cfg.get("executor", "whale_executor")
        self.broadcaster_name: str = cfg.get("broadcaster", "broadcaster")
        self.min_emit_ns = config_int(cfg, "min_emit_interval_ms", 100, minimum=0) * NS_PER_MS
        self.snapshot_retry_ns = config_seconds_ns(cfg, "snapshot_retry_s", 5)
        settings = self.context.settings if self.context is not None else None
        cycle_s = getattr(settings, "cycle_seconds", 30) if settings is not None else 30
        self.sync_interval_ns = config_seconds_ns(cfg, "sync_interval_s", cycle_s)

        # Books
        self.books: dict[str, OrderBook] = {}
        self.book_seq: dict[str, int] = {}
        self.book_recv_ns: dict[str, int] = {}
        self.book_update_ms: dict[str, int] = {}
        self.summaries: dict[str, BookSummary] = {}
        self.watched: frozenset[str] = frozenset()
        self.snapshot_requested: dict[str, int] = {}  # market → mono ns of the last RequestSnapshot
        self.snapshot_feed: dict[str, str] = {}  # market → feed that sends its frames
        self._summary_dirty: set[str] = set()
        self.last_trade: dict[str, tuple[int, int, int]] = {}  # market → (yes price, count, ts_ms)
        self.trades_seen = 0
        # Book views the executor is too backlogged to take now: market → newest view (latest-wins).
        self.executor_backlog = config_int(cfg, "executor_backlog", 50, minimum=0)
        self.views_pending: dict[str, BookView] = {}
        self.views_conflated = 0  # held views replaced by a newer one of the same market (never delivered)

        # Account
        self.balance = 0
        self.portfolio_value = 0
        self.positions: dict[str, PositionChanged] = {}
        self.orders: dict[str, OrderUpdated] = {}
        self.inflight: dict[str, str] = {}  # client_order_id → submitted | unknown
        self.fill_ids: BoundedIdSet[str] = BoundedIdSet(config_int(cfg, "fill_id_memory", 100_000))
        # REST fill cursor: wall ms the last complete fill read started (None: none yet this run). Stream fills do
        # not move it: a stream fill after a WS gap must not hide the fills lost in the gap.
        self.fills_read_ms: int | None = None
        self.fills_undelivered: list[FillReceived] = []  # new fills the executor could not be told yet
        self.fills_lookback_ms = config_seconds_ns(cfg, "fills_lookback_s", 86_400) // NS_PER_MS
        self.fills_overlap_ms = config_seconds_ns(cfg, "fills_overlap_s", 300, allow_zero=True) // NS_PER_MS
        self.unsynced_fill_markets: set[str] = set()
        self.fills_since_sync_start: set[str] = set()
        self.synced_at_ms = 0
        self._account_view: AccountView | None = None

        # Versioned change feed
        self.version = 0
        self.changed: set[str] = set()
        self.last_emit_ns: int | None = None
        self.now_ns = 0
        self.now_wall_ms = 0

        # Counters
        self.frames_applied = 0
        self.snapshots_applied = 0
        self.deltas_applied = 0
        self.stale_marks = 0
        self.snapshot_requests = 0
        self.ignored_frames = 0
        self.ignored_messages = 0
        self.duplicate_fills = 0
        self.fills = 0
        self.rest_fills = 0  # new fills that only REST gave us (missed by the stream)
        self.fill_read_errors = 0
        self.fills_lost = 0  # new fills dropped because the executor stayed unreachable (never expected)
        self.last_fill_read_error: str | None = None
        self.state_changed_sent = 0
        self.syncs_started = 0
        self.syncs_ok = 0
        self.syncs_failed = 0
        self.last_sync_error: str | None = None

        # REST sync
        # "sync": None (default) = sync when the context has credentials and the trading client is enabled;
        # True = sync through the context's REST factory (tests); False = never.
        sync_cfg = cfg.get("sync")
        if self.context is None or sync_cfg is False:
            self.sync_enabled = False
        elif sync_cfg is True:
            self.sync_enabled = self.context.credentials is not None or self.context.rest_factory is not None
        else:
            self.sync_enabled = self.context.credentials is not None and bool(
                getattr(settings, "enable_trading_client", True)
            )
        self.paper = self.context is not None and self.context.execution == "paper"
        if self.paper:
            self.sync_enabled = False
        self.owed_retry_ns = config_seconds_ns(cfg, "owed_sync_retry_s", 2)
        # The seed's post-execution sync: balance has no stream, so read REST shortly after our fills.
        self.post_fill_sync_ns = config_seconds_ns(cfg, "post_fill_sync_s", 1, allow_zero=True)
        self.sync_id = 0
        self.sync_inflight: int | None = None  # id of the running sync
        self.current_answers = False  # the running sync started after a SyncAccount
        self.sync_owed = False  # a SyncAccount is not answered yet (DataSynced owed)
        self.sync_rerun = False  # start another sync as soon as the running one ends
        self.next_sync_ns: int | None = None  # None: one interval after the next Tick
        self.worker: SyncWorker | None = None
        if self.sync_enabled:
            assert self.context is not None
            ref = self.actor_ref
            self.worker = SyncWorker(self.context.make_rest, ref.tell, self.context.wall_ms, name=f"{self.name}-sync")
            self.worker.start()
            self._start_sync(answers_request=False)

    def cleanup(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None and not worker.stop(timeout_s=4.0):
            log.warning("%s: sync worker still inside a REST call at shutdown", self.name)

    # --- time ---------------------------------------------------------------------------------

    def _wall_ms(self) -> int:
        if self.context is not None:
            return self.context.wall_ms()
        return self.now_wall_ms

    @handles(Tick)
    def on_tick(self, message: Tick) -> None:
        super().on_tick(message)
        self.now_ns = message.now_mono_ns
        self.now_wall_ms = message.now_wall_ms
        if self.changed and (self.last_emit_ns is None or self.now_ns - self.last_emit_ns >= self.min_emit_ns):
            self._emit_state_changed()
        if self.snapshot_requested:
            self._retry_snapshot_requests()
        if self.views_pending:
            self._flush_views()
        if self.fills_undelivered:
            waiting, self.fills_undelivered = self.fills_undelivered, []
            for fill in waiting:
                self._tell_fill(fill)
        if self.sync_enabled and self.sync_inflight is None:
            if self.next_sync_ns is None:
                self.next_sync_ns = self.now_ns + self.sync_interval_ns
            elif self.now_ns >= self.next_sync_ns:
                self._start_sync(answers_request=self.sync_owed)

    # --- books (hot path) ------------------------------------------------------------------------

    @handles(BookFramesReceived)
    def on_book_frames(self, message: BookFramesReceived) -> None:
        books = self.books
        seqs = self.book_seq
        changed: set[str] = set()
        stale: list[str] = []
        for frame in message.frames:
            kind = type(frame)
            if kind is OrderbookDelta:
                ticker = frame.market_ticker
                book = books.get(ticker)
                if book is None or not book.valid:
                    if ticker not in self.snapshot_requested:
                        stale.append(ticker)
                        if book is None:
                            book = books[ticker] = OrderBook(ticker)
                            changed.add(ticker)
                    continue
                try:
                    ok = book.apply_delta(frame.side, frame.price, frame.delta)
                except ValueError as exc:
                    book.invalidate(f"bad delta: {exc}")
                    ok = False
                changed.add(ticker)
                seqs[ticker] = frame.seq
                if ok:
                    self.deltas_applied += 1
                else:
                    self.stale_marks += 1
                    stale.append(ticker)
            elif kind is OrderbookSnapshot:
                ticker = frame.market_ticker
                book = books.get(ticker)
                if book is None:
                    book = books[ticker] = OrderBook(ticker)
                if book.apply_snapshot(frame.yes, frame.no):
                    self.snapshots_applied += 1
                    self.snapshot_requested.pop(ticker, None)
                else:
                    self.stale_marks += 1
                    stale.append(ticker)
                seqs[ticker] = frame.seq
                changed.add(ticker)
            else:
                self.ignored_frames += 1
        self.frames_applied += len(message.frames)
        if stale:
            self._request_snapshots(message.feed, stale, "delta without a valid book")
        if changed:
            self._books_changed(changed, message.recv_ns)

    @handles(BookStale)
    def on_book_stale(self, message: BookStale) -> None:
        ticker = message.market_ticker
        book = self.books.get(ticker)
        if book is None:
            book = self.books[ticker] = OrderBook(ticker)
        elif not book.valid and book.invalid_reason == message.reason:
            return  # nothing new
        book.invalidate(message.reason)
        self.stale_marks += 1
        # The feed that says so is already fetching a snapshot: ask ourselves only if it never comes.
        self.snapshot_requested.setdefault(ticker, self.now_ns)
        self._books_changed({ticker}, self.book_recv_ns.get(ticker, 0))

    def _books_changed(self, changed: set[str], recv_ns: int) -> None:
        now_ms = self._wall_ms()
        for ticker in changed:
            self.book_recv_ns[ticker] = recv_ns
            self.book_update_ms[ticker] = now_ms
        self._summary_dirty |= changed
        self.version += 1
        self.changed.add("books")
        watched = self.watched
        views = tuple(self._view(t) for t in sorted(changed) if t in watched) if watched else ()
        if views:
            self._send_views(views)
        elif self.views_pending:
            self._flush_views()

    # Book views to the executor: the one path for every view, so per market they arrive oldest first.

    def _executor_backlogged(self) -> bool:
        if not self.executor_backlog:
            return False
        ref = self.peers.get(self.executor_name)
        return ref is not None and mailbox_depth(ref) >= self.executor_backlog

    def _send_views(self, views: tuple[BookView, ...]) -> None:
        """Tell ``views`` (one per market) now, or hold them newest-per-market while the executor is backlogged."""
        pending = self.views_pending
        if not pending and not self._executor_backlogged():
            self.peers.tell(self.executor_name, BookViewsUpdated(views=views))
            return
        for view in views:
            if view.market_ticker in pending:
                self.views_conflated += 1
            pending[view.market_ticker] = view
        self._flush_views()

    def _flush_views(self) -> None:
        """Tell the held views as one message (markets sorted) once the executor is below the bound."""
        if not self.views_pending or self._executor_backlogged():
            return
        pending, self.views_pending = self.views_pending, {}
        self.peers.tell(self.executor_name, BookViewsUpdated(views=tuple(pending[t] for t in sorted(pending))))

    def _view(self, ticker: str) -> BookView:
        book = self.books.get(ticker)
        if book is None:
            return BookView(market_ticker=ticker, valid=False, yes=(), no=(), seq=0, recv_ns=0, reason="no book yet")
        return BookView(
            market_ticker=ticker,
            valid=book.valid,
            yes=book.levels("yes"),
            no=book.levels("no"),
            seq=self.book_seq.get(ticker, 0),
            recv_ns=self.book_recv_ns.get(ticker, 0),
            reason="" if book.valid else (book.invalid_reason or "invalid"),
        )

    def _request_snapshots(self, feed: str, tickers: list[str], reason: str) -> None:
        fresh = sorted({t for t in tickers})
        for t in fresh:
            self.snapshot_requested[t] = self.now_ns
            self.snapshot_feed[t] = feed
        self.snapshot_requests += 1
        self.peers.tell(feed, RequestSnapshot(market_tickers=tuple(fresh), reason=reason))

    def _retry_snapshot_requests(self) -> None:
        due: dict[str, list[str]] = {}
        for ticker, at in self.snapshot_requested.items():
            if self.now_ns - at >= self.snapshot_retry_ns:
                due.setdefault(self.snapshot_feed.get(ticker, "orderbook_feed"), []).append(ticker)
        for feed, tickers in due.items():
            self._request_snapshots(feed, tickers, "snapshot still missing")

    @handles(TradesPrinted)
    def on_trades(self, message: TradesPrinted) -> None:
        """Public trades: only the last print per market is kept (for stats); books come from the book feed."""
        last = self.last_trade
        for t in message.trades:
            last[t.market_ticker] = (t.yes_price, t.count, t.ts_ms)
        self.trades_seen += len(message.trades)

    @handles(WatchBooks)
    def on_watch_books(self, message: WatchBooks) -> None:
        self.watched = frozenset(message.market_tickers)
        if self.views_pending:  # held views of markets no longer watched are not wanted any more
            self.views_pending = {t: v for t, v in self.views_pending.items() if t in self.watched}
        # The current state of EVERY watched book, not only newly watched ones: a restarted executor asks for
        # books this keeper already watched for its predecessor, and a quiet book may not change for a long time.
        # (Rare: the executor asks only when its set changes.) Held too if the executor is backlogged.
        if self.watched:
            self._send_views(tuple(self._view(t) for t in sorted(self.watched)))
        elif self.views_pending:
            self._flush_views()

    # --- account -----------------------------------------------------------------------------------

    def _account_changed(self, what: str) -> None:
        self.version += 1
        self.changed.add(what)
        self._account_view = None
        self.peers.tell(self.executor_name, AccountViewUpdated(view=self.account_view()))

    def account_view(self) -> AccountView:
        if self._account_view is None or self._account_view.version != self.version:
            self._account_view = AccountView(
                version=self.version,
                balance=self.balance,
                portfolio_value=self.portfolio_value,
                positions=tuple(self.positions[t] for t in sorted(self.positions)),
                resting_orders=tuple(self.orders[o] for o in sorted(self.orders)),
                unsynced_fill_markets=frozenset(self.unsynced_fill_markets),
                synced_at_ms=self.synced_at_ms,
            )
        return self._account_view

    @handles(PositionChanged)
    def on_position(self, message: PositionChanged) -> None:
        ticker = message.market_ticker
        old = self.positions.get(ticker)
        if message.position == 0:
            if old is None:
                return
            del self.positions[ticker]
        else:
            if old is not None and _same_position(old, message):
                return
            self.positions[ticker] = message
        self._account_changed("positions")

    def _new_fill(self, fill: FillReceived) -> bool:
        """The one fill-id dedup for every source. A new fill goes to the executor, which journals it — except
        paper fills: the executor journaled them before telling us."""
        if not self.fill_ids.add(fill.fill_id):
            self.duplicate_fills += 1
            return False
        self.fills += 1
        if fill.source != "paper":
            self._tell_fill(fill)
        return True

    def _tell_fill(self, fill: FillReceived) -> None:
        """Fills must reach the journal: one the executor cannot take now (not started yet — we start first and
        sync at once — or restarting) waits here and is told again on the next Tick."""
        if self.peers.tell(self.executor_name, fill):
            return
        if len(self.fills_undelivered) < UNDELIVERED_FILLS_MAX:
            self.fills_undelivered.append(fill)
        else:
            self.fills_lost += 1
            log.error("%s: executor unreachable and %d fills waiting: fill %s not journaled", self.name,
                      UNDELIVERED_FILLS_MAX, fill.fill_id)

    @handles(FillReceived)
    def on_fill(self, message: FillReceived) -> None:
        if not self._new_fill(message):
            return
        self.fills_since_sync_start.add(message.market_ticker)
        self.unsynced_fill_markets.add(message.market_ticker)
        self._sync_soon()
        self._account_changed("fills")

    def _sync_soon(self) -> None:
        """Bring the next sync forward to ``post_fill_sync_s`` from now (never later than planned)."""
        if self.sync_enabled and self.now_ns:
            due = self.now_ns + self.post_fill_sync_ns
            if self.next_sync_ns is None or self.next_sync_ns > due:
                self.next_sync_ns = due

    @handles(OrderUpdated)
    def on_order(self, message: OrderUpdated) -> None:
        order_id = message.order_id
        if message.client_order_id:
            self.inflight.pop(message.client_order_id, None)
        if message.status in RESTING_STATUSES:
            if self.orders.get(order_id) == message:
                return
            self.orders[order_id] = message
        else:
            if self.orders.pop(order_id, None) is None:
                return
        self._account_changed("orders")

    @handles(BalanceSynced)
    def on_balance(self, message: BalanceSynced) -> None:
        if message.balance == self.balance and message.portfolio_value == self.portfolio_value:
            return
        self.balance = message.balance
        self.portfolio_value = message.portfolio_value
        self._account_changed("balance")

    # The executor's own order events: in-flight orders until the exchange's answer settles them.

    @handles(OrderSubmitted)
    def on_order_submitted(self, message: OrderSubmitted) -> None:
        self.inflight[message.client_order_id] = "submitted"
        self.version += 1
        self.changed.add("orders")

    @handles(OrderOutcomeUnknown)
    def on_order_unknown(self, message: OrderOutcomeUnknown) -> None:
        self.inflight[message.client_order_id] = "unknown"
        self.version += 1
        self.changed.add("orders")

    @handles(SystemStateChanged, TradingGateChanged, SupervisorReport, WhaleDecisionMade, WhaleProcessing)
    def on_not_for_state(self, message: object) -> None:
        """Broadcasts told to every notify peer and the executor's decisions: nothing to store here."""
        self.ignored_messages += 1

    @handles(OrderAccepted, OrderRejected, OrderResolved)
    def on_order_settled(self, message: OrderAccepted | OrderRejected | OrderResolved) -> None:
        if type(message) is OrderAccepted and message.fill_count > 0:
            self._sync_soon()
        if self.inflight.pop(message.client_order_id, None) is not None:
            self.version += 1
            self.changed.add("orders")

    # --- REST sync -----------------------------------------------------------------------------------

    @handles(SyncAccount)
    def on_sync_account(self, message: SyncAccount) -> None:
        if self.paper:
            # Paper execution: the account lives in-process (paper broker), REST has nothing to add.
            self.tell_supervisor(DataSynced(actor=self.name, generation=self.generation, at_ms=self._wall_ms()))
            return
        if not self.sync_enabled:
            log.warning("%s: SyncAccount (%s) without credentials: market-data only, no sync", self.name,
                        message.reason)
            return
        self.sync_owed = True
        if self.sync_inflight is None:
            self._start_sync(answers_request=True)
        elif not self.current_answers:
            self.sync_rerun = True  # the running sync predates the request: run another after it

    @handles(SequenceGap)
    def on_sequence_gap(self, message: SequenceGap) -> None:
        # Private channels are not replayable: a gap there means REST must be read again.
        if message.feed in PRIVATE_FEEDS and self.sync_enabled:
            if self.sync_inflight is None:
                self._start_sync(answers_request=self.sync_owed)
            else:
                self.sync_rerun = True

    def _start_sync(self, answers_request: bool) -> None:
        if self.worker is None:
            return
        self.sync_id += 1
        self.sync_inflight = self.sync_id
        self.current_answers = answers_request
        self.next_sync_ns = self.now_ns + self.sync_interval_ns if self.now_ns else None
        self.fills_since_sync_start = set()
        self.syncs_started += 1
        if self.fills_read_ms is None:
            fills_min_ms = self._wall_ms() - self.fills_lookback_ms
        else:
            fills_min_ms = self.fills_read_ms - self.fills_overlap_ms
        self.worker.request(self.sync_id, fills_min_ms)

    @handles(SyncFinished)
    def on_sync_finished(self, message: SyncFinished) -> None:
        if message.sync_id != self.sync_inflight:
            return  # an old worker's answer
        answers = self.current_answers
        self.sync_inflight = None
        self.current_answers = False
        if message.result is None:
            self.syncs_failed += 1
            self.last_sync_error = message.error
            log.warning("%s: REST sync failed (retried next cycle): %s", self.name, message.error)
            if self.sync_owed:
                # The supervisor waits in KALSHI_DATA_SYNC: retry sooner than a full cycle.
                self.next_sync_ns = self.now_ns + self.owed_retry_ns
        else:
            self.syncs_ok += 1
            self.last_sync_error = None
            self._apply_sync(message.result)
            if answers:
                self.sync_owed = False
                self.tell_supervisor(
                    DataSynced(actor=self.name, generation=self.generation, at_ms=message.result.at_ms)
                )
        if self.sync_rerun:
            self.sync_rerun = False
            self._start_sync(answers_request=self.sync_owed)

    @handles(AccountSynced)
    def on_account_synced(self, message: AccountSynced) -> None:
        """A reconciliation from elsewhere (tests, the paper broker): applied like our own."""
        self._apply_sync(message)

    def _apply_sync(self, result: AccountSynced) -> None:
        """REST wins: replace balance, positions and resting orders (never merge). Fills only add: each new one
        (the stream missed it) goes through the same dedup as stream fills; positions already include it."""
        for fill in result.fills:
            if self._new_fill(fill):
                self.rest_fills += 1
        if result.fills_error is not None:
            self.fill_read_errors += 1
            self.last_fill_read_error = result.fills_error
            log.warning("%s: REST fill read failed (%d fills kept, retried next sync): %s", self.name,
                        len(result.fills), result.fills_error)
        elif result.fills_read:
            self.last_fill_read_error = None
            self.fills_read_ms = max(self.fills_read_ms or 0, result.at_ms)
        positions = {p.market_ticker: p for p in result.positions if p.position}
        orders = {o.order_id: o for o in result.orders if o.status in RESTING_STATUSES}
        what = set()
        if result.balance != self.balance or result.portfolio_value != self.portfolio_value:
            what.add("balance")
        if positions.keys() != self.positions.keys() or any(
            not _same_position(positions[t], self.positions[t]) for t in positions
        ):
            what.add("positions")
        if orders != self.orders:
            what.add("orders")
        self.balance = result.balance
        self.portfolio_value = result.portfolio_value
        self.positions = positions
        self.orders = orders
        # Fills seen while the sync ran may be missing from what REST returned: they stay unsynced.
        self.unsynced_fill_markets = set(self.fills_since_sync_start)
        self.synced_at_ms = result.at_ms
        self.version += 1
        self.changed |= what | {"sync"}
        self._account_view = None
        self.peers.tell(self.executor_name, AccountViewUpdated(view=self.account_view()))

    # --- change feed --------------------------------------------------------------------------------

    def _emit_state_changed(self) -> None:
        for ticker in self._summary_dirty:
            self.summaries[ticker] = self._summary(ticker)
        self._summary_dirty.clear()
        msg = StateChanged(
            version=self.version,
            changed=frozenset(self.changed),
            account=self.account_view(),
            books=tuple(self.summaries[t] for t in sorted(self.summaries)),
            at_ms=self.now_wall_ms or self._wall_ms(),
        )
        self.changed.clear()
        self.last_emit_ns = self.now_ns
        self.state_changed_sent += 1
        self.peers.tell(self.broadcaster_name, msg)

    def _summary(self, ticker: str) -> BookSummary:
        book = self.books[ticker]
        yes = book.best_yes_bid()
        ask = book.best_yes_ask()
        return BookSummary(
            market_ticker=ticker,
            valid=book.valid,
            best_yes_bid=yes[0] if yes else None,
            best_yes_ask=ask[0] if ask else None,
            yes_levels=book.depth("yes"),
            no_levels=book.depth("no"),
            last_update_ms=self.book_update_ms.get(ticker, 0),
        )

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats.update(
            version=self.version,
            books=len(self.books),
            valid_books=sum(1 for b in self.books.values() if b.valid),
            watched=len(self.watched),
            frames_applied=self.frames_applied,
            snapshots_applied=self.snapshots_applied,
            deltas_applied=self.deltas_applied,
            stale_marks=self.stale_marks,
            snapshot_requests=self.snapshot_requests,
            ignored_frames=self.ignored_frames,
            ignored_messages=self.ignored_messages,
            trades_seen=self.trades_seen,
            views_held=len(self.views_pending),
            views_conflated=self.views_conflated,
            fills=self.fills,
            duplicate_fills=self.duplicate_fills,
            rest_fills=self.rest_fills,
            fill_read_errors=self.fill_read_errors,
            fills_undelivered=len(self.fills_undelivered),
            fills_lost=self.fills_lost,
            last_fill_read_error=self.last_fill_read_error,
            positions=len(self.positions),
            resting_orders=len(self.orders),
            inflight_orders=dict(self.inflight),
            state_changed_sent=self.state_changed_sent,
            syncs_started=self.syncs_started,
            syncs_ok=self.syncs_ok,
            syncs_failed=self.syncs_failed,
            last_sync_error=self.last_sync_error,
            synced_at_ms=self.synced_at_ms,
        )
        return stats


def _same_position(a: PositionChanged, b: PositionChanged) -> bool:
    """Equal in what matters (the source and timestamp of an unchanged position are not a change)."""
    return (
        a.position == b.position
        and a.cost == b.cost
        and a.realized_pnl == b.realized_pnl
        and a.fees_paid == b.fees_paid
    )
