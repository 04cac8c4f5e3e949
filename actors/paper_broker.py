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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Protocol

from kalshi.fees import FeeSchedule
from kalshi.units import COUNT_ONE, PRICE_ONE, notional
from messages.whale import OrderPlan

__all__ = ["PaperBroker", "PaperFill", "PaperOrder", "PaperResult", "PaperPosition", "PaperSettlement"]


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


@dataclass(slots=True)
class _Position:
    position: int = 0
    exposure: int = 0
    realized_pnl: int = 0
    fees_paid: int = 0


def _hash_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:24]


class PaperBroker:
    """Fills order plans against a book; keeps positions, cash, P&L and settlements."""

    def __init__(self, fee_schedule_for: Callable[[str], FeeSchedule], balance: int | None = None) -> None:
        self._fees = fee_schedule_for
        self._check_balance = balance is not None
        self.cash = balance if balance is not None else 0
        self._positions: dict[str, _Position] = {}
        self._orders: dict[str, PaperOrder] = {}  # client_order_id → order
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
