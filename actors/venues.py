"""Execution venues: where the whale executor's orders go, and the worker thread that talks to them.

- ``ExchangeVenue(rest)``: V2 create/cancel over ``kalshi.rest.KalshiRest`` (the local exchange or Kalshi demo).
- ``LiveVenue``: an ExchangeVenue against Kalshi production. It refuses to construct unless the settings say
  prod + live AND the environment carries the opt-in value (main.py checks too: defence in depth).
- ``PaperVenue(broker, book_source)``: production data, paper orders: fills computed by ``PaperBroker`` from
  the latest immutable ``BookView`` of the market (nothing is sent anywhere). Its account lives in-process:
  ``restore(fills)`` rebuilds it from the journaled paper fills when the executor starts.

Every venue call is blocking and runs on the ``VenueWorker`` thread the executor owns: one job at a time,
results told back to the actor as ``VenueJobDone`` messages. Venue answers are frozen values, so they can
travel inside messages. A venue maps the REST client's typed errors to a small set of outcomes:

=============  ===========================================================================================
accepted       a definitive 201: the order exists (it may have filled at once)
rejected       a definitive refusal (4xx with an error body): no order exists
duplicate      409 order_already_exists: the client_order_id was used — read the order back
unknown        timeout, reset, 5xx, unreadable answer: the order may or may not exist (query before resend)
not_sent       the connection could not be opened: nothing reached the exchange (safe to retry)
rate_limited   429: no order was created; back off
=============  ===========================================================================================

Cancels never raise: each order ends up ``canceled``, ``failed`` or — when Kalshi answers 404, which it does
for unknown, canceled and executed orders alike — read back by id and filed as ``filled`` / ``canceled`` /
``gone`` (F17: a fill that beat our cancel is a fill, not an error).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable, Mapping, Protocol

from kalshi.book import OrderBook
from kalshi.fees import FeeSchedule
from kalshi.units import COUNT_ONE, format_count
from messages.account import FillReceived, PositionChanged
from messages.execution import (
    PLACE_STATUSES,
    CancelReport,
    FoundOrder,
    PlaceOutcome,
    ReconcileReport,
    ResolveReport,
    SyncReport,
)
from messages.state import BookView
from messages.whale import OrderPlan

from ._util import WorkerThread
from .base import error_text
from .paper_broker import PaperBroker, PaperRestore
from .settings import LIVE_OPT_IN_ENV, LIVE_OPT_IN_VALUE

__all__ = [
    "PLACE_STATUSES",
    "PlaceOutcome",
    "FoundOrder",
    "CancelReport",
    "SyncReport",
    "ResolveReport",
    "ReconcileReport",
    "Venue",
    "VenueError",
    "LiveTradingRefused",
    "ExchangeVenue",
    "LiveVenue",
    "PaperVenue",
    "make_venue",
    "book_from_view",
    "VenueWorker",
]

log = logging.getLogger(__name__)


class VenueError(Exception):
    """A venue read or cancel that failed (the text is safe to log)."""


class LiveTradingRefused(RuntimeError):
    """A LiveVenue was asked for without the double opt-in."""


class Venue(Protocol):
    name: str

    def place(self, plan: OrderPlan, order_group_id: str | None) -> PlaceOutcome: ...

    def find(self, client_order_id: str, market: str | None) -> FoundOrder | None: ...

    def resting_orders(self) -> tuple[FoundOrder, ...]: ...

    def cancel(self, order_ids: tuple[tuple[str, str], ...]) -> CancelReport: ...

    def create_order_group(self, contracts_limit: int) -> str | None: ...

    def reset_order_group(self, order_group_id: str) -> None: ...

    def sync(self) -> SyncReport: ...

    def close(self) -> None: ...


def _found(order: Any) -> FoundOrder:
    """A Kalshi order (``bodies.Order``) or a ``PaperOrder`` (same field names) → ``FoundOrder``."""
    return FoundOrder(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        market=order.ticker,
        status=order.status,
        fill_count=order.fill_count,
        remaining_count=order.remaining_count,
        order_group_id=order.order_group_id,
    )


class ExchangeVenue:
    """Orders over Kalshi's V2 REST API. ``rest`` is a ``KalshiRest`` owned by this venue (closed with it)."""

    name = "exchange"

    def __init__(self, rest: Any) -> None:
        self.rest = rest

    def place(self, plan: OrderPlan, order_group_id: str | None) -> PlaceOutcome:
        from kalshi import rest as R

        base = {"client_order_id": plan.client_order_id, "market": plan.market}
        try:
            request = R.OrderRequest(
                ticker=plan.market,
                side=plan.side,
                count=plan.count,
                price=plan.price,
                time_in_force=plan.time_in_force,
                client_order_id=plan.client_order_id,
                order_group_id=order_group_id,
            )
        except ValueError as exc:
            return PlaceOutcome(status="rejected", code="invalid_order", detail=str(exc)[:300], **base)
        try:
            result = self.rest.submit_order(request)
        except R.UnknownOutcomeError as exc:
            return PlaceOutcome(status="unknown", status_code=exc.status or 0, code=exc.code or "", detail=str(exc), **base)
        except R.NotSentError as exc:
            return PlaceOutcome(status="not_sent", code=exc.code or "", detail=str(exc), **base)
        except R.DuplicateClientOrderIdError as exc:
            return PlaceOutcome(status="duplicate", status_code=exc.status or 409, code=exc.code or "", detail=str(exc), **base)
        except R.RateLimitedError as exc:
            return PlaceOutcome(
                status="rate_limited", status_code=exc.status or 429, code=exc.code or "", detail=str(exc),
                retry_after_ms=None if exc.retry_after_s is None else int(exc.retry_after_s * 1000), **base,
            )
        except R.KalshiApiError as exc:
            # A 4xx with an error body is definitive; anything without a status is not.
            if exc.status is None or exc.status >= 500:
                return PlaceOutcome(status="unknown", status_code=exc.status or 0, code=exc.code or "", detail=str(exc), **base)
            return PlaceOutcome(status="rejected", status_code=exc.status, code=exc.code or "", detail=str(exc), **base)
        if result.client_order_id not in (None, plan.client_order_id):
            # An answer for another order is not an answer for ours: treat as unknown and read back.
            return PlaceOutcome(status="unknown", code="mismatch", detail="201 for another client_order_id", **base)
        return PlaceOutcome(
            status="accepted",
            order_id=result.order_id,
            fill_count=result.fill_count,
            remaining_count=result.remaining_count,
            average_fill_price=result.average_fill_price,
            average_fee_paid=result.average_fee_paid,
            status_code=201,
            **base,
        )

    def find(self, client_order_id: str, market: str | None) -> FoundOrder | None:
        from kalshi import rest as R

        try:
            order = self.rest.find_order_by_client_order_id(client_order_id, ticker=market)
        except R.KalshiApiError as exc:
            raise VenueError(f"reading orders failed: {exc}") from None
        return _found(order) if order is not None else None

    def resting_orders(self) -> tuple[FoundOrder, ...]:
        from kalshi import rest as R

        try:
            return tuple(_found(o) for o in self.rest.iter_orders(status="resting", limit=200))
        except R.KalshiApiError as exc:
            raise VenueError(f"reading resting orders failed: {exc}") from None

    def cancel(self, order_ids: tuple[tuple[str, str], ...]) -> CancelReport:
        """Cancel each order. A 404 (Kalshi answers ``not_found`` for unknown, canceled AND executed orders)
        is resolved by reading the order back, so a fill that beat our cancel is reported as filled (F17)."""
        from kalshi import rest as R

        canceled: list[str] = []
        gone: list[str] = []
        failed: list[str] = []
        filled: list[FoundOrder] = []
        notes: list[str] = []
        for order_id, market in order_ids:
            try:
                self.rest.cancel_order(order_id, ticker=market)
                canceled.append(order_id)
                continue
            except R.NotFoundError:
                pass
            except R.KalshiApiError as exc:
                failed.append(order_id)
                notes.append(f"{order_id}: {exc}")
                continue
            kind, found, note = self._after_404(order_id)
            if kind == "filled" and found is not None:
                filled.append(found)
            elif kind == "canceled":
                canceled.append(order_id)
            else:
                gone.append(order_id)
            notes.append(f"{order_id}: {note}")
        return CancelReport(canceled=tuple(canceled), gone=tuple(gone), failed=tuple(failed), filled=tuple(filled),
                            detail="; ".join(notes)[:500])

    def _after_404(self, order_id: str) -> tuple[str, FoundOrder | None, str]:
        """Why a cancel answered 404: ("filled" | "canceled" | "gone", the order read back, a note)."""
        from kalshi import rest as R

        try:
            order = self.rest.get_order(order_id)
        except R.NotFoundError:
            return "gone", None, "not found on cancel nor on read-back"
        except Exception as exc:  # noqa: BLE001 - a read-back failure must not turn a cancel into a crash
            return "gone", None, f"not found on cancel; read-back failed ({error_text(exc)[:150]})"
        if order.order_id != order_id:
            # Kalshi's 2026-05-21 notice: answers may describe another order. Trust neither.
            return "gone", None, "not found on cancel; read-back described another order"
        found = _found(order)
        if order.status == "executed":
            return "filled", found, f"filled ({format_count(order.fill_count)}) before the cancel"
        if order.status == "canceled":
            extra = f", {format_count(order.fill_count)} filled before" if order.fill_count else ""
            return "canceled", found, f"already canceled{extra}"
        # "resting" here is the documented stale read after a cancel: the matcher said it is not resting.
        return "gone", found, f"not found on cancel; read-back says {order.status} (stale)"

    def create_order_group(self, contracts_limit: int) -> str | None:
        from kalshi import rest as R

        try:
            return self.rest.create_order_group(contracts_limit * COUNT_ONE).order_group_id
        except R.KalshiApiError as exc:
            raise VenueError(f"creating the order group failed: {exc}") from None

    def reset_order_group(self, order_group_id: str) -> None:
        from kalshi import rest as R

        try:
            self.rest.reset_order_group(order_group_id)
        except R.KalshiApiError as exc:
            raise VenueError(f"resetting the order group failed: {exc}") from None

    def sync(self) -> SyncReport:
        from kalshi import rest as R

        try:
            balance = self.rest.get_balance()
            positions = sum(1 for _ in self.rest.iter_positions(limit=200))
            orders = sum(1 for _ in self.rest.iter_orders(status="resting", limit=200))
        except R.KalshiApiError as exc:
            raise VenueError(f"account sync failed: {exc}") from None
        return SyncReport(balance=balance.balance, positions=positions, resting_orders=orders)

    def close(self) -> None:
        try:
            self.rest.close()
        except Exception:  # noqa: BLE001 - closing a pool must never mask the real exit path
            log.debug("closing the REST client failed", exc_info=True)


class LiveVenue(ExchangeVenue):
    """Real money on Kalshi production: only with ``execution = live``, ``environment = prod`` and the opt-in
    value in the environment. The checks repeat main.py's on purpose (defence in depth)."""

    name = "live"

    def __init__(self, rest: Any, settings: Any, environ: Any = None) -> None:
        env = os.environ if environ is None else environ
        if getattr(settings, "environment", None) != "prod" or getattr(settings, "effective_execution", None) != "live":
            raise LiveTradingRefused("live execution needs --env prod and --execution live")
        if env.get(LIVE_OPT_IN_ENV) != LIVE_OPT_IN_VALUE:
            raise LiveTradingRefused(f"live execution needs {LIVE_OPT_IN_ENV} set to the opt-in value")
        super().__init__(rest)


def book_from_view(view: BookView) -> OrderBook:
    """A ``kalshi.book.OrderBook`` rebuilt from an immutable BookView (invalid views stay invalid)."""
    book = OrderBook(view.market_ticker)
    if view.valid:
        if not book.apply_snapshot(view.yes, view.no):
            return book
    else:
        book.invalidate(view.reason or "book not valid")
    return book


class PaperVenue:
    """Paper fills against the latest BookView of a market (production data, nothing sent).

    ``book_source(market)`` returns the newest immutable BookView (or None); reading it from the worker
    thread is safe because views are immutable and replaced whole. ``fee_source(market)`` returns the
    market's FeeSchedule (default: Kalshi's standard quadratic taker fee).
    """

    name = "paper"

    def __init__(
        self,
        broker: PaperBroker | None,
        book_source: Callable[[str], BookView | None],
        *,
        clock_ms: Callable[[], int],
        fee_source: Callable[[str], FeeSchedule] | None = None,
    ) -> None:
        self._fee_source = fee_source or (lambda market: FeeSchedule())
        self.broker = broker if broker is not None else PaperBroker(self._fee_source)
        self._books = book_source
        self._clock = clock_ms
        self._client_ids: dict[str, str] = {}  # order_id -> client_order_id (the broker keys by the latter)
        self.restored = False  # the account was rebuilt from the journal (the executor's reconcile checks it)

    def place(self, plan: OrderPlan, order_group_id: str | None) -> PlaceOutcome:
        base = {"client_order_id": plan.client_order_id, "market": plan.market}
        existing = self.broker.order(plan.client_order_id)
        if existing is not None:
            return PlaceOutcome(status="duplicate", status_code=409, code="order_already_exists", detail="paper", **base)
        view = self._books(plan.market)
        if view is None:
            return PlaceOutcome(status="rejected", status_code=400, code="book_stale", detail="no book for market", **base)
        result = self.broker.submit(plan, book_from_view(view), self._clock())
        if not result.accepted or result.order is None:
            return PlaceOutcome(status="rejected", status_code=400, code=result.reject_code, detail=result.reject_reason, **base)
        order = result.order
        self._client_ids[order.order_id] = plan.client_order_id
        fills = order.fill_count
        position = self.broker.position(plan.market)
        return PlaceOutcome(
            status="accepted",
            order_id=order.order_id,
            fill_count=fills,
            remaining_count=order.remaining_count,
            average_fill_price=order.average_fill_price,
            average_fee_paid=(-(-order.fees * COUNT_ONE // fills) if fills else None),
            status_code=201,
            fill_cost=order.fill_cost,
            fills=tuple(
                FillReceived(
                    fill_id=f.fill_id, order_id=f.order_id, client_order_id=f.client_order_id, market_ticker=f.ticker,
                    is_taker=f.is_taker, outcome_side=f.outcome, book_side=f.book_side, yes_price=f.yes_price,
                    count=f.count, fee=f.fee, post_position=None, ts_ms=f.ts_ms, source="paper",
                )
                for f in result.fills
            ),
            position=PositionChanged(
                market_ticker=plan.market, position=position.position, cost=position.exposure,
                realized_pnl=position.realized_pnl, fees_paid=position.fees_paid, source="paper", ts_ms=order.ts_ms,
            ),
            **base,
        )

    def restore(self, fills: Iterable[Mapping[str, Any]]) -> PaperRestore:
        """Rebuild the paper account from journaled paper fills (``PaperBroker.restore``); run before any
        order. Their orders are then found by ``find`` (and a resend of one is a duplicate). Only paper
        has this: an exchange's account outlives us."""
        fills = tuple(fills)
        report = self.broker.restore(fills)
        for body in fills:  # cancel() finds orders by order id
            coid = body.get("client_order_id") if isinstance(body, Mapping) else None
            order = self.broker.order(coid) if isinstance(coid, str) else None
            if order is not None:
                self._client_ids[order.order_id] = coid
        self.restored = True
        return report

    def find(self, client_order_id: str, market: str | None) -> FoundOrder | None:
        order = self.broker.order(client_order_id)
        return None if order is None else _found(order)

    def resting_orders(self) -> tuple[FoundOrder, ...]:
        return ()  # paper orders are IOC/FOK: nothing ever rests

    def cancel(self, order_ids: tuple[tuple[str, str], ...]) -> CancelReport:
        """Nothing rests on paper, so every cancel is a "404": classified like the exchange venue does."""
        canceled: list[str] = []
        gone: list[str] = []
        filled: list[FoundOrder] = []
        for order_id, _ in order_ids:
            coid = self._client_ids.get(order_id)
            order = self.broker.order(coid) if coid is not None else None
            if order is None:
                gone.append(order_id)
            elif order.status == "executed":
                filled.append(_found(order))
            else:
                canceled.append(order_id)  # an IOC/FOK remainder the paper exchange canceled
        return CancelReport(canceled=tuple(canceled), gone=tuple(gone), filled=tuple(filled),
                            detail="paper: nothing rests" if order_ids else "")

    def create_order_group(self, contracts_limit: int) -> str | None:
        return None

    def reset_order_group(self, order_group_id: str) -> None:
        return None

    def sync(self) -> SyncReport:
        return SyncReport(balance=self.broker.cash, positions=len(self.broker.positions()), resting_orders=0)

    def close(self) -> None:
        return None



def make_venue(context: Any, book_source: Callable[[str], BookView | None]) -> Venue:
    """The venue for ``context.execution`` (called on the worker thread: the REST client is made there)."""
    execution = context.execution
    if execution == "exchange":
        return ExchangeVenue(context.make_rest())
    if execution == "live":
        rest = context.make_rest()
        try:
            return LiveVenue(rest, context.settings)
        except LiveTradingRefused:
            rest.close()
            raise
    if execution == "paper":
        fee_source = _series_fees(context) if context.credentials is not None or context.rest_url else None
        return PaperVenue(None, book_source, clock_ms=context.wall_ms, fee_source=fee_source)
    raise ValueError(f"unknown execution {execution!r}")


def _series_fees(context: Any) -> Callable[[str], FeeSchedule]:
    """Fee terms per market read from the public market/series endpoints once, cached; default on failure."""
    cache: dict[str, FeeSchedule] = {}
    holder: dict[str, Any] = {}

    def fees(market: str) -> FeeSchedule:
        if market in cache:
            return cache[market]
        schedule = FeeSchedule()
        try:
            rest = holder.get("rest") or holder.setdefault("rest", context.make_rest())
            series = rest.get_market(market).series_ticker
            if series:
                info = rest.get_series(series)
                schedule = FeeSchedule(info.fee_type, info.fee_multiplier)
        except Exception as exc:  # noqa: BLE001 - fee lookup is best effort: the standard fee applies
            log.warning("paper venue: fee terms of %s unavailable (%s); using the standard fee", market, error_text(exc))
        cache[market] = schedule
        return schedule

    return fees


# --- the worker thread ---------------------------------------------------------------------------

class VenueWorker:
    """The executor's venue thread (``actors._util.WorkerThread``): ``submit(kind, fn)`` queues ``fn(venue)``
    and returns a job id; its result (or the error text) is handed to ``deliver`` as
    ``make_done(job_id, kind, result, error)``. The venue is built on the worker thread."""

    def __init__(
        self,
        make_venue: Callable[[], Venue],
        deliver: Callable[[Any], None],
        make_done: Callable[[int, str, Any, str], Any],
        name: str = "venue-worker",
    ) -> None:
        self._make_done = make_done
        self._thread = WorkerThread(make_venue, deliver, name, label="venue")
        self._next_id = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: str, fn: Callable[[Venue], Any]) -> int:
        self._next_id += 1
        job_id, make_done = self._next_id, self._make_done
        self._thread.submit(fn, lambda result, error: make_done(job_id, kind, result, error))
        return job_id

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to finish its current job and exit; False if it did not within ``timeout``."""
        return self._thread.stop(timeout)
