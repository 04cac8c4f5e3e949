"""Whale values and the messages of the whale tracker, the whale executor and order execution.

Values (``Whale``, ``QueueStats``, ``OrderPlan``, ``Decision``) are frozen, slotted dataclasses of
immutable fields; they travel inside the messages below and are what ``actors.whale_rules``
computes. Money and prices are integers in $0.0001, counts in 0.01 contract (``kalshi.units``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from kalshi.units import (
    PRICE_ONE,
    format_count,
    format_money,
    format_price,
    price_complement,
)

from .base import Message, message

__all__ = [
    "OUTCOMES",
    "ACTIONS",
    "FINAL_ACTIONS",
    "NOT_FINAL_ACTIONS",
    "FOLLOW",
    "SKIPPED_GATE",
    "SKIPPED_AGE",
    "SKIPPED_POSITION",
    "SKIPPED_ORDERS",
    "SKIPPED_BOOK_STALE",
    "SKIPPED_CHASED",
    "SKIPPED_DEPTH",
    "SKIPPED_RISK",
    "SKIPPED_UNKNOWN_OUTCOME",
    "RATE_LIMITED",
    "Whale",
    "QueueStats",
    "OrderPlan",
    "Decision",
    "WhaleDetected",
    "WhaleQueueUpdated",
    "WhaleDecisionMade",
    "WhaleProcessing",
    "SubmitOrder",
    "OrderSubmitted",
    "OrderAccepted",
    "OrderRejected",
    "OrderOutcomeUnknown",
    "OrderResolved",
]

OUTCOMES = ("yes", "no")

# Decision actions. "follow" carries an order plan; the others say why not.
FOLLOW = "follow"
SKIPPED_GATE = "skipped_gate"
SKIPPED_AGE = "skipped_age"
SKIPPED_POSITION = "skipped_position"
SKIPPED_ORDERS = "skipped_orders"
SKIPPED_BOOK_STALE = "skipped_book_stale"
SKIPPED_CHASED = "skipped_chased"
SKIPPED_DEPTH = "skipped_depth"
SKIPPED_RISK = "skipped_risk"
SKIPPED_UNKNOWN_OUTCOME = "skipped_unknown_outcome"
RATE_LIMITED = "rate_limited"

ACTIONS = (
    FOLLOW,
    SKIPPED_GATE,
    SKIPPED_AGE,
    SKIPPED_POSITION,
    SKIPPED_ORDERS,
    SKIPPED_BOOK_STALE,
    SKIPPED_CHASED,
    SKIPPED_DEPTH,
    SKIPPED_RISK,
    SKIPPED_UNKNOWN_OUTCOME,
    RATE_LIMITED,
)
# A final decision closes the whale for good (it is never evaluated again, even after a restart).
# The others describe a passing condition: the whale stays queued and is retried until it ages out.
NOT_FINAL_ACTIONS = frozenset({SKIPPED_GATE, SKIPPED_BOOK_STALE, SKIPPED_UNKNOWN_OUTCOME, RATE_LIMITED})
FINAL_ACTIONS = frozenset(ACTIONS) - NOT_FINAL_ACTIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class Whale:
    """One taker order seen on the public tape: a single print, or the prints of one sweep.

    ``price_volume`` is Σ count × price over the prints (units of $0.000001 × 100), kept so the
    volume-weighted price is exact; ``cost`` is that in money units, rounded up.
    """

    whale_id: str
    market: str
    side: str  # the outcome the taker bought: "yes" | "no"
    count: int
    price_volume: int
    cost: int
    payout: int
    whale_size: int
    min_price: int  # the taker's best print (first level of the sweep)
    max_price: int  # the taker's worst print
    levels: int  # distinct prices walked
    trade_ids: tuple[str, ...]
    ts_ms: int

    @property
    def sweep_key(self) -> tuple[str, str, int]:
        """What makes prints one taker order: (market, side, ts_ms). Unlike the whale id it does not
        depend on which print arrived first, so it survives a restart and a reordered backfill."""
        return (self.market, self.side, self.ts_ms)

    @property
    def average_price(self) -> Fraction:
        """The exact volume-weighted price of the outcome the taker bought."""
        return Fraction(self.price_volume, self.count)

    @property
    def average_price_units(self) -> int:
        """The volume-weighted price rounded half-up to $0.0001, for display only."""
        return (2 * self.price_volume + self.count) // (2 * self.count)

    def to_json(self, now_ms: int) -> dict:
        """The seed's ``whale_queue`` entry; money as exact dollar strings, age as seconds."""
        return {
            "whale_id": self.whale_id,
            "market_ticker": self.market,
            "side": self.side,
            "price_dollars": format_price(self.average_price_units),
            "count": format_count(self.count),
            "cost_dollars": format_money(self.cost, 4),
            "payout_dollars": format_money(self.payout, 4),
            "whale_size_dollars": format_money(self.whale_size, 4),
            "levels": self.levels,
            "trades": len(self.trade_ids),
            "age_seconds": max(0, now_ms - self.ts_ms) / 1000,
            "timestamp_ms": self.ts_ms,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """The seed's whale-queue statistics; the discard rate in basis points (9670 = 96.70 %)."""

    trades_seen: int
    trades_discarded: int
    duplicates: int
    discard_rate_bp: int
    queue_size: int
    window_minutes: int
    min_size: int  # money units

    def to_json(self) -> dict:
        return {
            "trades_seen": self.trades_seen,
            "trades_discarded": self.trades_discarded,
            "duplicates": self.duplicates,
            # A float is fine here: this is a display percentage, never used in arithmetic.
            "discard_rate_percent": self.discard_rate_bp / 100,
            "queue_size": self.queue_size,
            "window_minutes": self.window_minutes,
            "min_size_dollars": format_money(self.min_size, 4),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPlan:
    """A V2 create-order request for following one whale.

    ``side``/``price`` are on the YES book, as V2 wants them: buying YES at p is ``bid`` at p,
    buying NO at q is ``ask`` at 1 − q. ``outcome_price`` is what one contract of ``outcome`` costs.
    """

    client_order_id: str
    whale_id: str
    market: str
    outcome: str  # "yes" | "no": what we buy
    side: str  # "bid" | "ask"
    price: int  # YES price
    count: int
    time_in_force: str = "immediate_or_cancel"

    @property
    def outcome_price(self) -> int:
        return self.price if self.side == "bid" else price_complement(self.price)

    def to_v2_body(self) -> dict:
        """The JSON body of ``POST /portfolio/events/orders`` (strings only, as V2 requires)."""
        return {
            "ticker": self.market,
            "client_order_id": self.client_order_id,
            "side": self.side,
            "count": format_count(self.count),
            "price": format_price(self.price),
            "time_in_force": self.time_in_force,
            "self_trade_prevention_type": "taker_at_cross",
            "post_only": False,
            "reduce_only": False,
        }

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES or self.side not in ("bid", "ask"):
            raise ValueError(f"order plan: bad outcome/side {self.outcome!r}/{self.side!r}")
        if (self.outcome == "yes") != (self.side == "bid"):
            raise ValueError("order plan: buying YES is a bid, buying NO is an ask")
        if not 0 < self.price < PRICE_ONE or self.count <= 0:
            raise ValueError(f"order plan: price {self.price} / count {self.count} out of range")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the executor decided about one whale, and why."""

    action: str
    reason: str
    whale_id: str
    market: str
    final: bool
    outcome: str = ""  # the outcome the whale bought (and we would buy)
    side: str = ""  # V2 side of our order ("bid"/"ask"), only when following
    price: int = 0  # V2 YES price of our order, only when following
    count: int = 0
    client_order_id: str = ""
    trade_ids: tuple[str, ...] = ()
    whale_ts_ms: int = 0
    plan: OrderPlan | None = None
    decided_ms: int = 0


# --- messages -------------------------------------------------------------------------------


@message
class WhaleDetected(Message):
    """A new whale entered the queue (or grew: more prints of its sweep arrived)."""

    whale: Whale
    ts_ms: int


@message
class WhaleQueueUpdated(Message):
    """The ranked queue (largest first) and its statistics."""

    queue: tuple[Whale, ...]
    stats: QueueStats
    ts_ms: int


@message
class WhaleDecisionMade(Message):
    decision: Decision


@message
class WhaleProcessing(Message):
    """For the UI's animation: ``status`` is ``processing`` (action None) then ``complete``."""

    whale_id: str
    status: str
    action: str | None
    ts_ms: int


@message
class SubmitOrder(Message):
    """Command to the order path: send this plan (its intent is already journaled)."""

    plan: OrderPlan


@message
class OrderSubmitted(Message):
    client_order_id: str
    whale_id: str
    market: str
    ts_ms: int


@message
class OrderAccepted(Message):
    """A definitive 201: the exchange created the order (it may have filled at once)."""

    client_order_id: str
    order_id: str
    market: str
    fill_count: int
    remaining_count: int
    average_fill_price: int | None
    average_fee_paid: int | None
    ts_ms: int


@message
class OrderRejected(Message):
    """A definitive refusal (4xx with an error body): no order exists."""

    client_order_id: str
    market: str
    status_code: int
    code: str
    detail: str
    ts_ms: int


@message
class OrderOutcomeUnknown(Message):
    """Timeout, reset, 5xx or an unreadable answer: the order may or may not exist."""

    client_order_id: str
    market: str
    reason: str
    ts_ms: int


@message
class OrderResolved(Message):
    """An unknown outcome settled by reading orders back: ``order_id`` None means not created."""

    client_order_id: str
    market: str
    order_id: str | None
    status: str
    ts_ms: int


@message
class CleanupRequested(Message):
    """Cancel our orphaned orders (``orphaned_only``: not in our order group) or all our resting orders."""

    request_id: int
    orphaned_only: bool
    reply_to: str  # peer name that gets CleanupCompleted


@message
class CleanupCompleted(Message):
    request_id: int
    canceled: tuple[str, ...]  # order ids no longer resting and not filled (canceled, or gone on a 404)
    failed: tuple[str, ...]
    detail: str
    filled: tuple[str, ...] = ()  # order ids that had filled before the cancel reached them (F17)
