"""Messages of the whale executor's own machinery (not part of the shared message catalogue).

``VenueJobDone`` is what the executor's venue worker thread tells the executor when a blocking venue call
finished; ``result`` is a frozen value from ``actors.venues`` (PlaceOutcome, FoundOrder, CancelReport, ...) or
a tuple of them, ``error`` the escaped error text when the call raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from .account import FillReceived, PositionChanged
from .base import Message, message
from .whale import Whale

__all__ = [
    "OBSERVED",
    "FAILED",
    "FOLLOWED",
    "PLACE_STATUSES",
    "PlaceOutcome",
    "FoundOrder",
    "CancelReport",
    "SyncReport",
    "ResolveReport",
    "ReconcileReport",
    "VenueResult",
    "VenueJobDone",
    "WhaleSightings",
    "seed_action",
]

PLACE_STATUSES = ("accepted", "rejected", "duplicate", "unknown", "not_sent", "rate_limited")

# Decision action of the ``hold`` strategy: the whale was seen and evaluated, nothing is ever sent.
OBSERVED = "observed"
# The seed's names for the outcome of a follow, used in WhaleProcessing(status="complete").
FOLLOWED = "followed"
FAILED = "failed"


def seed_action(action: str) -> str:
    """The seed's whale_processing action for one of our decision actions (follow → followed)."""
    return FOLLOWED if action == "follow" else action


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceOutcome:
    """What one create-order call came to (see actors/venues.py for the status table)."""

    status: str  # one of PLACE_STATUSES
    client_order_id: str
    market: str
    order_id: str | None = None
    fill_count: int = 0
    remaining_count: int = 0
    average_fill_price: int | None = None
    average_fee_paid: int | None = None
    status_code: int = 0
    code: str = ""
    detail: str = ""
    retry_after_ms: int | None = None
    fill_cost: int = 0  # money paid for the fills (paper venue only; 0 when unknown)
    # Paper venue only: the fills and the resulting position (an exchange reports them on its own channels).
    fills: tuple[FillReceived, ...] = ()
    position: PositionChanged | None = None

    def __post_init__(self) -> None:
        if self.status not in PLACE_STATUSES:
            raise ValueError(f"place outcome status must be one of {PLACE_STATUSES}")


@dataclass(frozen=True, slots=True, kw_only=True)
class FoundOrder:
    """An order read back from the venue."""

    order_id: str
    client_order_id: str | None
    market: str
    status: str  # resting | canceled | executed
    fill_count: int
    remaining_count: int
    order_group_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelReport:
    """What a batch of cancels came to. A 404 on cancel is never an error (F17): the venue reads the order
    back and files it under ``filled`` (executed before our cancel arrived: the position changed),
    ``canceled`` (canceled by someone else: nothing rests) or ``gone`` (absent, or the read-back failed or
    was inconclusive — ``detail`` says which; treat like "may have filled": re-sync the account)."""

    canceled: tuple[str, ...] = ()  # order ids no longer resting because of a cancel (ours or another's)
    gone: tuple[str, ...] = ()  # 404 on cancel and the read-back could not say why
    failed: tuple[str, ...] = ()  # the cancel itself failed: the order may still rest
    detail: str = ""
    filled: tuple[FoundOrder, ...] = ()  # 404 on cancel because the order had fully filled (read back)

    @property
    def filled_ids(self) -> tuple[str, ...]:
        return tuple(o.order_id for o in self.filled)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncReport:
    balance: int
    positions: int
    resting_orders: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveReport:
    """A read-back by client_order_id: ``found`` None means the venue has no such order (now)."""

    client_order_id: str
    found: FoundOrder | None
    error: str = ""  # the read failed: ``found`` means nothing


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileReport:
    """The start-up reconciliation: pending intents read back, the session's order group, orphans canceled."""

    resolved: tuple[ResolveReport, ...]
    unresolved: tuple[str, ...]  # client order ids whose read failed (retried later)
    order_group_id: str | None
    group_error: str
    canceled: CancelReport | None
    cancel_error: str


VenueResult = PlaceOutcome | FoundOrder | CancelReport | SyncReport | ResolveReport | ReconcileReport | None


@message
class VenueJobDone(Message):
    job_id: int
    kind: str  # place | resolve | reconcile | cancel | cleanup | sync | reset_group
    result: VenueResult  # None when the call failed (then ``error`` says why)
    error: str


@message
class WhaleSightings(Message):
    """Tracker → executor: trades seen again (a repeat or a backfill after a reconnect) that belong to a
    queued or handled whale; the executor journals each as a ``duplicate`` sighting (F04). One per batch."""

    sightings: tuple[tuple[Whale, str], ...]  # (the whale, the repeated trade_id)
    ts_ms: int
