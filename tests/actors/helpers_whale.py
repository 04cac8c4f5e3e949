"""Shared fakes for the whale tracker/executor tests: a hand-driven clock, a scripted venue, builders."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable

from actors.base import PeerTable
from actors.context import SystemContext
from actors.settings import load_settings
from actors.whale_rules import PublicTrade, WhaleQueue
from kalshi.units import COUNT_ONE, PRICE_ONE
from messages.account import OrderUpdated, PositionChanged
from messages.execution import CancelReport, FoundOrder, PlaceOutcome, SyncReport
from messages.state import AccountView, BookView
from messages.whale import OrderPlan, Whale
from tests.actors.conftest import Echo, Probe, ProbeControl, ProbeLog

START_WALL_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class FakeClock:
    """Wall (ms) and monotonic (ns) clocks moved by hand, readable from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wall = START_WALL_MS
        self._mono = 1_000 * 1_000_000_000

    def wall_ms(self) -> int:
        with self._lock:
            return self._wall

    def mono_ns(self) -> int:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += int(seconds * 1000)
            self._mono += int(seconds * 1_000_000_000)


def settings(**flags: Any):
    return load_settings(config_path=None, environ={}, flags=flags, dotenv_path=None)


def context(tmp_path: Path, clock: FakeClock, execution: str = "exchange", markets: tuple[str, ...] = (), **flags: Any) -> SystemContext:
    return SystemContext(
        settings=settings(**flags),
        rest_url="http://127.0.0.1:9/trade-api/v2",
        ws_url="ws://127.0.0.1:9/trade-api/ws/v2",
        credentials=None,
        data_dir=tmp_path,
        market_tickers=markets,
        execution=execution,
        wall_ms=clock.wall_ms,
        mono_ns=clock.mono_ns,
    )


class FakeVenue:
    """A scripted venue. ``place_script`` holds statuses (or callables plan -> PlaceOutcome) used in order;
    when empty every place is accepted with a full fill. ``find_script`` likewise (FoundOrder | None |
    Exception), default: the orders this venue accepted."""

    name = "fake"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.placed: list[tuple[OrderPlan, str | None]] = []
        self.finds: list[str] = []
        self.canceled: list[str] = []
        self.place_script: deque = deque()
        self.find_script: deque = deque()
        self.resting: list[FoundOrder] = []
        self.accepted: dict[str, FoundOrder] = {}
        self.groups = 0
        self.resets: list[str] = []
        self.closed = False

    def place(self, plan: OrderPlan, order_group_id: str | None) -> PlaceOutcome:
        with self.lock:
            self.placed.append((plan, order_group_id))
            step = self.place_script.popleft() if self.place_script else "accepted"
        if callable(step):
            return step(plan)
        base = {"client_order_id": plan.client_order_id, "market": plan.market}
        if step in ("accepted", "created_unknown"):
            with self.lock:
                order_id = f"ord-{len(self.accepted) + 1}"
                self.accepted[plan.client_order_id] = FoundOrder(
                    order_id=order_id, client_order_id=plan.client_order_id, market=plan.market,
                    status="executed", fill_count=plan.count, remaining_count=0, order_group_id=order_group_id,
                )
            if step == "created_unknown":  # created, but the answer was lost
                return PlaceOutcome(status="unknown", code="no_response", detail="connection reset", **base)
            return PlaceOutcome(status="accepted", order_id=order_id, fill_count=plan.count, remaining_count=0,
                                average_fill_price=plan.outcome_price, status_code=201, **base)
        codes = {"rejected": 400, "duplicate": 409, "rate_limited": 429, "unknown": 0, "not_sent": 0}
        return PlaceOutcome(status=step, status_code=codes[step], code=step, detail=f"scripted {step}", **base)

    def find(self, client_order_id: str, market: str | None) -> FoundOrder | None:
        with self.lock:
            self.finds.append(client_order_id)
            if self.find_script:
                step = self.find_script.popleft()
                if isinstance(step, Exception):
                    raise step
                return step
            return self.accepted.get(client_order_id)

    def resting_orders(self) -> tuple[FoundOrder, ...]:
        with self.lock:
            return tuple(self.resting)

    def cancel(self, order_ids):
        with self.lock:
            self.canceled.extend(o for o, _ in order_ids)
            self.resting = [o for o in self.resting if o.order_id not in {i for i, _ in order_ids}]
        return CancelReport(canceled=tuple(o for o, _ in order_ids))

    def create_order_group(self, contracts_limit: int) -> str | None:
        with self.lock:
            self.groups += 1
            return f"og-{self.groups}"

    def reset_order_group(self, order_group_id: str) -> None:
        with self.lock:
            self.resets.append(order_group_id)

    def sync(self) -> SyncReport:
        return SyncReport(balance=0, positions=0, resting_orders=len(self.resting))

    def close(self) -> None:
        self.closed = True

    def place_count(self) -> int:
        with self.lock:
            return len(self.placed)


def whale(market: str, side: str, price: int, contracts: int, ts_ms: int, trade_id: str | None = None) -> Whale:
    """One single-print whale (``price`` is the taker's outcome price in price units)."""
    yes = price if side == "yes" else PRICE_ONE - price
    q = WhaleQueue(min_size=1)
    outcome, w = q.add(
        PublicTrade(trade_id=trade_id or f"t-{market}-{ts_ms}-{side}", market=market, taker_side=side,
                    yes_price=yes, no_price=PRICE_ONE - yes, count=contracts * COUNT_ONE, ts_ms=ts_ms),
        ts_ms,
    )
    assert outcome == "new" and w is not None
    return w


def book(market: str, yes: tuple = ((4000, 100 * COUNT_ONE),), no: tuple = ((4500, 100 * COUNT_ONE),), valid: bool = True) -> BookView:
    return BookView(market_ticker=market, valid=valid, yes=tuple(yes), no=tuple(no), seq=1, recv_ns=0,
                    reason="" if valid else "stale")


def account(positions: dict[str, tuple[int, int]] | None = None, resting: tuple[str, ...] = (), version: int = 1) -> AccountView:
    """``positions``: market -> (signed count units, cost money units)."""
    return AccountView(
        version=version,
        balance=1_000_000,
        portfolio_value=0,
        positions=tuple(
            PositionChanged(market_ticker=m, position=p, cost=c, realized_pnl=0, fees_paid=0, source="rest")
            for m, (p, c) in (positions or {}).items()
        ),
        resting_orders=tuple(
            OrderUpdated(order_id=f"r-{m}", client_order_id=None, market_ticker=m, status="resting", book_side="bid",
                         outcome_side="yes", yes_price=1000, fill_count=0, remaining_count=COUNT_ONE,
                         initial_count=COUNT_ONE, order_group_id=None, ts_ms=0, source="rest")
            for m in resting
        ),
        unsynced_fill_markets=frozenset(),
        synced_at_ms=1,
    )


class Recorders:
    """Probe actors standing in for the supervisor and every peer of the whale actors."""

    NAMES = ("supervisor", "state_keeper", "broadcaster", "whale_tracker", "whale_executor", "orderbook_feed")

    def __init__(self, names: tuple[str, ...] = NAMES) -> None:
        self.log = ProbeLog()
        self.refs = {
            n: Probe.start(n, 1, None, PeerTable(), {}, probe_log=self.log, control=ProbeControl()) for n in names
        }

    def peers(self, *exclude: str) -> PeerTable:
        return PeerTable({n: r for n, r in self.refs.items() if n != "supervisor" and n not in exclude})

    def barrier(self) -> None:
        """Every recorder has handled what was told to it before now."""
        for ref in self.refs.values():
            ref.ask(Echo(), timeout=5)

    def stop(self) -> None:
        for ref in self.refs.values():
            ref.stop(timeout=5)

    def got(self, name: str, cls: type, where: Callable[[Any], bool] = lambda m: True) -> list:
        return [m for m in self.log.received(name, cls) if where(m)]
