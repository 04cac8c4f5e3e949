"""The whale executor: the ONLY actor that sends orders.

On ``WhaleQueueUpdated`` (and on Ticks, for retries) it runs the strategy (``actors.strategies``; the
whale follower is ``whale_rules.process_queue``) on a frozen ``whale_rules.Context`` built from what it was
told: the trading gate (closed until told open), the state keeper's ``AccountViewUpdated`` (positions,
resting orders, unsynced fills) and ``BookViewsUpdated`` (the books it watches), its own open orders and the
journal's recovery view. Every decision is journaled (non-final ones only when the reason changes) and told
as ``WhaleDecisionMade`` + ``WhaleProcessing`` (processing → complete, with the seed's action names) to the
state keeper and the broadcaster; final ones also to the whale tracker, which drops the whale from its queue.

Journaling: the sightings of a queue update and the decisions (and intents) of the evaluation that follows are
ONE journal transaction (``Journal.batch``: one fsync per evaluation, not one per record). A follow: its decision
and intent are durable (``record_intent`` commits before it returns) BEFORE the order is handed to the venue worker
thread this actor owns (actors.venues.VenueWorker: one blocking venue call at a time; results come back as
``VenueJobDone``). ``ExecutionStarted``/``ExecutionFinished`` go to the supervisor around sends (ACTING).

Outcomes (reliability rules 1, 2, 7, 12; F06–F08, F16–F18, F20):
- accepted / rejected → journal outcome + ``OrderAccepted`` / ``OrderRejected``. A rejection is final for the
  whale (a triggered order group answers 400 to every create: no re-placement loop). Paper fills are journaled
  (one transaction) before the accepted outcome, then told to the state keeper with the new position.
- 409 duplicate client_order_id → the order exists: read it back (as for an unknown outcome).
- unknown (timeout, 5xx, reset, 2xx without an order) → ``OrderOutcomeUnknown``; no new order anywhere while
  any outcome is unknown. Resolved by ``find`` (by client_order_id) on Ticks with capped exponential backoff:
  found → accepted; absent on two reads at least ``absent_grace_s`` apart → resent with the SAME
  client_order_id (at most ``max_resends`` times; a whale past its max age is not resent, the intent closes
  as "resolved: not created").
- not sent (connection never opened) → retried with backoff, the same client_order_id.
- 429 → jittered exponential backoff for every new order (no tokens meanwhile; whales age out as
  ``skipped_age`` instead of bursting later); the 429'd order is retried only while its whale is fresh.

Start (setup): open the journal (a corrupt journal — ``JournalCorrupt``, marked permanent — fails setup and the
supervisor goes to ERROR at once with its table and seq, D3; an unopenable one fails setup and is restarted), replay it (evaluated whales, token bucket history, pending intents), then in the
worker: (paper execution) rebuild the paper account from the journaled paper fills — positions, exposure, P&L,
cash and the orders they belong to — and tell the state keeper the restored positions; resolve every pending
intent by client_order_id (on paper: an intent with journaled fills is found, hence accepted and never resent;
one without fills is absent and resent while its whale is fresh, as on an exchange; the reconcile refuses to run
against a paper account that was not restored), create the session's order group
(settings.order_group_contracts_limit) that our orders carry, cancel orphaned resting orders (not in that
group) when settings.cleanup_on_startup; then ``TradingClientReady``. Failure → ``TradingClientDown`` and a
retry after ``reconcile_retry_s``.

Journal write failure: trading stops for good in this incarnation — the gate is kept closed locally,
resting orders are canceled, and the supervisor is told ``TradingClientDown(reason="journal: ...", fatal=True)``
(F22): it goes to ERROR with that reason and stops this executor once the cancels it queued are done; recovery
after the ERROR cool-down starts a new one, which reopens the journal.

Gate closed, or the system in ERROR: our resting orders are canceled (cancels are allowed while blocked).
``CleanupRequested`` cancels orphaned (or all) resting orders and answers ``CleanupCompleted`` to reply_to.
A cancel that lost the race to a fill (F17: the venue reads a 404'd order back) is a fill, not a cancel: logged,
reported under ``CleanupCompleted.filled``, its market held, and the state keeper told ``SyncAccount``.
``SyncAccount`` (only sent if actor_config.toml's sync_targets lists whale_executor) reads balance,
positions and orders through the venue and answers ``DataSynced``.
cleanup(): reset the order group (best effort), stop the worker (bounded join), close the journal.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable

from kalshi.units import format_count
from messages.account import FillReceived, PositionChanged
from messages.control import (
    DataSynced,
    ExecutionFinished,
    ExecutionStarted,
    SupervisorReport,
    SyncAccount,
    SystemStateChanged,
    Tick,
    TradingClientDown,
    TradingClientReady,
    TradingGateChanged,
)
from messages.execution import (
    FAILED,
    FOLLOWED,
    CancelReport,
    PlaceOutcome,
    ReconcileReport,
    ResolveReport,
    SyncReport,
    VenueJobDone,
    WhaleSightings,
    seed_action,
)
from messages.feed import WatchMarkets
from messages.state import AccountView, AccountViewUpdated, BookView, BookViewsUpdated, WatchBooks
from messages.whale import (
    FOLLOW,
    CleanupCompleted,
    CleanupRequested,
    Decision,
    OrderAccepted,
    OrderOutcomeUnknown,
    OrderPlan,
    OrderRejected,
    OrderResolved,
    OrderSubmitted,
    Whale,
    WhaleDecisionMade,
    WhaleProcessing,
    WhaleQueueUpdated,
)

from ._util import NS_PER_MS, NS_PER_S, BoundedIdSet, config_int, config_seconds_ns
from .base import SupervisedActor, error_text, handles
from .context import SystemContext, context_of
from .journal import Journal, JournalError
from .paper_broker import PaperRestore
from .strategies import Strategy, make_strategy
from .venues import Venue, VenueError, VenueWorker, book_from_view, make_venue
from .whale_rules import Context, EvaluatedWhales, FollowRules, TokenBucket

__all__ = ["WhaleExecutor", "VenueFactory"]

log = logging.getLogger(__name__)

VIEW_WAIT_NS = 2 * NS_PER_S  # how long a whale waits for the first view of its newly watched market
SEEN_WHALES_MEMORY = 10_000  # whale ids journaled as seen (bounded: the oldest are forgotten)
NOTIFY = ("state_keeper", "broadcaster")

# (context, book_source) -> Venue, called on the worker thread.
VenueFactory = Callable[[SystemContext, Callable[[str], BookView | None]], Venue]

# Durations (seconds, *_s) become integer ns in ``self.ns`` (key without "_s"); the rest are ints.
_DEFAULTS = {
    "absent_grace_s": 2.0,  # two "not found" reads at least this far apart = definitively not created
    "resolve_backoff_s": 0.5,  # first retry of a failed read-back; doubles up to the max
    "resolve_backoff_max_s": 30.0,
    "rate_backoff_s": 1.0,  # after a 429 on create; doubles (with jitter) up to the max
    "rate_backoff_max_s": 60.0,
    "retry_send_s": 0.5,  # after a connection that never opened
    "reconcile_retry_s": 5.0,
    "fill_hold_s": 30.0,  # a market we just bought in counts as held until the account view catches up
    "stop_timeout_s": 5.0,
}
_INT_DEFAULTS = {"max_not_sent": 5, "max_resends": 3}


@dataclass(slots=True)
class _Open:
    """An intent without a definitive outcome. state: sending | retry | unknown | resolving."""

    plan: OrderPlan
    state: str
    deadline_ms: int  # past this the whale is too old to (re)send for
    next_ns: int = 0
    attempts: int = 0
    not_sent: int = 0
    reads: int = 0
    absent_since_ns: int | None = None
    resends: int = 0
    reason: str = ""
    gave_up_logged: bool = False


def _fill_body(fill: FillReceived) -> dict[str, Any]:
    """A fill as journaled (``PaperBroker.restore`` reads paper ones back)."""
    return {"order_id": fill.order_id, "client_order_id": fill.client_order_id, "market": fill.market_ticker,
            "outcome": fill.outcome_side, "yes_price": fill.yes_price, "count": fill.count, "fee": fill.fee,
            "ts_ms": fill.ts_ms, "source": fill.source}


class _NoTokens:
    """The token bucket during a 429 back-off: nothing may be taken."""

    def available(self, now_ms: int) -> int:
        return 0

    def try_take(self, now_ms: int) -> bool:
        return False


class WhaleExecutor(SupervisedActor):
    def __init__(
        self,
        name: str,
        generation: int = 1,
        supervisor: Any = None,
        peers: Any = None,
        config: Any = None,
        *,
        venue_factory: VenueFactory | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name, generation, supervisor, peers, config)
        self._venue_factory = venue_factory or make_venue
        self._rng = rng or random.Random()
        self.journal: Journal | None = None
        self.worker: VenueWorker | None = None
        # Filled in setup().
        self.ctx: SystemContext
        self.ns: dict[str, int] = {}  # durations from _DEFAULTS, in ns
        self.limits: dict[str, int] = {}  # counts from _INT_DEFAULTS
        self.strategy: Strategy
        self.rules: FollowRules
        self.bucket: TokenBucket
        self.gate_open = False
        self.system_state = ""
        self.ready = False
        self.journal_failed: str | None = None
        self.order_group_id: str | None = None
        self.group_triggered = False
        self.account: AccountView | None = None
        self.books: dict[str, Any] = {}  # market -> kalshi.book.OrderBook built from the latest view
        self._books_view = MappingProxyType(self.books)  # what a Context gets: read-only, never copied
        self.views: dict[str, BookView] = {}  # latest immutable views (the paper venue reads these)
        self.watched: frozenset[str] = frozenset()
        self.requested_markets: set[str] = set()
        # Newly watched markets whose first view is on its way (the state keeper answers WatchBooks at
        # once): their whales wait for it instead of being journaled as skipped_book_stale first.
        self.view_wait_until_ns: dict[str, int] = {}
        self.queue: tuple[Whale, ...] = ()
        # Whales with a final decision (their trades and sweeps): never evaluated again. Bounded by age in
        # setup() (the tracker's window + max age); the journal keeps them all.
        self.evaluated: EvaluatedWhales
        self.seen_whales: BoundedIdSet[str] = BoundedIdSet(SEEN_WHALES_MEMORY)
        self._unjournaled_seen: list[tuple[Whale, int]] = []  # (whale, when seen): journaled with the next decisions
        self.last_reason: dict[str, tuple[str, str]] = {}
        self.open: dict[str, _Open] = {}
        self.filled_markets: dict[str, int] = {}  # market -> mono ns of the fill
        self.paper_exposure: dict[str, int] = {}  # market -> cost of our paper fills there (fees excluded)
        # Paper execution: the journaled paper fills to rebuild the account from, until restored (then None).
        self._paper_restore: tuple | None = None
        self._restoring = False
        self.known_orders: dict[str, str] = {}  # client_order_id -> order_id
        self._acting = False
        self._rl_attempt = 0
        self._rl_until_ns = 0
        self._reconcile_due_ns: int | None = None
        self._reconciling = False
        self._cancel_out = False
        self._cleanups: dict[int, CleanupRequested] = {}
        self._next_cycle_ns = 0
        self.counts: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def setup(self) -> None:
        self.ctx = context_of(self.config)
        settings = self.ctx.settings
        self.ns = {k[:-2]: config_seconds_ns(self.config, k, v) for k, v in _DEFAULTS.items()}
        self.limits = {k: config_int(self.config, k, v, minimum=0) for k, v in _INT_DEFAULTS.items()}
        version = str(self.config.get("strategy_version", "v1"))
        self.strategy = make_strategy(settings.strategy, settings, version)
        self.rules = FollowRules.from_settings(settings, version)
        self.journal = Journal(self.config.get("journal_dir") or self.ctx.data_dir)
        view = self.journal.load()  # JournalCorrupt: refuse to start (D3) — the supervisor sees it
        self.evaluated = EvaluatedWhales(settings.whale_window_minutes * 60_000 + self.rules.max_age_ms)
        horizon = self._now_ms() - self.evaluated.retention_ms
        for e in view.evaluated:
            if e.ts_ms >= horizon:  # older ones could only be skipped for age: not worth remembering
                self.evaluated.add(e.whale_id, e.trade_ids, e.sweep, e.ts_ms)
        self.known_orders = dict(view.known_orders)
        if self.ctx.execution == "paper" and view.paper_fills:
            self._paper_restore = view.paper_fills
        self.bucket = TokenBucket.from_history(
            settings.whale_max_trades_per_minute, settings.whale_token_refill_seconds, view.intent_times_ms
        )
        for pending in view.pending_intents:
            self.open[pending.client_order_id] = _Open(
                plan=pending.plan,
                state="unknown",
                deadline_ms=pending.ts_ms + self.rules.max_age_ms,
                reason="intent without an outcome at start",
            )
        log.info(
            "%s: journal replayed (last seq %d, %d evaluated whales, %d recent enough to remember, %d pending intents, "
            "%d bytes of an unfinished transaction ignored)",
            self.name, view.last_seq, len(view.evaluated_whale_ids), len(self.evaluated), len(view.pending_intents),
            view.torn_tail_bytes,
        )
        ctx = self.ctx
        factory = self._venue_factory
        views = self.views
        self.worker = VenueWorker(
            lambda: factory(ctx, views.get),
            self.actor_ref.tell,
            lambda job_id, kind, result, error: VenueJobDone(job_id=job_id, kind=kind, result=result, error=error),
            name=f"{self.name}-venue",
        )
        self.worker.start()
        self._start_reconcile()

    def cleanup(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            gid = self.order_group_id
            if gid:
                worker.submit("reset_group", lambda v: v.reset_order_group(gid))
            if not worker.stop(self.ns.get("stop_timeout", 5 * NS_PER_S) / NS_PER_S):
                log.error("%s: venue worker did not stop in time", self.name)
        if self._acting:
            self._acting = False
            self.tell_supervisor(ExecutionFinished(actor=self.name, generation=self.generation))
        journal, self.journal = self.journal, None
        if journal is not None:
            seen, self._unjournaled_seen = self._unjournaled_seen, []
            if seen and self.journal_failed is None:  # whales seen but not decided yet (waiting for a book)
                try:
                    with journal.batch():
                        self._record_seen(journal, seen)
                except JournalError as exc:
                    log.error("%s: journaling the last sightings failed: %s", self.name, error_text(exc))
            journal.close()

    # --- time -----------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self.ctx.wall_ms()

    def _now_ns(self) -> int:
        return self.ctx.mono_ns()

    # --- inputs ---------------------------------------------------------------------------------

    @handles(TradingGateChanged)
    def on_gate(self, msg: TradingGateChanged) -> None:
        was = self.gate_open
        self.gate_open = msg.open
        if was and not msg.open:
            self._cancel_resting(f"gate closed: {msg.reason}")
        if msg.open:
            self._evaluate()

    @handles(SystemStateChanged)
    def on_system_state(self, msg: SystemStateChanged) -> None:
        self.system_state = msg.state
        if msg.state == "ERROR":
            self._cancel_resting(f"system in ERROR: {msg.reason}")

    def on_peers_changed(self, msg: Any) -> None:
        super().on_peers_changed(msg)
        # A restarted state keeper or feed has forgotten what we watch: tell it again.
        self.watched = frozenset()
        self.requested_markets.clear()
        if hasattr(self, "strategy"):
            self._update_watch()

    @handles(SupervisorReport)
    def on_supervisor_report(self, msg: SupervisorReport) -> None:
        """Told to every notify peer; the executor learns state and gate from their own messages."""

    @handles(AccountViewUpdated)
    def on_account(self, msg: AccountViewUpdated) -> None:
        self.account = msg.view

    @handles(FillReceived)
    def on_fill(self, msg: FillReceived) -> None:
        """A new fill of ours (exchange stream or REST sync, deduplicated by the state keeper): journaled once.
        With the journal down it is counted; the next run's REST fill read (a day back) journals it."""
        if not self._journal_fill(msg):
            self._count("fills_not_journaled")

    def _journal_fill(self, fill: FillReceived) -> bool:
        """Journal one fill (a fill id already journaled is a no-op); False when the journal is down."""
        return self._journal_fills((fill,))

    def _journal_fills(self, fills: Iterable[FillReceived]) -> bool:
        """Journal fills in one transaction (ids already journaled are no-ops); False when the journal is down."""
        added: list[bool] = []

        def write(journal: Journal) -> None:
            with journal.batch():
                for fill in fills:
                    added.append(journal.record_fill(fill.fill_id, _fill_body(fill)))

        if not self._journal_write(write):
            return False
        for new in added:
            self._count("fills_journaled" if new else "fills_already_journaled")
        return True

    @handles(BookViewsUpdated)
    def on_books(self, msg: BookViewsUpdated) -> None:
        for view in msg.views:
            self.views[view.market_ticker] = view
            self.books[view.market_ticker] = book_from_view(view)
            self.view_wait_until_ns.pop(view.market_ticker, None)
        if self.queue:
            self._evaluate()

    @handles(WhaleQueueUpdated)
    def on_queue(self, msg: WhaleQueueUpdated) -> None:
        self.queue = msg.queue
        now_ms = self._now_ms()
        for whale in msg.queue:
            if whale.whale_id not in self.evaluated.whale_ids and self.seen_whales.add(whale.whale_id):
                # Journaled in the same transaction as the decisions _evaluate() makes next (one fsync).
                self._unjournaled_seen.append((whale, now_ms))
        queued = {w.whale_id for w in msg.queue}
        for whale_id in [k for k in self.last_reason if k not in queued]:
            del self.last_reason[whale_id]  # left the queue without a final decision
        self._update_watch()
        self._evaluate()

    @handles(WhaleSightings)
    def on_sightings(self, msg: WhaleSightings) -> None:
        # F04: a repeated trade never makes a second whale (the tracker dedups); it is journaled as seen.
        now_ms = self._now_ms()
        seen, self._unjournaled_seen = self._unjournaled_seen, []  # a first sighting goes before its repeats

        def write(journal: Journal) -> None:
            with journal.batch():  # one commit for the whole message (up to the tracker's MAX_SIGHTINGS)
                self._record_seen(journal, seen)
                for whale, trade_id in msg.sightings:
                    journal.record_whale_seen(whale, now_ms, "duplicate", trade_id)

        if self._journal_write(write):
            self.counts["duplicate_sightings"] = self.counts.get("duplicate_sightings", 0) + len(msg.sightings)

    @handles(Tick)
    def on_tick(self, msg: Tick) -> None:
        super().on_tick(msg)
        now_ns = self._now_ns()
        if self._reconcile_due_ns is not None and now_ns >= self._reconcile_due_ns and not self._reconciling:
            self._start_reconcile()
        now_ms = self._now_ms()
        self.evaluated.prune(now_ms)
        for coid, order in list(self.open.items()):
            if order.state == "retry" and now_ns >= order.next_ns and now_ns >= self._rl_until_ns:
                if now_ms > order.deadline_ms:
                    # Never send for a stale whale: the retry expires instead of bursting out late.
                    self._close_rejected(order, 0, order.reason or "expired", "whale too old to retry",
                                         {"code": order.reason or "expired", "expired": True})
                elif self._may_send():
                    self._send(coid)
            elif order.state == "unknown" and now_ns >= order.next_ns and self.ready:
                self._read_back(coid)
        if self.ctx.execution != "paper":
            hold = self.ns["fill_hold"]
            for market, at in list(self.filled_markets.items()):
                if now_ns - at > hold:
                    del self.filled_markets[market]
        self._run_cycle(now_ns)
        if self.queue:
            self._evaluate()

    @handles(CleanupRequested)
    def on_cleanup(self, msg: CleanupRequested) -> None:
        if self.worker is None:
            self.peers.tell(msg.reply_to, CleanupCompleted(request_id=msg.request_id, canceled=(), failed=(), detail="executor not running"))
            return
        gid = self.order_group_id
        only_orphans = msg.orphaned_only

        def job(venue: Venue) -> CancelReport:
            resting = venue.resting_orders()
            targets = tuple(
                (o.order_id, o.market) for o in resting if not only_orphans or gid is None or o.order_group_id != gid
            )
            return venue.cancel(targets)

        job_id = self.worker.submit("cleanup", job)
        self._cleanups[job_id] = msg

    @handles(SyncAccount)
    def on_sync(self, msg: SyncAccount) -> None:
        if self.worker is not None:
            self.worker.submit("sync", lambda v: v.sync())

    # --- worker results -------------------------------------------------------------------------

    @handles(VenueJobDone)
    def on_job_done(self, msg: VenueJobDone) -> None:
        handler = {
            "place": self._on_place,
            "resolve": self._on_resolve,
            "reconcile": self._on_reconcile,
            "restore": self._on_restore,
            "cancel": self._on_cancel,
            "cleanup": self._on_cleanup_done,
            "sync": self._on_sync_done,
            "reset_group": lambda m: None,
        }.get(msg.kind)
        if handler is not None:
            handler(msg)
        self._update_acting()

    def _on_place(self, msg: VenueJobDone) -> None:
        outcome = msg.result
        if not isinstance(outcome, PlaceOutcome):
            # Only when the venue itself could not be built (the job catches everything else): the
            # order never reached anything, yet stay safe and read it back like an unknown outcome.
            self._count("place_errors")
            log.error("%s: order call failed: %s", self.name, msg.error)
            for coid, order in list(self.open.items()):
                if order.state == "sending":
                    self._mark_unknown(coid, f"venue error: {msg.error}")
                    break
            return
        coid = outcome.client_order_id
        order = self.open.get(coid)
        if order is None or order.state != "sending":
            log.warning("%s: place result for an order not being sent (%s)", self.name, coid)
            return
        now_ms, now_ns = self._now_ms(), self._now_ns()
        status = outcome.status
        self._count(f"place_{status}")
        if status != "rate_limited":
            self._rl_attempt = 0
        if status == "accepted":
            # Paper fills are journaled BEFORE the outcome: a crash between the two leaves the intent pending with
            # its fills on disk, and the restart finds the order in the restored paper account (never resent).
            fills_journaled = not outcome.fills or self._journal_fills(outcome.fills)
            self._close_accepted(order, outcome.order_id or "", outcome.fill_count, outcome.remaining_count,
                                 outcome.average_fill_price, outcome.average_fee_paid, outcome.fill_cost, {})
            if fills_journaled:
                self._paper_fills(outcome)
        elif status == "rejected":
            if outcome.status_code == 404 and "order group" in outcome.detail.lower():
                # F11b: the exchange no longer knows our group (it restarted empty): make a new one now
                # instead of taking this for a trigger that refuses every order until a restart.
                if self.order_group_id is not None:
                    log.warning("%s: order group %s not found at the exchange; creating a new one", self.name,
                                self.order_group_id)
                    self.order_group_id = None
                    self._reconcile_due_ns = now_ns
            elif "order group" in outcome.detail.lower() and not self.group_triggered:
                # F18: the exchange stopped our group (limit hit or an operator). Every create is refused until
                # someone resets it; each refusal is final for its whale, so nothing loops. Said loudly, once.
                self.group_triggered = True
                log.error("%s: order group %s is triggered; orders are refused until it is reset (restart or "
                          "operator)", self.name, self.order_group_id)
            details = {"status_code": outcome.status_code, "code": outcome.code, "detail": outcome.detail[:300]}
            self._close_rejected(order, outcome.status_code, outcome.code, outcome.detail, details)
        elif status in ("unknown", "duplicate"):
            reason = "409 duplicate client_order_id: reading the order back" if status == "duplicate" else outcome.detail
            self._mark_unknown(coid, reason, immediate=status == "duplicate")
        elif status == "not_sent":
            order.not_sent += 1
            if order.not_sent > self.limits["max_not_sent"]:
                self._close_rejected(order, 0, "not_sent", outcome.detail, {"code": "not_sent", "attempts": order.not_sent})
            else:
                order.state = "retry"
                order.reason = "not_sent"
                order.next_ns = now_ns + self.ns["retry_send"] * order.not_sent
        elif status == "rate_limited":
            self._note_429(outcome.retry_after_ms, now_ns)
            if now_ms > order.deadline_ms:
                self._close_rejected(order, 429, "rate_limited", "rate limited until the whale expired",
                                     {"code": "rate_limited", "expired": True})
            else:
                order.state = "retry"
                order.reason = "rate_limited"
                order.next_ns = self._rl_until_ns

    def _on_resolve(self, msg: VenueJobDone) -> None:
        report = msg.result
        if not isinstance(report, ResolveReport):
            log.error("%s: resolve job without a report: %s", self.name, msg.error)
            return
        order = self.open.get(report.client_order_id)
        if order is None or order.state != "resolving":
            return
        order.state = "unknown"
        order.reads += 1
        if report.error:
            self._count("resolve_errors")
            order.next_ns = self._now_ns() + self._backoff_ns(order.reads)
            log.warning("%s: resolving %s failed: %s", self.name, report.client_order_id, report.error)
            return
        self._apply_resolution(order, report)

    def _apply_resolution(self, order: _Open, report: ResolveReport) -> None:
        coid = order.plan.client_order_id
        now_ms, now_ns = self._now_ms(), self._now_ns()
        found = report.found
        if found is not None:
            self.peers.tell_many(NOTIFY, OrderResolved(client_order_id=coid, market=order.plan.market,
                                                       order_id=found.order_id, status=found.status, ts_ms=now_ms))
            self._close_accepted(order, found.order_id, found.fill_count, found.remaining_count, None, None, 0,
                                 {"resolved": True, "status": found.status})
            return
        grace = self.ns["absent_grace"]
        if order.absent_since_ns is None:
            order.absent_since_ns = now_ns
            order.next_ns = now_ns + grace
            return
        if now_ns - order.absent_since_ns < grace:
            order.next_ns = order.absent_since_ns + grace
            return
        # Definitively absent: it was never created.
        if now_ms > order.deadline_ms:
            self._journal_write(lambda j: j.record_outcome(coid, "resolved", now_ms, None,
                                                            {"reason": "not created; whale expired, not resent"}))
            self.peers.tell_many(NOTIFY, OrderResolved(client_order_id=coid, market=order.plan.market,
                                                       order_id=None, status="not_created", ts_ms=now_ms))
            self.open.pop(coid, None)
            self._processing(order.plan.whale_id, FAILED)
            return
        if not self._may_send():
            # Blocked (gate closed, ERROR, not reconciled): keep reading; resend once trading may resume.
            order.next_ns = now_ns + grace
            return
        if order.resends >= self.limits["max_resends"]:
            # Stay blocked rather than risk a second order; poll slowly and say so once.
            order.next_ns = now_ns + self.ns["resolve_backoff_max"]
            if not order.gave_up_logged:
                order.gave_up_logged = True
                log.error("%s: order %s still absent after %d resends; trading stays blocked", self.name, coid, order.resends)
            return
        order.resends += 1
        order.absent_since_ns = None
        self.peers.tell_many(NOTIFY, OrderResolved(client_order_id=coid, market=order.plan.market,
                                                   order_id=None, status="absent_resending", ts_ms=now_ms))
        self._send(coid)

    def _on_reconcile(self, msg: VenueJobDone) -> None:
        self._reconciling = False
        report = msg.result
        if not isinstance(report, ReconcileReport) or report.group_error:
            reason = msg.error if not isinstance(report, ReconcileReport) else report.group_error
            self._count("reconcile_failures")
            log.warning("%s: reconciliation failed: %s", self.name, reason)
            self.tell_supervisor(TradingClientDown(actor=self.name, generation=self.generation, reason=f"reconcile: {reason}"[:300]))
            self._reconcile_due_ns = self._now_ns() + self.ns["reconcile_retry"]
            if isinstance(report, ReconcileReport):
                self._apply_reconcile_reads(report)
            return
        if report.order_group_id != self.order_group_id:
            self.group_triggered = False  # a new group accepts orders again
        self.order_group_id = report.order_group_id
        self._apply_reconcile_reads(report)
        if report.canceled is not None and (report.canceled.canceled or report.canceled.failed):
            log.info("%s: start-up cleanup canceled %d orphaned orders (%d failed)", self.name,
                     len(report.canceled.canceled), len(report.canceled.failed))
        if report.canceled is not None:
            self._cancel_races(report.canceled, "start-up cleanup")
        if report.cancel_error:
            log.warning("%s: start-up cleanup failed: %s", self.name, report.cancel_error)
        self.ready = True
        self._reconcile_due_ns = None
        self._update_watch()
        if self.journal_failed is None:
            self.tell_supervisor(TradingClientReady(actor=self.name, generation=self.generation))
        self._evaluate()

    def _apply_reconcile_reads(self, report: ReconcileReport) -> None:
        for resolved in report.resolved:
            order = self.open.get(resolved.client_order_id)
            if order is not None and order.state in ("unknown", "resolving"):
                order.state = "unknown"
                order.reads += 1
                self._apply_resolution(order, resolved)
        for coid in report.unresolved:
            order = self.open.get(coid)
            if order is not None:
                order.state = "unknown"
                order.next_ns = self._now_ns() + self._backoff_ns(order.reads)

    def _on_cancel(self, msg: VenueJobDone) -> None:
        self._cancel_out = False
        if isinstance(msg.result, CancelReport):
            r = msg.result
            if r.canceled or r.failed:
                log.info("%s: canceled %d resting orders (%d failed)", self.name, len(r.canceled), len(r.failed))
            self._cancel_races(r, "cancel")
        else:
            log.warning("%s: canceling resting orders failed: %s", self.name, msg.error)

    def _cancel_races(self, r: CancelReport, why: str) -> None:
        """F17: orders that filled before our cancel reached them are fills, not errors. The market counts as
        held at once and the state keeper re-reads positions and fills over REST now (the fill stream may lag
        or be down); an order whose 404 could not be explained (``gone``) may have filled too."""
        now_ns = self._now_ns()
        for order in r.filled:
            self._count("cancel_raced_fill")
            self.filled_markets[order.market] = now_ns
            log.info("%s: order %s in %s had filled (%s contracts) before our cancel (%s)", self.name,
                     order.order_id, order.market, format_count(order.fill_count), why)
        if r.gone:
            self._count("cancel_gone")
            log.info("%s: %d orders were gone on cancel (%s): %s", self.name, len(r.gone), why, r.detail)
        if r.filled or r.gone:
            self.peers.tell("state_keeper", SyncAccount(reason=f"{self.name}: cancel raced a fill ({why})"))

    def _on_cleanup_done(self, msg: VenueJobDone) -> None:
        request = self._cleanups.pop(msg.job_id, None)
        if request is None:
            return
        if isinstance(msg.result, CancelReport):
            r = msg.result
            self._cancel_races(r, "cleanup")
            # A filled order was not canceled: it is reported under ``filled`` only.
            reply = CleanupCompleted(request_id=request.request_id, canceled=r.canceled + r.gone, failed=r.failed,
                                     detail=r.detail, filled=r.filled_ids)
        else:
            reply = CleanupCompleted(request_id=request.request_id, canceled=(), failed=(), detail=f"cleanup failed: {msg.error}")
        self.peers.tell(request.reply_to, reply)

    def _on_sync_done(self, msg: VenueJobDone) -> None:
        if isinstance(msg.result, SyncReport):
            self.tell_supervisor(DataSynced(actor=self.name, generation=self.generation, at_ms=self._now_ms()))
        else:
            log.warning("%s: account sync failed: %s", self.name, msg.error)

    # --- deciding -------------------------------------------------------------------------------

    def _context(self) -> Context:
        acct = self.account
        positions: set[str] = set()
        exposure: dict[str, int] = dict(self.paper_exposure)
        resting: set[str] = set()
        inflight: set[str] = {o.plan.market for o in self.open.values()} | set(self.filled_markets)
        daily_pnl = 0
        if acct is not None:
            for p in acct.positions:
                if p.position:
                    positions.add(p.market_ticker)
                    # Paper: the account view's position IS our paper fills (told back by the state keeper),
                    # counted once — the larger figure covers the moment before the view catches up.
                    exposure[p.market_ticker] = max(exposure.get(p.market_ticker, 0), abs(p.cost))
                daily_pnl += p.realized_pnl - p.fees_paid
            resting = {o.market_ticker for o in acct.resting_orders}
            inflight |= acct.unsynced_fill_markets
        if self.ctx.execution == "paper":
            positions |= set(self.filled_markets)
        unknown = sum(1 for o in self.open.values() if o.state in ("unknown", "resolving"))
        evaluated = self.evaluated
        # Read-only views, no copies: nothing changes them until the decisions of this context are made.
        return Context(
            gate_open=self._may_send(),
            rules=self.rules,
            evaluated_whale_ids=evaluated.whale_ids,
            evaluated_trade_ids=evaluated.trade_ids,
            evaluated_sweeps=evaluated.sweeps,
            position_markets=frozenset(positions),
            inflight_markets=frozenset(inflight),
            resting_order_markets=frozenset(resting),
            books=self._books_view,
            exposure=exposure,
            daily_pnl=daily_pnl,
            unknown_outcome_orders=unknown,
        )

    def _bucket(self, now_ns: int) -> Any:
        return _NoTokens() if now_ns < self._rl_until_ns else self.bucket

    def _evaluate(self) -> None:
        if self.journal is None or not (self.queue or self._unjournaled_seen):
            return
        now_ms, now_ns = self._now_ms(), self._now_ns()
        queue = self.queue
        if self.view_wait_until_ns:
            for market, until in list(self.view_wait_until_ns.items()):
                if now_ns >= until:
                    del self.view_wait_until_ns[market]  # no view came: decide on what we have
            queue = tuple(w for w in queue if w.market not in self.view_wait_until_ns)
        decisions: Iterable[Decision] = ()
        if queue:
            decisions, _ = self.strategy.on_queue(queue, self._context(), now_ms, self._bucket(now_ns), now_ms)
        self._act(decisions)

    def _run_cycle(self, now_ns: int) -> None:
        cycle = self.strategy.cycle_seconds
        if not cycle or not self.ready or now_ns < self._next_cycle_ns or self.journal is None:
            return
        self._next_cycle_ns = now_ns + cycle * NS_PER_S
        # The seed's cycle: sync (the state keeper's latest account view) → evaluate → decide → execute.
        now_ms = self._now_ms()
        self._act(self.strategy.on_cycle(self._context(), now_ms, self._bucket(now_ns), now_ms))

    def _act(self, decisions: Iterable[Decision]) -> None:
        """Journal the waiting sightings and these decisions, with the intents of follows, as one transaction;
        then announce the decisions and send the follows. Each intent is durable before its order is sent:
        record_intent commits (the batch so far) before it returns."""
        todo = [d for d in decisions if self._worth_journaling(d)]
        seen = self._take_sightings()
        if not todo and not seen:
            return
        now_ms = self._now_ms()

        def write(journal: Journal) -> None:
            with journal.batch():
                self._record_seen(journal, seen)
                for d in todo:
                    journal.record_decision(d)
                for d in todo:
                    if d.action == FOLLOW and d.plan is not None:
                        journal.record_intent(d.plan, now_ms)

        if not self._journal_write(write):
            return
        for d in todo:
            self._announce(d, now_ms)

    @staticmethod
    def _record_seen(journal: Journal, seen: list[tuple[Whale, int]]) -> None:
        for whale, seen_ms in seen:
            journal.record_whale_seen(whale, seen_ms)

    def _take_sightings(self) -> list[tuple[Whale, int]]:
        """The sightings to journal now. A queued whale waiting for its market's first book view keeps its
        sighting back for a moment, to share the transaction of its decision (at most VIEW_WAIT_NS later)."""
        pending, waiting = self._unjournaled_seen, self.view_wait_until_ns
        if not pending or not waiting:
            self._unjournaled_seen = []
            return pending
        queued = {w.whale_id for w in self.queue}
        now, later = [], []
        for item in pending:
            whale = item[0]
            (later if whale.market in waiting and whale.whale_id in queued else now).append(item)
        self._unjournaled_seen = later
        return now

    def _worth_journaling(self, d: Decision) -> bool:
        """A non-final decision is journaled (and told) only when its reason changes."""
        if d.final:
            return True
        key = (d.action, d.reason)
        if self.last_reason.get(d.whale_id) == key:
            return False
        self.last_reason[d.whale_id] = key
        return True

    def _announce(self, d: Decision, now_ms: int) -> None:
        """After the journal commit: remember, tell, and start the follow (its intent is on disk)."""
        self._count(d.action)
        if d.final:
            self.last_reason.pop(d.whale_id, None)
            sweep = (d.market, d.outcome, d.whale_ts_ms) if d.whale_ts_ms else None
            self.evaluated.add(d.whale_id, d.trade_ids, sweep, d.whale_ts_ms or d.decided_ms or now_ms)
        made = WhaleDecisionMade(decision=d)
        self.peers.tell_many(NOTIFY, made)
        if d.final and "whale_tracker" in self.peers:
            self.peers.tell("whale_tracker", made)
        self.peers.tell_many(NOTIFY, WhaleProcessing(whale_id=d.whale_id, status="processing", action=None, ts_ms=now_ms))
        if d.action == FOLLOW and d.plan is not None:
            self._start_follow(d.plan, d.whale_ts_ms, now_ms)
            return
        self.peers.tell_many(NOTIFY, WhaleProcessing(whale_id=d.whale_id, status="complete", action=seed_action(d.action), ts_ms=now_ms))

    # --- executing ------------------------------------------------------------------------------

    def _start_follow(self, plan: OrderPlan, whale_ts_ms: int, now_ms: int) -> None:
        """Send a follow whose intent _act() has journaled: it is on disk before anything is sent (rule 1/12)."""
        deadline = (whale_ts_ms or now_ms) + self.rules.max_age_ms
        self.open[plan.client_order_id] = _Open(plan=plan, state="sending", deadline_ms=deadline)
        self.peers.tell_many(NOTIFY, OrderSubmitted(client_order_id=plan.client_order_id, whale_id=plan.whale_id,
                                                    market=plan.market, ts_ms=now_ms))
        self._send(plan.client_order_id)

    def _may_send(self) -> bool:
        # A triggered order group refuses every create: don't send orders that must fail (whales wait, non-final,
        # and expire by age unless a new group is made).
        return self.gate_open and self.ready and self.journal_failed is None and not self.group_triggered

    def _send(self, coid: str) -> None:
        order = self.open[coid]
        if self.worker is None or self.journal_failed is not None:
            return
        order.state = "sending"
        order.attempts += 1
        plan, gid = order.plan, self.order_group_id

        def job(venue: Venue) -> PlaceOutcome:
            try:
                return venue.place(plan, gid)
            except Exception as exc:  # noqa: BLE001 - a venue that blows up mid-call: outcome unknown
                return PlaceOutcome(status="unknown", client_order_id=plan.client_order_id, market=plan.market,
                                    code="venue_error", detail=error_text(exc))

        self.worker.submit("place", job)
        self._update_acting()

    def _read_back(self, coid: str) -> None:
        order = self.open[coid]
        if self.worker is None:
            return
        order.state = "resolving"
        market = order.plan.market

        def job(venue: Venue) -> ResolveReport:
            try:
                return ResolveReport(client_order_id=coid, found=venue.find(coid, market))
            except Exception as exc:  # noqa: BLE001 - a failed read is an answer: retry later
                return ResolveReport(client_order_id=coid, found=None, error=error_text(exc))

        self.worker.submit("resolve", job)

    def _mark_unknown(self, coid: str, reason: str, immediate: bool = False) -> None:
        order = self.open[coid]
        now_ms = self._now_ms()
        order.state = "unknown"
        order.reason = reason
        order.absent_since_ns = None
        order.next_ns = self._now_ns() + (0 if immediate else self._backoff_ns(0))
        self._journal_write(lambda j: j.record_outcome(coid, "unknown", now_ms, None, {"reason": reason[:300]}))
        self.peers.tell_many(NOTIFY, OrderOutcomeUnknown(client_order_id=coid, market=order.plan.market,
                                                         reason=reason[:300], ts_ms=now_ms))

    def _close_accepted(self, order: _Open, order_id: str, fill_count: int, remaining: int, avg_price: int | None,
                        avg_fee: int | None, fill_cost: int, extra: dict) -> None:
        plan = order.plan
        now_ms = self._now_ms()
        details = {"fill_count": fill_count, "remaining_count": remaining, **extra}
        self._journal_write(lambda j: j.record_outcome(plan.client_order_id, "accepted", now_ms, order_id, details))
        self.open.pop(plan.client_order_id, None)
        self.known_orders[plan.client_order_id] = order_id
        if fill_count > 0:
            self.filled_markets[plan.market] = self._now_ns()
            if self.ctx.execution == "paper":
                self.paper_exposure[plan.market] = self.paper_exposure.get(plan.market, 0) + fill_cost
        self.peers.tell_many(NOTIFY, OrderAccepted(client_order_id=plan.client_order_id, order_id=order_id,
                                                   market=plan.market, fill_count=fill_count, remaining_count=remaining,
                                                   average_fill_price=avg_price, average_fee_paid=avg_fee, ts_ms=now_ms))
        self._processing(plan.whale_id, FOLLOWED)

    def _paper_fills(self, outcome: PlaceOutcome) -> None:
        """Paper execution: give the (journaled) fills and the new position to the state keeper."""
        for fill in outcome.fills:
            self.peers.tell("state_keeper", fill)
        if outcome.position is not None:
            self.peers.tell("state_keeper", outcome.position)

    def _close_rejected(self, order: _Open, status_code: int, code: str, detail: str, details: dict) -> None:
        plan = order.plan
        now_ms = self._now_ms()
        self._journal_write(lambda j: j.record_outcome(plan.client_order_id, "rejected", now_ms, None, details))
        self.open.pop(plan.client_order_id, None)
        self.peers.tell_many(NOTIFY, OrderRejected(client_order_id=plan.client_order_id, market=plan.market,
                                                   status_code=status_code, code=code, detail=detail[:300], ts_ms=now_ms))
        self._processing(plan.whale_id, FAILED)

    def _processing(self, whale_id: str, action: str) -> None:
        self.peers.tell_many(NOTIFY, WhaleProcessing(whale_id=whale_id, status="complete", action=action, ts_ms=self._now_ms()))

    def _note_429(self, retry_after_ms: int | None, now_ns: int) -> None:
        self._rl_attempt += 1
        base = self.ns["rate_backoff"] * (2 ** (self._rl_attempt - 1))
        delay_ns = int(self._rng.uniform(0.5, 1.0) * min(self.ns["rate_backoff_max"], base))  # jitter: no burst
        if retry_after_ms is not None:
            delay_ns = max(delay_ns, retry_after_ms * NS_PER_MS)
        self._rl_until_ns = max(self._rl_until_ns, now_ns + delay_ns)

    def _backoff_ns(self, reads: int) -> int:
        return min(self.ns["resolve_backoff_max"], self.ns["resolve_backoff"] * (2 ** min(reads, 16)))

    def _update_acting(self) -> None:
        acting = any(o.state == "sending" for o in self.open.values())
        if acting != self._acting:
            self._acting = acting
            msg = ExecutionStarted if acting else ExecutionFinished
            self.tell_supervisor(msg(actor=self.name, generation=self.generation))

    def _start_reconcile(self) -> None:
        if self.worker is None:
            return
        must_restore = self._paper_restore is not None
        if must_restore and not self._restoring:
            self._submit_restore()  # queued first: the worker runs it before the reconcile below
        self._reconciling = True
        self._reconcile_due_ns = None
        pending = tuple((coid, o.plan.market) for coid, o in self.open.items() if o.state in ("unknown", "resolving"))
        for coid, _ in pending:
            self.open[coid].state = "resolving"
        settings = self.ctx.settings
        limit = settings.order_group_contracts_limit
        cleanup = bool(settings.cleanup_on_startup)
        existing_gid = self.order_group_id

        def job(venue: Venue) -> ReconcileReport:
            if must_restore and not getattr(venue, "restored", False):
                # Paper, and this venue's account was not rebuilt (the restore failed, or the venue was made
                # after it): reading pending intents against an empty account would resend filled orders.
                return ReconcileReport(resolved=(), unresolved=tuple(c for c, _ in pending),
                                       order_group_id=existing_gid, group_error="paper account not restored",
                                       canceled=None, cancel_error="")
            resolved, unresolved = [], []
            for coid, market in pending:
                try:
                    resolved.append(ResolveReport(client_order_id=coid, found=venue.find(coid, market)))
                except VenueError:
                    unresolved.append(coid)
            gid, group_error = existing_gid, ""
            if gid is None:
                try:
                    gid = venue.create_order_group(limit)
                except VenueError as exc:
                    group_error = str(exc)[:300]
            canceled, cancel_error = None, ""
            if cleanup and not group_error:
                try:
                    orphans = tuple((o.order_id, o.market) for o in venue.resting_orders() if gid is None or o.order_group_id != gid)
                    canceled = venue.cancel(orphans)
                except VenueError as exc:
                    cancel_error = str(exc)[:300]
            return ReconcileReport(resolved=tuple(resolved), unresolved=tuple(unresolved), order_group_id=gid,
                                   group_error=group_error, canceled=canceled, cancel_error=cancel_error)

        self.worker.submit("reconcile", job)

    def _submit_restore(self) -> None:
        """Paper execution: rebuild the in-process paper account from the journaled paper fills."""
        if self.worker is None or self._paper_restore is None:
            return
        fills = self._paper_restore

        def job(venue: Venue) -> Any:
            restore = getattr(venue, "restore", None)
            if restore is None:
                raise VenueError(f"the {venue.name} venue cannot restore a paper account")
            return restore(fills)  # sets venue.restored: the reconcile behind it checks that

        self._restoring = True
        self.worker.submit("restore", job)

    def _on_restore(self, msg: VenueJobDone) -> None:
        self._restoring = False
        report = msg.result
        if not isinstance(report, PaperRestore):
            # The reconcile queued behind it refuses too; its retry restores again first.
            self._count("paper_restore_failures")
            log.error("%s: restoring the paper account failed: %s", self.name, msg.error)
            return
        self._paper_restore = None
        now_ms, now_ns = self._now_ms(), self._now_ns()
        for market, cost in report.fill_cost:
            # As if our orders had just filled here: held (skip-if-positioned) and their cost counted.
            self.paper_exposure[market] = self.paper_exposure.get(market, 0) + cost
            self.filled_markets[market] = now_ns
        for p in report.positions:
            self.peers.tell("state_keeper", PositionChanged(
                market_ticker=p.ticker, position=p.position, cost=p.exposure, realized_pnl=p.realized_pnl,
                fees_paid=p.fees_paid, source="paper", ts_ms=now_ms))
        self.counts["paper_fills_restored"] = report.applied
        self.counts["paper_fills_skipped"] = report.skipped
        (log.warning if report.skipped else log.info)(
            "%s: paper account restored from the journal: %d fills, %d orders, %d open positions, %d fills skipped",
            self.name, report.applied, report.orders, len(report.positions), report.skipped)

    def _cancel_resting(self, reason: str) -> None:
        if self.worker is None or self._cancel_out:
            return
        self._cancel_out = True
        log.info("%s: canceling our resting orders (%s)", self.name, reason)
        self.worker.submit("cancel", lambda v: v.cancel(tuple((o.order_id, o.market) for o in v.resting_orders())))

    # --- watching books -------------------------------------------------------------------------

    def _update_watch(self) -> None:
        if self.strategy.follows_whales:
            markets = frozenset(w.market for w in self.queue)
        else:
            markets = frozenset(self.ctx.market_tickers)
        markets |= frozenset(o.plan.market for o in self.open.values())
        if markets != self.watched:
            deadline = self._now_ns() + VIEW_WAIT_NS
            for market in markets - self.watched:
                if market not in self.books:
                    self.view_wait_until_ns[market] = deadline
            self.watched = markets
            self.peers.tell("state_keeper", WatchBooks(market_tickers=markets))
            for market in list(self.books):
                if market not in markets:
                    del self.books[market]
                    self.views.pop(market, None)
        known = set(self.ctx.market_tickers) | set(self.books) | self.requested_markets
        missing = frozenset(m for m in markets if m not in known)
        if missing:
            self.requested_markets |= missing
            self.peers.tell("orderbook_feed", WatchMarkets(market_tickers=missing, reason="whale in a market without a book"))

    # --- journal --------------------------------------------------------------------------------

    def _journal_write(self, write: Callable[[Journal], Any]) -> bool:
        if self.journal is None or self.journal_failed is not None:
            return False
        try:
            write(self.journal)
        except JournalError as exc:
            self._journal_down(error_text(exc))
            return False
        return True

    def _journal_down(self, text: str) -> None:
        self.journal_failed = text
        log.error("%s: journal write failed, trading stops: %s", self.name, text)
        # fatal: this incarnation cannot trade again; the supervisor goes to ERROR and restarts us on recovery.
        self.tell_supervisor(TradingClientDown(actor=self.name, generation=self.generation,
                                               reason=f"journal: {text}"[:300], fatal=True))
        self._cancel_resting("journal failure")

    # --- stats ----------------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats.update(
            ready=self.ready,
            gate_open=self.gate_open,
            journal_failed=self.journal_failed,
            order_group_id=self.order_group_id,
            order_group_triggered=self.group_triggered,
            open_orders={coid: o.state for coid, o in self.open.items()},
            unknown_outcomes=sum(1 for o in self.open.values() if o.state in ("unknown", "resolving")),
            rate_limited_for_ms=max(0, (self._rl_until_ns - self._now_ns()) // NS_PER_MS) if hasattr(self, "ctx") else 0,
            queue=len(self.queue),
            exposure=dict(self._context().exposure) if hasattr(self, "rules") else {},  # market -> cost, risk limits
            evaluated_remembered=len(self.evaluated) if hasattr(self, "evaluated") else 0,
            watched=sorted(self.watched),
            counts=dict(self.counts),
            strategy=getattr(getattr(self, "strategy", None), "name", None),
        )
        return stats
