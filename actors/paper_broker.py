"""Paper execution against our live copy of a production book (mode "production, paper").

An order plan (V2: ``bid`` = buy YES at p, ``ask`` = buy NO at 1 − p) is filled locally as a
taker: a YES bid walks the NO bids from the highest (YES ask 1 − q ascending) while 1 − q ≤ p; a
NO buy (ask at p) walks the YES bids from the highest while the bid ≥ p. Each level is one fill
at the resting (maker) price with Kalshi's taker fee for that fill. IOC cancels the rest, FOK
fills all or nothing; resting (GTC) orders are refused, since nothing here could fill them later.

Limitations (said, not hidden): paper fills do not consume the real book, so the book is read,
never changed; the positions follow the exchange's netting (protocol §6.2) with average cost.

Positions: net count q (+ YES, − NO). A YES fill while q < 0 first closes NO: per contract we pay
p and redeem the YES+NO pair for $1, receiving 1 − p; likewise a NO fill while q > 0 closes YES,
receiving p. Exposure is the cost basis of the open contracts (fees excluded, as Kalshi reports
``market_exposure``); realized P&L on a close is proceeds − removed basis (fees kept apart).

Restart (``restore``): the account lives in this process only, so the executor rebuilds it from the journaled
paper fills at start. Each fill is re-applied exactly as ``submit`` applied it (positions, exposure, realized
P&L, fees, cash), and the orders they belong to are registered again by client_order_id, so ``order(coid)``
finds them and a resend of the same client_order_id is refused as a duplicate. A restored order is rebuilt
from its fills alone (the journal does not keep the request with them): ``initial_count`` = ``fill_count``,
status ``executed``, ``price`` = the worst price it filled at. An order that filled nothing left no fill, so it
is not restored: ``order(coid)`` answers None for it — it changed nothing, and sending it again cannot fill
twice.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

from kalshi.fees import FeeSchedule
from kalshi.units import COUNT_ONE, PRICE_ONE, notional, safe_repr
from messages.whale import OrderPlan

__all__ = [
    "PaperBroker", "PaperFill", "PaperOrder", "PaperResult", "PaperPosition", "PaperSettlement", "PaperRestore",
]

log = logging.getLogger(__name__)


class PaperBook(Protocol):
    valid: bool

    def levels(self, side: str) -> tuple[tuple[int, int], ...]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperFill:
    fill_id: str
    order_id: str
    client_order_id: str
    ticker: str
    outcome: str  # "yes" | "no": what we bought
    book_side: str  # "bid" | "ask"
    count: int
    yes_price: int
    no_price: int
    fee: int
    is_taker: bool
    ts_ms: int

    @property
    def outcome_price(self) -> int:
        return self.yes_price if self.outcome == "yes" else self.no_price


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperOrder:
    """Kalshi-like order record; ``status`` is ``executed`` or ``canceled``."""

    order_id: str
    client_order_id: str
    ticker: str
    side: str
    price: int
    time_in_force: str
    status: str
    initial_count: int
    fill_count: int
    remaining_count: int
    fill_cost: int  # money paid for the fills, fees excluded
    fees: int
    average_fill_price: int | None  # outcome price, rounded up
    ts_ms: int
    order_group_id: str | None = None  # paper orders belong to no order group (read like Kalshi's orders)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperResult:
    accepted: bool
    order: PaperOrder | None = None
    fills: tuple[PaperFill, ...] = ()
    reject_code: str = ""
    reject_reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperPosition:
    ticker: str
    position: int  # signed count units: + YES, − NO
    exposure: int  # cost basis of the open contracts, money units
    realized_pnl: int
    fees_paid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperSettlement:
    ticker: str
    result: str
    yes_count: int
    no_count: int
    payout: int
    realized_pnl: int  # payout − basis of the settled contracts
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperRestore:
    """What ``restore`` rebuilt: counts, the open positions after it, and per market the cost (fees excluded)
    of the fills restored there, i.e. what our orders spent in it."""

    applied: int
    skipped: int  # bad or foreign bodies, and fills already on this broker
    orders: int
    positions: tuple[PaperPosition, ...]
    fill_cost: tuple[tuple[str, int], ...] = ()  # (market, cost of its restored fills), sorted by market


@dataclass(slots=True)
class _Position:
    position: int = 0
    exposure: int = 0
    realized_pnl: int = 0
    fees_paid: int = 0


def _hash_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:24]


_RESTORE_WARNINGS = 10  # skipped fills logged one by one; past this, one summary line


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fill_from_body(body: Any) -> tuple[PaperFill | None, str]:
    """A journaled paper fill body → PaperFill, or (None, what is wrong with it)."""
    if not isinstance(body, Mapping):
        return None, "not an object"
    if body.get("source") != "paper":
        return None, f"not a paper fill (source {safe_repr(body.get('source'))})"
    for key in ("fill_id", "order_id", "client_order_id", "market"):
        if not isinstance(body.get(key), str) or not body[key]:
            return None, f"bad {key}"
    outcome, yes_price, count, fee, ts_ms = (body.get(k) for k in ("outcome", "yes_price", "count", "fee", "ts_ms"))
    if outcome not in ("yes", "no"):
        return None, "bad outcome"
    if not _is_int(yes_price) or not 0 < yes_price < PRICE_ONE:
        return None, "bad yes_price"
    if not _is_int(count) or count <= 0:
        return None, "bad count"
    if not _is_int(fee) or fee < 0:
        return None, "bad fee"
    if not _is_int(ts_ms) or ts_ms < 0:
        return None, "bad ts_ms"
    return PaperFill(
        fill_id=body["fill_id"],
        order_id=body["order_id"],
        client_order_id=body["client_order_id"],
        ticker=body["market"],
        outcome=outcome,
        book_side="bid" if outcome == "yes" else "ask",
        count=count,
        yes_price=yes_price,
        no_price=PRICE_ONE - yes_price,
        fee=fee,
        is_taker=True,
        ts_ms=ts_ms,
    ), ""


def _order_from_fills(client_order_id: str, fills: list[PaperFill]) -> PaperOrder:
    """The order behind restored fills (all of one order, checked by ``restore``). The request is not
    journaled with them: the order is taken as fully ``executed`` at what filled, its limit as the worst
    YES price it filled at (a bid fills at or below its limit, an ask at or above)."""
    first = fills[0]
    filled = sum(f.count for f in fills)
    raw = sum(f.count * f.outcome_price for f in fills)
    yes_prices = [f.yes_price for f in fills]
    return PaperOrder(
        order_id=first.order_id,
        client_order_id=client_order_id,
        ticker=first.ticker,
        side=first.book_side,
        price=max(yes_prices) if first.book_side == "bid" else min(yes_prices),
        time_in_force="immediate_or_cancel",
        status="executed",
        initial_count=filled,
        fill_count=filled,
        remaining_count=0,
        fill_cost=sum(notional(f.count, f.outcome_price) for f in fills),
        fees=sum(f.fee for f in fills),
        average_fill_price=-(-raw // filled),
        ts_ms=first.ts_ms,
    )


class PaperBroker:
    """Fills order plans against a book; keeps positions, cash, P&L and settlements."""

    def __init__(self, fee_schedule_for: Callable[[str], FeeSchedule], balance: int | None = None) -> None:
        self._fees = fee_schedule_for
        self._check_balance = balance is not None
        self.cash = balance if balance is not None else 0
        self._positions: dict[str, _Position] = {}
        self._orders: dict[str, PaperOrder] = {}  # client_order_id → order
        self._fill_ids: set[str] = set()  # every fill applied: restoring one twice changes nothing
        self.settlements: list[PaperSettlement] = []

    # -- orders --

    def submit(self, plan: OrderPlan, book: PaperBook, now_ms: int) -> PaperResult:
        if plan.client_order_id in self._orders:
            return PaperResult(accepted=False, reject_code="order_already_exists", reject_reason="duplicate client_order_id")
        if plan.time_in_force not in ("immediate_or_cancel", "fill_or_kill"):
            return PaperResult(
                accepted=False, reject_code="invalid_order", reject_reason="paper broker fills IOC/FOK orders only"
            )
        if not book.valid:
            return PaperResult(accepted=False, reject_code="book_stale", reject_reason="book is not valid")
        if getattr(book, "ticker", plan.market) != plan.market:
            return PaperResult(accepted=False, reject_code="invalid_order", reject_reason="book of another market")

        legs = self._walk(plan, book)
        filled = sum(c for c, _ in legs)
        if plan.time_in_force == "fill_or_kill" and filled < plan.count:
            legs, filled = [], 0
        schedule = self._fees(plan.market)
        fees = [schedule.taker(c, p) for c, p in legs]
        cost = sum(notional(c, p) for c, p in legs)
        if self._check_balance and self._cash_needed(plan, legs, fees) > self.cash:
            return PaperResult(accepted=False, reject_code="insufficient_balance", reject_reason="not enough cash")

        order_id = _hash_id("paper-", plan.client_order_id)
        fills = []
        for i, ((count, outcome_price), fee) in enumerate(zip(legs, fees)):
            yes_price = outcome_price if plan.outcome == "yes" else PRICE_ONE - outcome_price
            fill = PaperFill(
                fill_id=_hash_id("pf-", f"{order_id}|{i}"),
                order_id=order_id,
                client_order_id=plan.client_order_id,
                ticker=plan.market,
                outcome=plan.outcome,
                book_side=plan.side,
                count=count,
                yes_price=yes_price,
                no_price=PRICE_ONE - yes_price,
                fee=fee,
                is_taker=True,
                ts_ms=now_ms,
            )
            self._apply_fill(fill)
            self._fill_ids.add(fill.fill_id)
            fills.append(fill)
        raw = sum(c * p for c, p in legs)
        order = PaperOrder(
            order_id=order_id,
            client_order_id=plan.client_order_id,
            ticker=plan.market,
            side=plan.side,
            price=plan.price,
            time_in_force=plan.time_in_force,
            status="executed" if filled == plan.count else "canceled",
            initial_count=plan.count,
            fill_count=filled,
            remaining_count=0,  # IOC/FOK: the remainder is canceled
            fill_cost=cost,
            fees=sum(fees),
            average_fill_price=-(-raw // filled) if filled else None,
            ts_ms=now_ms,
        )
        self._orders[plan.client_order_id] = order
        return PaperResult(accepted=True, order=order, fills=tuple(fills))

    def _walk(self, plan: OrderPlan, book: PaperBook) -> list[tuple[int, int]]:
        """(count, outcome price) per level taken, best first."""
        limit = plan.outcome_price
        opposite = "no" if plan.outcome == "yes" else "yes"
        remaining = plan.count
        legs = []
        for bid, size in sorted(book.levels(opposite), reverse=True):
            price = PRICE_ONE - bid  # the outcome price this resting bid offers
            if price > limit or remaining <= 0:
                break
            take = min(size, remaining)
            if take > 0:
                legs.append((take, price))
                remaining -= take
        return legs

    def _cash_needed(self, plan: OrderPlan, legs: list[tuple[int, int]], fees: list[int]) -> int:
        pos = self._positions.get(plan.market, _Position())
        sign = 1 if plan.outcome == "yes" else -1
        q = pos.position
        need = 0
        for (count, price), fee in zip(legs, fees):
            closing = min(count, max(0, -sign * q))
            need += notional(count - closing, price) + fee - (closing * (PRICE_ONE - price)) // COUNT_ONE
            q += sign * count
        return need

    def order(self, client_order_id: str) -> PaperOrder | None:
        return self._orders.get(client_order_id)

    # -- restart --

    def restore(self, fills: Iterable[Mapping[str, Any]]) -> PaperRestore:
        """Re-apply journaled paper fills (bodies as the executor journals them, in journal order) and
        register the orders they belong to. Meant for a fresh broker at start.

        Skipped, counted and logged, never raised: a body that is not a paper fill or is malformed; a fill
        contradicting its order's earlier fills (another order id, market or outcome); a fill of an order
        this broker made itself; a fill id already applied (so restoring twice changes nothing)."""
        applied = skipped = 0
        groups: dict[str, list[PaperFill]] = {}
        cost: dict[str, int] = {}
        for body in fills:
            fill, problem = _fill_from_body(body)
            if fill is not None:
                if fill.fill_id in self._fill_ids:
                    fill, problem = None, "fill already applied"
                elif fill.client_order_id in self._orders:
                    fill, problem = None, "fill of an order this broker already has"
                else:
                    group = groups.get(fill.client_order_id)
                    first = group[0] if group else fill
                    if (first.order_id, first.ticker, first.outcome) != (fill.order_id, fill.ticker, fill.outcome):
                        fill, problem = None, "contradicts the earlier fills of its client_order_id"
            if fill is None:
                skipped += 1
                if skipped <= _RESTORE_WARNINGS:
                    fill_id = body.get("fill_id") if isinstance(body, Mapping) else None
                    log.warning("paper restore: fill %s skipped: %s", safe_repr(fill_id), problem)
                continue
            self._apply_fill(fill)
            self._fill_ids.add(fill.fill_id)
            groups.setdefault(fill.client_order_id, []).append(fill)
            cost[fill.ticker] = cost.get(fill.ticker, 0) + notional(fill.count, fill.outcome_price)
            applied += 1
        if skipped > _RESTORE_WARNINGS:
            log.warning("paper restore: %d fills skipped in all (the first %d logged)", skipped, _RESTORE_WARNINGS)
        for coid, group in groups.items():
            self._orders[coid] = _order_from_fills(coid, group)
        return PaperRestore(applied=applied, skipped=skipped, orders=len(groups), positions=self.positions(),
                            fill_cost=tuple(sorted(cost.items())))

    # -- positions --

    def _apply_fill(self, fill: PaperFill) -> None:
        pos = self._positions.setdefault(fill.ticker, _Position())
        sign = 1 if fill.outcome == "yes" else -1
        price = fill.outcome_price
        held = pos.position * sign  # > 0: we hold this outcome; < 0: we hold the other one
        closing = min(fill.count, -held) if held < 0 else 0
        if closing:
            # Buying this outcome against the other one: the pair redeems for $1.
            proceeds = (closing * (PRICE_ONE - price)) // COUNT_ONE  # round down: never overstate
            open_count = -held
            removed = pos.exposure if closing == open_count else (pos.exposure * closing) // open_count
            pos.exposure -= removed
            pos.realized_pnl += proceeds - removed
            self.cash += proceeds
        opening = fill.count - closing
        if opening:
            cost = notional(opening, price)
            pos.exposure += cost
            self.cash -= cost
        pos.position += sign * fill.count
        pos.fees_paid += fill.fee
        self.cash -= fill.fee

    def position(self, ticker: str) -> PaperPosition:
        pos = self._positions.get(ticker, _Position())
        return PaperPosition(
            ticker=ticker,
            position=pos.position,
            exposure=pos.exposure,
            realized_pnl=pos.realized_pnl,
            fees_paid=pos.fees_paid,
        )

    def positions(self) -> tuple[PaperPosition, ...]:
        return tuple(self.position(t) for t in sorted(self._positions) if self._positions[t].position)

    # -- settlement --

    def settle(self, ticker: str, result: str, now_ms: int, settlement_value: int | None = None) -> PaperSettlement:
        """Pay out a determined market: ``yes``/``no`` pay $1 per winning contract; ``scalar`` pays
        YES ``settlement_value`` (price units) and NO 1 − that. Settlement itself is fee-free."""
        if result == "yes":
            yes_value = PRICE_ONE
        elif result == "no":
            yes_value = 0
        elif result == "scalar":
            if settlement_value is None or not 0 <= settlement_value <= PRICE_ONE:
                raise ValueError("scalar settlement needs a settlement value in [0, 1]")
            yes_value = settlement_value
        else:
            raise ValueError(f"unknown market result {result!r}")
        pos = self._positions.pop(ticker, _Position())
        yes_count = max(0, pos.position)
        no_count = max(0, -pos.position)
        payout = (yes_count * yes_value + no_count * (PRICE_ONE - yes_value)) // COUNT_ONE
        realized = payout - pos.exposure
        self.cash += payout
        settlement = PaperSettlement(
            ticker=ticker,
            result=result,
            yes_count=yes_count,
            no_count=no_count,
            payout=payout,
            realized_pnl=pos.realized_pnl + realized,
            ts_ms=now_ms,
        )
        self.settlements.append(settlement)
        return settlement
