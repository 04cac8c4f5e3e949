"""The broadcaster: keeps the latest of everything and fans it out without ever stalling the system.

It keeps: the supervisor's report (actors), the system state and trading gate, FeedStatus per feed, the
latest StateChanged, the whale queue, recent decisions (bounded), whale processing, order counters, recent
state transitions and console activity. ``status_snapshot()`` turns that into the JSON-ready dict behind
``/v3/status`` and the terminal table (``GetStatus``, asked by main.py and tests only).

Fan-out:
- In-process subscribers (``Subscribe`` with an ActorRef) get the original immutable messages. While a
  subscriber's inbox is at ``max_inbox`` or more, messages wait in its buffer: latest-wins kinds keep only
  the newest (older ones counted as conflated), the others are appended up to ``max_pending`` (the oldest
  dropped and counted). Buffers are flushed on Tick. A dead subscriber is removed. Nothing here blocks.
- The status API (``actors.status_api.StatusServer``) runs in a thread this actor owns (started in setup,
  stopped in cleanup); it gets fresh JSON-ready payloads through a thread-safe handoff.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import pykka

from kalshi.units import format_count, format_money, format_price
from kalshi.wire import bodies as wire_bodies
from kalshi.wire import frames as wire_frames
from messages.account import OrderUpdated, PositionChanged
from messages.base import Message
from messages.control import SupervisorReport, SystemStateChanged, Tick, TradingGateChanged
from messages.feed import FeedStatus
from messages.state import StateChanged
from messages.status import CleanupHttpRequested, GetStatus, Subscribe, SystemActivity, Unsubscribe
from messages.whale import (
    CleanupCompleted,
    CleanupRequested,
    Decision,
    OrderAccepted,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderResolved,
    OrderSubmitted,
    WhaleDecisionMade,
    WhaleProcessing,
    WhaleQueueUpdated,
)

from .base import SupervisedActor, handles, mailbox_depth
from .context import SystemContext

log = logging.getLogger(__name__)

ACCOUNT_CHANGES = frozenset({"balance", "positions", "orders", "fills", "sync"})
_NS_PER_MS = 1_000_000


def money(units: int) -> str:
    return format_money(units, 4)


def conflation_key(msg: Message) -> Any:
    """Latest-wins messages have a key (a newer one replaces the older); None = append."""
    kind = type(msg)
    if kind in (StateChanged, WhaleQueueUpdated, SupervisorReport):
        return kind
    if kind is FeedStatus:
        return (kind, msg.feed)  # type: ignore[attr-defined]
    return None


@dataclass
class Subscriber:
    name: str
    ref: pykka.ActorRef[Any]
    max_inbox: int
    max_pending: int
    pending: OrderedDict[Any, Message] = field(default_factory=OrderedDict)
    appended: int = 0
    seq: int = 0
    delivered: int = 0
    conflated: int = 0
    dropped: int = 0

    def offer(self, msg: Message) -> bool:
        """Deliver or buffer ``msg``; False when the subscriber is dead."""
        if not self.pending and mailbox_depth(self.ref) < self.max_inbox:
            return self._tell(msg)
        key = conflation_key(msg)
        if key is not None:
            if self.pending.pop(key, None) is not None:
                self.conflated += 1
            self.pending[key] = msg
        else:
            self.seq += 1
            self.pending[("append", self.seq)] = msg
            self.appended += 1
            if self.appended > self.max_pending:
                for k in self.pending:
                    if type(k) is tuple and k[0] == "append":
                        del self.pending[k]
                        break
                self.appended -= 1
                self.dropped += 1
        return True

    def flush(self) -> bool:
        """Deliver buffered messages while the inbox has room; False when the subscriber is dead."""
        while self.pending and mailbox_depth(self.ref) < self.max_inbox:
            key, msg = self.pending.popitem(last=False)
            if type(key) is tuple and key[0] == "append":
                self.appended -= 1
            if not self._tell(msg):
                return False
        return True

    def _tell(self, msg: Message) -> bool:
        try:
            self.ref.tell(msg)
        except pykka.ActorDeadError:
            return False
        self.delivered += 1
        return True


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "action": d.action,
        "reason": d.reason,
        "whale_id": d.whale_id,
        "market_ticker": d.market,
        "final": d.final,
        "outcome": d.outcome,
        "side": d.side,
        "price_dollars": format_price(d.price) if d.price else None,
        "count": format_count(d.count) if d.count else None,
        "client_order_id": d.client_order_id,
        "whale_timestamp_ms": d.whale_ts_ms,
        "decided_ms": d.decided_ms,
    }


def position_json(p: PositionChanged) -> dict[str, Any]:
    return {
        "market_ticker": p.market_ticker,
        "position": format_count(p.position),
        "side": "yes" if p.position > 0 else "no",
        "cost_dollars": money(p.cost),
        "realized_pnl_dollars": money(p.realized_pnl),
        "fees_paid_dollars": money(p.fees_paid),
        "source": p.source,
    }


def order_json(o: OrderUpdated) -> dict[str, Any]:
    return {
        "order_id": o.order_id,
        "client_order_id": o.client_order_id,
        "market_ticker": o.market_ticker,
        "status": o.status,
        "book_side": o.book_side,
        "outcome_side": o.outcome_side,
        "yes_price_dollars": format_price(o.yes_price),
        "fill_count": format_count(o.fill_count),
        "remaining_count": format_count(o.remaining_count),
        "initial_count": format_count(o.initial_count),
        "order_group_id": o.order_group_id,
    }


class Broadcaster(SupervisedActor):
    """Config keys (optional): ``context`` (SystemContext: status_host/port/token from its settings),
    ``status_api`` (True: run the HTTP/WebSocket server), ``status_host``/``status_port``/``status_token``
    (override the settings), ``executor`` (peer name, default whale_executor), ``recent_decisions`` (200),
    ``history_size`` (100), ``status_interval_ms`` (1000: trader_status period), ``cleanup_timeout_s`` (15),
    ``ping_interval_s`` (15), ``max_ws_clients`` (64)."""

    def setup(self) -> None:
        cfg = self.config
        ctx = cfg.get("context")
        self.context: SystemContext | None = ctx if isinstance(ctx, SystemContext) else None
        settings = self.context.settings if self.context is not None else None
        self.executor_name: str = cfg.get("executor", "whale_executor")
        self.status_interval_ns = int(cfg.get("status_interval_ms", 1000)) * _NS_PER_MS
        self.started_wall_ms = self._wall_ms()
        self.now_ns = 0
        self.now_wall_ms = self.started_wall_ms
        self.last_status_ns: int | None = None

        # Latest of everything
        self.state = "STARTUP"
        self.state_reason = ""
        self.degraded = False
        self.gate_open = False
        self.gate_reason = "not opened yet"
        self.report: SupervisorReport | None = None
        self.feeds: dict[str, FeedStatus] = {}
        self.state_changed: StateChanged | None = None
        self.whale_queue: WhaleQueueUpdated | None = None
        self.decisions: deque[Decision] = deque(maxlen=int(cfg.get("recent_decisions", 200)))
        self.decision_counts: Counter[str] = Counter()
        self.processing: WhaleProcessing | None = None
        self.orders = {"submitted": 0, "accepted": 0, "filled": 0, "rejected": 0, "unknown": 0, "resolved": 0}
        self.transitions: deque[dict[str, Any]] = deque(maxlen=int(cfg.get("history_size", 100)))
        self.activity: deque[dict[str, Any]] = deque(maxlen=100)
        self.last_cleanup: dict[str, Any] | None = None
        self.cleanups_pending: set[int] = set()
        self.subscribers: dict[str, Subscriber] = {}
        self.removed_subscribers = 0
        self.dirty = True

        # The status API
        self.server = None
        self.status_address: tuple[str, int] | None = None
        if cfg.get("status_api", True):
            from .status_api import StatusServer

            host = cfg.get("status_host", getattr(settings, "status_host", "127.0.0.1") if settings else "127.0.0.1")
            port = cfg.get("status_port", getattr(settings, "status_port", 8005) if settings else 8005)
            token = cfg.get("status_token", getattr(settings, "status_token", "") if settings else "")
            ref = self.actor_ref

            def request_cleanup(request_id: int, orphaned_only: bool) -> bool:
                try:
                    ref.tell(CleanupHttpRequested(request_id=request_id, orphaned_only=orphaned_only))
                    return True
                except pykka.ActorDeadError:
                    return False

            self.server = StatusServer(
                host,
                int(port),
                token=token,
                request_cleanup=request_cleanup,
                cleanup_timeout_s=float(cfg.get("cleanup_timeout_s", 15.0)),
                ping_interval_s=float(cfg.get("ping_interval_s", 15.0)),
                max_clients=int(cfg.get("max_ws_clients", 64)),
                name=f"{self.name}-status-api",
            )
            self.status_address = self.server.start()
            log.info("status API on http://%s:%d/v3/status", *self.status_address)
            self._publish("trader_status", self.trader_status_json())  # late joiners always get one
            self._push_snapshot()

    def cleanup(self) -> None:
        server = getattr(self, "server", None)
        if server is not None and not server.stop(timeout_s=4.0):
            log.warning("%s: status API thread did not stop in time", self.name)

    # --- time ------------------------------------------------------------------------------------

    def _wall_ms(self) -> int:
        if self.context is not None:
            return self.context.wall_ms()
        from .context import wall_ms

        return wall_ms()

    def uptime_s(self) -> float:
        return round(max(0, self._wall_ms() - self.started_wall_ms) / 1000, 3)

    @handles(Tick)
    def on_tick(self, message: Tick) -> None:
        super().on_tick(message)
        self.now_ns = message.now_mono_ns
        self.now_wall_ms = message.now_wall_ms
        for name, sub in list(self.subscribers.items()):
            if sub.pending and not sub.flush():
                self._drop_subscriber(name)
        if self.last_status_ns is None or self.now_ns - self.last_status_ns >= self.status_interval_ns:
            self.last_status_ns = self.now_ns
            self.dirty = True
            self._publish("trader_status", self.trader_status_json())
        if self.dirty:
            self._push_snapshot()

    # --- fan-out -----------------------------------------------------------------------------------

    def _fan_out(self, msg: Message) -> None:
        self.dirty = True
        for name, sub in list(self.subscribers.items()):
            if not sub.offer(msg):
                self._drop_subscriber(name)

    def _drop_subscriber(self, name: str) -> None:
        self.subscribers.pop(name, None)
        self.removed_subscribers += 1
        log.info("%s: subscriber %s is gone; removed", self.name, name)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        if self.server is not None:
            self.server.publish(kind, data)

    def _push_snapshot(self) -> None:
        self.dirty = False
        if self.server is not None:
            self.server.update_snapshot(self.status_snapshot())

    def _activity(self, activity_type: str, text: str, at_ms: int, level: str = "info",
                  metadata: dict[str, Any] | None = None) -> None:
        data = {
            "activity_type": activity_type,
            "message": text,
            "level": level,
            "metadata": metadata or {},
            "timestamp": at_ms / 1000,
            "timestamp_ms": at_ms,
        }
        self.activity.append(data)
        self._publish("system_activity", data)

    @handles(Subscribe)
    def on_subscribe(self, message: Subscribe) -> None:
        self.subscribers[message.subscriber] = Subscriber(
            message.subscriber, message.ref, max(1, message.max_inbox), max(1, message.max_pending)
        )

    @handles(Unsubscribe)
    def on_unsubscribe(self, message: Unsubscribe) -> None:
        self.subscribers.pop(message.subscriber, None)

    @handles(GetStatus)
    def on_get_status(self, message: GetStatus) -> dict[str, Any]:
        return self.status_snapshot()

    # --- inputs -----------------------------------------------------------------------------------------

    @handles(SupervisorReport)
    def on_report(self, message: SupervisorReport) -> None:
        self.report = message
        self.state, self.state_reason, self.degraded = message.state, message.state_reason, message.degraded
        self.gate_open = message.gate_open
        self._fan_out(message)

    @handles(SystemStateChanged)
    def on_state(self, message: SystemStateChanged) -> None:
        self.state, self.state_reason, self.degraded = message.state, message.reason, message.degraded
        entry = {
            "from_state": message.previous,
            "to_state": message.state,
            "reason": message.reason,
            "degraded": message.degraded,
            "timestamp": message.at_ms / 1000,
            "timestamp_ms": message.at_ms,
        }
        self.transitions.append(entry)
        self._activity(
            "state_transition", f"{message.previous} → {message.state}: {message.reason}", message.at_ms,
            metadata=entry,
        )
        self._fan_out(message)
        self._push_snapshot()  # health must follow the state at once

    @handles(TradingGateChanged)
    def on_gate(self, message: TradingGateChanged) -> None:
        self.gate_open, self.gate_reason = message.open, message.reason
        self._activity("health_check", f"trading gate {'open' if message.open else 'closed'}: {message.reason}",
                       self.now_wall_ms, metadata={"gate_open": message.open})
        self._fan_out(message)

    @handles(FeedStatus)
    def on_feed_status(self, message: FeedStatus) -> None:
        self.feeds[message.feed] = message
        self._fan_out(message)

    @handles(StateChanged)
    def on_state_changed(self, message: StateChanged) -> None:
        self.state_changed = message
        if message.changed & ACCOUNT_CHANGES:
            self._publish("trading_state", self.trading_state_json())
        self._fan_out(message)

    @handles(WhaleQueueUpdated)
    def on_whale_queue(self, message: WhaleQueueUpdated) -> None:
        self.whale_queue = message
        self._publish("whale_queue", self.whale_queue_json())
        self._fan_out(message)

    @handles(WhaleDecisionMade)
    def on_decision(self, message: WhaleDecisionMade) -> None:
        d = message.decision
        self.decisions.append(d)
        self.decision_counts[d.action] += 1
        at_ms = d.decided_ms or self.now_wall_ms
        kind = "whale_follow" if d.action == "follow" else "trading_decision"
        self._activity(kind, f"{d.action} {d.market} ({d.reason})", at_ms, metadata=decision_json(d))
        self._fan_out(message)

    @handles(WhaleProcessing)
    def on_processing(self, message: WhaleProcessing) -> None:
        self.processing = message
        action = "followed" if message.action == "follow" else message.action
        self._publish("whale_processing", {
            "whale_id": message.whale_id,
            "status": message.status,
            "action": action,
            "timestamp": message.ts_ms / 1000,
        })
        self._fan_out(message)

    @handles(OrderSubmitted)
    def on_order_submitted(self, message: OrderSubmitted) -> None:
        self.orders["submitted"] += 1
        self._activity("operation", f"order {message.client_order_id} sent on {message.market}", message.ts_ms)
        self._fan_out(message)

    @handles(OrderAccepted)
    def on_order_accepted(self, message: OrderAccepted) -> None:
        self.orders["accepted"] += 1
        if message.fill_count > 0:
            self.orders["filled"] += 1
        self._activity(
            "operation",
            f"order {message.client_order_id} accepted on {message.market}: filled {format_count(message.fill_count)}",
            message.ts_ms,
        )
        self._fan_out(message)

    @handles(OrderRejected)
    def on_order_rejected(self, message: OrderRejected) -> None:
        self.orders["rejected"] += 1
        self._activity("trading_error", f"order {message.client_order_id} rejected ({message.status_code} "
                       f"{message.code}): {message.detail}", message.ts_ms, level="warning")
        self._fan_out(message)

    @handles(OrderOutcomeUnknown)
    def on_order_unknown(self, message: OrderOutcomeUnknown) -> None:
        self.orders["unknown"] += 1
        self._activity("trading_error", f"order {message.client_order_id} outcome unknown: {message.reason}",
                       message.ts_ms, level="warning")
        self._fan_out(message)

    @handles(OrderResolved)
    def on_order_resolved(self, message: OrderResolved) -> None:
        self.orders["resolved"] += 1
        self._activity("operation", f"order {message.client_order_id} resolved: {message.status}", message.ts_ms)
        self._fan_out(message)

    @handles(SystemActivity)
    def on_system_activity(self, message: SystemActivity) -> None:
        self._activity(message.activity_type, message.message, message.at_ms, message.level,
                       dict(message.metadata))
        self._fan_out(message)

    # --- cleanup round trip (status API → executor → status API) -----------------------------------

    @handles(CleanupHttpRequested)
    def on_cleanup_requested(self, message: CleanupHttpRequested) -> None:
        request = CleanupRequested(
            request_id=message.request_id, orphaned_only=message.orphaned_only, reply_to=self.name
        )
        if not self.peers.tell(self.executor_name, request):
            if self.server is not None:
                self.server.cleanup_done(message.request_id, 503, {"error": "the whale executor is not running"})
            return
        self.cleanups_pending.add(message.request_id)
        if len(self.cleanups_pending) > 100:  # unanswered ones timed out long ago at the HTTP side
            self.cleanups_pending.discard(min(self.cleanups_pending))

    @handles(CleanupCompleted)
    def on_cleanup_completed(self, message: CleanupCompleted) -> None:
        body = {
            "request_id": message.request_id,
            "canceled": list(message.canceled),
            "failed": list(message.failed),
            "filled": list(message.filled),  # filled before the cancel reached them (F17): not canceled
            "canceled_count": len(message.canceled),
            "failed_count": len(message.failed),
            "filled_count": len(message.filled),
            "detail": message.detail,
        }
        self.last_cleanup = body
        filled = f", {len(message.filled)} had filled" if message.filled else ""
        self._activity("cleanup", f"cleanup: {len(message.canceled)} canceled, {len(message.failed)} failed{filled}",
                       self.now_wall_ms, metadata=body)
        if message.request_id in self.cleanups_pending:
            self.cleanups_pending.discard(message.request_id)
            if self.server is not None:
                self.server.cleanup_done(message.request_id, 200, body)
        self._fan_out(message)

    # --- JSON views ---------------------------------------------------------------------------------------

    def trader_status_json(self) -> dict[str, Any]:
        sc = self.state_changed
        return {
            "state": self.state,
            "state_reason": self.state_reason,
            "degraded": self.degraded,
            "trading_gate": {"open": self.gate_open, "reason": self.gate_reason},
            "uptime_s": self.uptime_s(),
            "state_version": sc.version if sc else 0,
            "metrics": {
                "orders": dict(self.orders),
                "decisions": dict(self.decision_counts),
                "whales_in_queue": len(self.whale_queue.queue) if self.whale_queue else 0,
                "feeds_connected": sum(1 for f in self.feeds.values() if f.connected),
                "feeds": len(self.feeds),
            },
            "timestamp": self.now_wall_ms / 1000,
        }

    def trading_state_json(self) -> dict[str, Any]:
        sc = self.state_changed
        if sc is None:
            return {"version": 0, "balance": None, "portfolio_value": None, "positions": [], "orders": [],
                    "synced_at_ms": 0, "unsynced_fill_markets": [], "timestamp": self.now_wall_ms / 1000}
        a = sc.account
        return {
            "version": sc.version,
            "balance": money(a.balance),
            "portfolio_value": money(a.portfolio_value),
            "positions": [position_json(p) for p in a.positions],
            "orders": [order_json(o) for o in a.resting_orders],
            "position_count": len(a.positions),
            "order_count": len(a.resting_orders),
            "synced_at_ms": a.synced_at_ms,
            "unsynced_fill_markets": sorted(a.unsynced_fill_markets),
            "timestamp": sc.at_ms / 1000,
        }

    def whale_queue_json(self) -> dict[str, Any]:
        wq = self.whale_queue
        if wq is None:
            return {"queue": [], "stats": None, "timestamp": self.now_wall_ms / 1000}
        return {
            "queue": [w.to_json(wq.ts_ms) for w in wq.queue],
            "stats": wq.stats.to_json(),
            "timestamp": wq.ts_ms / 1000,
        }

    def status_snapshot(self) -> dict[str, Any]:
        """Every section /v3/status and the terminal table show; plain JSON types, money as strings."""
        actors: dict[str, Any] = {}
        if self.report is not None:
            for c in self.report.children:
                actors[c.name] = {
                    "alive": c.alive,
                    "status": c.status,
                    "generation": c.generation,
                    "restarts": c.restarts,
                    "mailbox_depth": c.mailbox_depth,
                    "last_error": c.last_failure,
                }
        feeds = {
            name: {
                "connected": f.connected,
                "state": f.state,
                "conn_id": f.conn_id,
                "messages": f.messages,
                "gaps": f.gaps,
                "reconnects": f.reconnects,
                "last_message_age_ms": f.last_message_age_ms,
            }
            for name, f in sorted(self.feeds.items())
        }
        wq = self.whale_queue
        whales: dict[str, Any] = {"trades_seen": 0, "trades_discarded": 0, "duplicates": 0, "queue_size": 0,
                                  "queue": []}
        if wq is not None:
            whales = {**wq.stats.to_json(), "queue": [w.to_json(wq.ts_ms) for w in wq.queue]}
        sc = self.state_changed
        account = sc.account if sc is not None else None
        books = []
        if sc is not None:
            books = [
                {
                    "market_ticker": b.market_ticker,
                    "valid": b.valid,
                    "best_yes_bid": format_price(b.best_yes_bid) if b.best_yes_bid is not None else None,
                    "best_yes_ask": format_price(b.best_yes_ask) if b.best_yes_ask is not None else None,
                    "yes_levels": b.yes_levels,
                    "no_levels": b.no_levels,
                    "last_update_ms": b.last_update_ms,
                }
                for b in sc.books
            ]
        report = self.report
        return {
            "state": self.state,
            "state_reason": self.state_reason,
            "degraded": self.degraded,
            "trading_gate": {"open": self.gate_open, "reason": self.gate_reason},
            "uptime_s": self.uptime_s(),
            "at_ms": self.now_wall_ms,
            "supervisor": {
                "total_restarts": report.total_restarts if report else 0,
                "restarts_in_window": report.restarts_in_window if report else 0,
            },
            "actors": actors,
            "feeds": feeds,
            "whales": whales,
            "decisions": dict(self.decision_counts),
            "orders": dict(self.orders),
            "state_version": sc.version if sc else 0,
            "balance": money(account.balance) if account else None,
            "portfolio_value": money(account.portfolio_value) if account else None,
            "positions": [position_json(p) for p in account.positions] if account else [],
            "open_orders": [order_json(o) for o in account.resting_orders] if account else [],
            "synced_at_ms": account.synced_at_ms if account else 0,
            "unsynced_fill_markets": sorted(account.unsynced_fill_markets) if account else [],
            "books": books,
            "recent_decisions": [decision_json(d) for d in reversed(self.decisions)][:50],
            "whale_processing": (
                {"whale_id": self.processing.whale_id, "status": self.processing.status,
                 "action": self.processing.action, "timestamp_ms": self.processing.ts_ms}
                if self.processing else None
            ),
            "recent_transitions": list(self.transitions)[-20:],
            "last_cleanup": self.last_cleanup,
            # Kalshi schema drift: deprecated/legacy fields the decoders met (frames: seen; bodies: relied on).
            "schema_drift": {
                "ws": wire_frames.deprecated_fields_seen(),
                "rest": wire_bodies.deprecated_fields_seen(),
            },
            "status_address": list(self.status_address) if self.status_address else None,
            "subscribers": {
                name: {"delivered": s.delivered, "pending": len(s.pending), "conflated": s.conflated,
                       "dropped": s.dropped}
                for name, s in self.subscribers.items()
            },
        }

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats.update(
            subscribers=len(self.subscribers),
            removed_subscribers=self.removed_subscribers,
            status_address=self.status_address,
            status_clients=self.server.client_count if self.server is not None else 0,
        )
        return stats
