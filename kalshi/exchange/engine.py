"""The local exchange engine: Kalshi semantics with no I/O.

Markets, books, price-time matching, accounts, fees, positions, settlements, order groups, the
market lifecycle on a simulated clock, Kalshi-shaped REST bodies (engine_rest.py) and WS message
bodies (engine_shapes.py), persistence, and the synthetic order flow (flow.py). Single-threaded and
deterministic: every id and every random choice comes from RNGs seeded by ``EngineConfig.seed``, and
time only moves when the caller passes a new ``now_ms``.

Book convention (protocol §5/§6.1): one book per market holding YES bids and NO bids. A V2 bid@p buys
YES at p and rests in the YES book at p; an ask@p buys NO at 1 − p and rests in the NO book at 1 − p.
Executions happen at the resting order's price.

Synthetic traders (user ids starting with "flow-") never have API keys, so the engine skips their
private WS events and their order/fill history (positions and cash are still exact): this keeps the
flow cheap enough for the firehose preset.

Choices where Kalshi's documents are silent (kept in one place so they are easy to revisit):
- ``balance`` is cash minus money reserved for resting buys (worst-case cost + fee); netting is
  average-cost; the fee for a taker's worst case is taken at the price nearest 0.50 it could hit.
- Trading on a non-active market → 400 ``market_closed``; unknown market on create → 404 ``not_found``;
  a triggered order group refuses creates with 400 ``invalid_order``.
- ``last_update_reason`` for a user cancel is "Cancel" and for an order-group trigger
  "OrderGroupCancel" (neither is in Kalshi's list, which has no entry for these cases).
- Lifecycle: closed at close_time, determined ``settlement_timer_s`` later, finalized (paid)
  another ``settlement_timer_s`` later, and forgotten ``finalized_retention_s`` after that (404, as if
  moved to Kalshi's /historical), so memory stays bounded on a long run. Users' settlement rows,
  positions, orders and fills stay.
- ``event_owner``: while a listener runs for an orderbook_delta that carries ``client_order_id``,
  this attribute names the user whose order caused it (the server strips the id for everyone else).
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from kalshi.fees import FeeSchedule
from kalshi.units import COUNT_ONE, PRICE_ONE, format_count, format_price, notional

from . import engine_shapes as shapes
from .engine_model import Account, ExchangeError, Market, Order, OrderGroup, Position, PriceGrid, rfc3339
from .flow import Flow, FlowConfig

__all__ = ["Engine", "EngineConfig", "ExchangeError", "FlowConfig", "FLOW_PREFIX"]

FLOW_PREFIX = "flow-"
HALF = PRICE_ONE // 2

# Series the exchange lists: (fee_type, fee_multiplier, price_level_structure, title).
SERIES: dict[str, tuple[str, Any, str, str]] = {
    "KXSIMA": ("quadratic", 1, "linear_cent", "Simulated index A"),
    "KXSIMM": ("quadratic_with_maker_fees", 1, "linear_cent", "Simulated index M (maker fees)"),
    "KXSIMD": ("quadratic", 1, "deci_cent", "Simulated index D (deci-cent)"),
    "KXSIMH": ("quadratic", 0.5, "linear_cent", "Simulated index H (half fees)"),
    "KXSIMT": ("quadratic", 1, "tapered_deci_cent", "Simulated index T (tapered)"),
}
# Which series market slot i uses (cycled): mostly linear_cent, with the special ones early.
SLOT_SERIES = ("KXSIMA", "KXSIMM", "KXSIMD", "KXSIMH", "KXSIMA", "KXSIMT", "KXSIMA", "KXSIMM")

_PRICE_STR: dict[int, str] = {}
_COUNT_STR: dict[int, str] = {}


def _price_str(price: int) -> str:
    text = _PRICE_STR.get(price)
    if text is None:
        text = _PRICE_STR[price] = format_price(price)
    return text


def _count_str(count: int) -> str:
    text = _COUNT_STR.get(count)
    if text is None:
        if len(_COUNT_STR) > 100_000:
            _COUNT_STR.clear()
        text = _COUNT_STR[count] = format_count(count)
    return text


Listener = Callable[[str, "str | None", "str | None", str, dict], None]


@dataclass(frozen=True)
class EngineConfig:
    seed: int = 1
    n_markets: int = 8
    start_balance: int = 10_000 * 10_000  # money units ($10,000)
    fee_rounding_unit: int = 1  # 1 = $0.0001 per fill, 100 = $0.01
    dedupe_client_order_ids: str = "all"  # or "open"
    market_duration_s: int = 3600
    settlement_timer_s: int = 60  # closed → determined, and determined → finalized
    flow: FlowConfig = field(default_factory=FlowConfig)
    trade_history_per_market: int = 5_000  # older public trades are dropped (Kalshi moves them to /historical)
    # finalized markets (and their events and trade history) are forgotten this long after settlement, so a
    # long run keeps a bounded number of markets; users' settlement rows, positions and orders stay
    finalized_retention_s: int = 6 * 3600

    def __post_init__(self) -> None:
        if self.dedupe_client_order_ids not in ("all", "open"):
            raise ValueError("dedupe_client_order_ids must be 'all' or 'open'")
        if self.n_markets < 1 or self.market_duration_s < 1 or self.settlement_timer_s < 0:
            raise ValueError("n_markets and market_duration_s must be ≥ 1, settlement_timer_s ≥ 0")
        if self.finalized_retention_s < 0 or self.trade_history_per_market < 1:
            raise ValueError("finalized_retention_s must be ≥ 0 and trade_history_per_market ≥ 1")
        if self.fee_rounding_unit not in (1, 100):
            raise ValueError("fee_rounding_unit must be 1 or 100")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EngineConfig":
        d = dict(d)
        d["flow"] = FlowConfig.from_dict(d["flow"])
        return cls(**d)


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


class Engine:
    def __init__(self, config: EngineConfig, now_ms: int, *, _restore: bool = False) -> None:
        self.config = config
        self.now_ms = now_ms
        self._listeners: list[Listener] = []
        self.event_owner: str | None = None  # user whose own order caused the delta being emitted
        self.public_events = 0  # public WS events generated (the flow's message budget counts these)
        # The start time is in the id seed: an exchange started again without its state must not hand out the
        # order and trade ids of its previous run (clients dedupe by them); same seed + same start = same ids.
        self._ids = random.Random(f"ids-{config.seed}-{now_ms}")
        self._mkt_rng = random.Random(f"markets-{config.seed}")
        self._seq = 0
        self._market_seq = 0
        self.fees = {
            s: FeeSchedule.from_series(ft, fm, config.fee_rounding_unit) for s, (ft, fm, _st, _t) in SERIES.items()
        }
        self._fee_cache: dict[tuple, int] = {}
        self.events: dict[str, dict] = {}
        self.markets: dict[str, Market] = {}
        self.slots: list[str] = []  # ticker of the active market in each slot
        self.live: list[str] = []  # markets not yet finalized
        self.finalized: deque[str] = deque()  # finalized markets not yet pruned, oldest first
        self.orders: dict[str, Order] = {}
        self.accounts: dict[str, Account] = {}
        self.trades: deque[tuple] = deque(maxlen=config.trade_history_per_market * 4)
        self.market_trades: dict[str, deque[tuple]] = {}
        self._expiry: list[tuple[int, int, str]] = []
        self.flow = Flow(self, config.flow, random.Random(f"flow-{config.seed}"))
        if not _restore:
            for slot in range(config.n_markets):
                close_ms = now_ms + config.market_duration_s * 1000 * (slot + 1) // config.n_markets
                self.slots.append(self._create_market(slot, now_ms, close_ms))
            self.flow.start(now_ms)

    # ---- public API (contract) ------------------------------------------------------------------

    def ensure_account(self, user_id: str) -> None:
        if user_id not in self.accounts:
            self.accounts[user_id] = Account(user_id, self.config.start_balance, user_id.startswith(FLOW_PREFIX))

    def ensure_flow_account(self, user_id: str, cash: int) -> Account:
        acct = self.accounts.get(user_id)
        if acct is None:
            acct = self.accounts[user_id] = Account(user_id, cash, True)
        return acct

    def set_flow(self, flow: FlowConfig) -> None:
        """Pause (a disabled config), resume or retune the synthetic flow from now on; persisted."""
        if not isinstance(flow, FlowConfig):
            raise TypeError("flow must be a FlowConfig")
        self.config = replace(self.config, flow=flow)
        self.flow.reconfigure(flow, self.now_ms)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def market_exists(self, ticker: str) -> bool:
        return ticker in self.markets

    def market_tickers(self) -> tuple[str, ...]:
        return tuple(self.markets)

    def active_tickers(self) -> tuple[str, ...]:
        return tuple(t for t in self.slots)

    def orderbook_snapshot_msg(self, ticker: str, use_yes_price: bool = False) -> dict:
        return shapes.snapshot_msg(self._market(ticker), use_yes_price)

    def ticker_msg(self, ticker: str) -> dict:
        return shapes.ticker_msg(self._market(ticker), self.now_ms)

    def is_private(self, method: str, path: str) -> bool:
        from .engine_rest import is_private

        return is_private(method, path)

    def request_cost(self, method: str, path: str, body: object) -> tuple[str, int]:
        from .engine_rest import request_cost

        return request_cost(method, path, body)

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: object, user: str | None, now_ms: int
    ) -> tuple[int, dict | None]:
        from .engine_rest import dispatch

        self.advance(now_ms)
        if user is not None:
            self.ensure_account(user)
        return dispatch(self, method.upper(), path, query or {}, body, user)

    def advance(self, now_ms: int) -> None:
        """Move the clock: expirations, lifecycle transitions, then the synthetic flow."""
        if now_ms < self.now_ms:
            return  # the clock never runs backwards
        self.now_ms = now_ms
        self._expire(now_ms)
        self._lifecycle(now_ms)
        self.flow.step(now_ms)

    def account_snapshot(self, user_id: str) -> dict:
        acct = self._account(user_id)
        return {
            "user": user_id,
            "cash": acct.cash,
            "reserved": acct.reserved,
            "available": acct.available,
            "positions": {t: p.to_dict() for t, p in acct.positions.items()},
            "open_orders": [oid for oid in acct.order_ids if self.orders[oid].status == "resting"],
            "fills": len(acct.fills),
            "settlements": list(acct.settlements),
        }

    # ---- helpers ---------------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _market(self, ticker: str) -> Market:
        m = self.markets.get(ticker)
        if m is None:
            raise ExchangeError(404, "not_found")
        return m

    def _account(self, user: str) -> Account:
        self.ensure_account(user)
        return self.accounts[user]

    def fee(self, m: Market, count: int, price: int, is_taker: bool) -> int:
        key = (m.series_ticker, count, price, is_taker)
        fee = self._fee_cache.get(key)
        if fee is None:
            fee = self.fees[m.series_ticker].fee(count, price, is_taker)
            if len(self._fee_cache) > 200_000:
                self._fee_cache.clear()
            self._fee_cache[key] = fee
        return fee

    def _emit(self, channel: str, user: str | None, ticker: str | None, msg_type: str, msg: dict) -> None:
        for fn in self._listeners:
            fn(channel, user, ticker, msg_type, msg)

    def _delta(self, m: Market, yes_side: bool, price: int, delta: int, order: Order | None = None) -> None:
        self.public_events += 1
        if not self._listeners:
            return
        now = self.now_ms
        msg = {
            "market_ticker": m.ticker,
            "market_id": m.market_id,
            "price_dollars": _price_str(price),
            "delta_fp": _count_str(delta),
            "side": "yes" if yes_side else "no",
            "ts": rfc3339(now),
            "ts_ms": now,
        }
        if order is not None and order.cid is not None:
            msg["client_order_id"] = order.cid
            msg["subaccount"] = 0
            self.event_owner = order.user
            self._emit("orderbook_delta", None, m.ticker, "orderbook_delta", msg)
            self.event_owner = None
        else:
            self._emit("orderbook_delta", None, m.ticker, "orderbook_delta", msg)

    def _touch(self, m: Market) -> None:
        """Send a ticker message if anything it shows changed (top of book, sizes, last trade)."""
        key = (*shapes.top_of_book(m), m.last_price, m.volume)
        if key != m.ticker_key:
            m.ticker_key = key
            self.public_events += 1
            if self._listeners:
                self._emit("ticker", None, m.ticker, "ticker", shapes.ticker_msg(m, self.now_ms))

    def _user_order(self, o: Order) -> None:
        if self._listeners and not o.user.startswith(FLOW_PREFIX):
            self._emit("user_orders", o.user, o.ticker, "user_order", shapes.user_order_msg(o))

    def _position_msg(self, acct: Account, p: Position) -> None:
        if self._listeners and not acct.is_flow:
            self._emit("market_positions", acct.user, p.ticker, "market_position", shapes.market_position_msg(acct.user, p))

    def _group_msg(self, user: str, event_type: str, group: OrderGroup) -> None:
        if self._listeners:
            msg: dict = {"event_type": event_type, "order_group_id": group.group_id, "ts_ms": self.now_ms}
            if event_type in ("created", "limit_updated"):
                msg["contracts_limit_fp"] = format_count(group.limit)
            self._emit("order_group_updates", user, None, "order_group_updates", msg)

    # ---- markets and lifecycle -------------------------------------------------------------------

    def _create_market(self, slot: int, now_ms: int, close_ms: int) -> str:
        rng = self._mkt_rng
        self._market_seq += 1
        n = self._market_seq
        series = SLOT_SERIES[slot % len(SLOT_SERIES)]
        _ft, _fm, structure, title = SERIES[series]
        event_ticker = f"{series}-E{n:05d}"
        strike = rng.randrange(10, 100)
        ticker = f"{event_ticker}-T{strike}"
        grid = PriceGrid.of(structure)
        timer_ms = self.config.settlement_timer_s * 1000
        m = Market(
            ticker=ticker, event_ticker=event_ticker, series_ticker=series, market_id=self._uuid(),
            title=f"Will {title} close above {strike} (round {n})?", yes_sub_title=f"Above {strike}",
            no_sub_title=f"{strike} or below", structure=structure, created_ms=now_ms, open_ms=now_ms,
            close_ms=close_ms, determine_ms=close_ms + timer_ms, finalize_ms=close_ms + 2 * timer_ms,
            settled_ms=None, updated_ms=now_ms, status="active", result="", last_price=0, prev_price=0,
            prev_yes_bid=0, prev_yes_ask=0, volume=0, open_interest=0, dollar_volume=0, floor_strike=strike,
            fair=grid.floor(rng.randrange(1500, 8501)), settle_u=rng.randrange(PRICE_ONE), seq=n,
            last_trade_size=0,
        )
        self.markets[ticker] = m
        self.market_trades[ticker] = deque(maxlen=self.config.trade_history_per_market)
        self.live.append(ticker)
        self.events[event_ticker] = {
            "event_ticker": event_ticker, "series_ticker": series, "title": m.title, "sub_title": f"Round {n}",
            "strike_ms": close_ms, "created_ms": now_ms, "markets": [ticker],
        }
        self.public_events += 2
        if self._listeners:
            self._emit("market_lifecycle_v2", None, None, "event_lifecycle", {
                "event_ticker": event_ticker, "exchange_index": 0, "title": m.title, "subtitle": f"Round {n}",
                "collateral_return_type": "", "series_ticker": series, "strike_date": close_ms // 1000,
            })
            self._emit("market_lifecycle_v2", None, ticker, "market_lifecycle_v2",
                       shapes.lifecycle_created_msg(m, self.config.settlement_timer_s))
        return ticker

    def _lifecycle(self, now_ms: int) -> None:
        for ticker in list(self.live):
            m = self.markets[ticker]
            if m.status == "active" and now_ms >= m.close_ms:
                self._close_market(m, now_ms)
            if m.status == "closed" and now_ms >= m.determine_ms:
                self._determine_market(m, now_ms)
            if m.status == "determined" and now_ms >= m.finalize_ms:
                self._finalize_market(m, now_ms)
                self.live.remove(ticker)
                self.finalized.append(ticker)
        self._prune(now_ms)

    def _prune(self, now_ms: int) -> None:
        """Forget markets finalized more than ``finalized_retention_s`` ago (Kalshi moves them to /historical):
        the market, its event when it has no other market, its trade history and the synthetic traders'
        positions in it. Users' settlement rows, positions, orders and fills are kept; they are small and
        only grow with what the users themselves do."""
        keep_ms = self.config.finalized_retention_s * 1000
        done = self.finalized
        while done:
            m = self.markets.get(done[0])
            if m is not None and (m.settled_ms or 0) + keep_ms > now_ms:
                return
            ticker = done.popleft()
            if m is None:
                continue
            del self.markets[ticker]
            self.market_trades.pop(ticker, None)
            ev = self.events.get(m.event_ticker)
            if ev is not None:
                ev["markets"] = [t for t in ev["markets"] if t != ticker]
                if not ev["markets"]:
                    del self.events[m.event_ticker]
            for acct in self.accounts.values():
                if acct.is_flow:
                    acct.positions.pop(ticker, None)

    def event_of(self, ticker: str) -> str:
        """The event ticker of a market, also after the market was pruned (tickers are "<event>-T<strike>")."""
        m = self.markets.get(ticker)
        return m.event_ticker if m is not None else ticker.rpartition("-")[0]

    def _close_market(self, m: Market, now_ms: int) -> None:
        m.status = "closed"
        m.updated_ms = now_ms
        for side in (m.book.yes, m.book.no):
            for o in list(side.orders()):
                self._cancel(o, "CloseCancel")
        self._touch(m)
        self.flow.market_closed(m.ticker)
        if m.ticker in self.slots:  # keep n_markets open: a new market replaces the closed one
            slot = self.slots.index(m.ticker)
            new = self._create_market(slot, now_ms, now_ms + self.config.market_duration_s * 1000)
            self.slots[slot] = new
            self.flow.market_opened(new)

    def _determine_market(self, m: Market, now_ms: int) -> None:
        m.result = "yes" if m.settle_u < m.fair else "no"
        m.status = "determined"
        m.updated_ms = now_ms
        self.public_events += 1
        if self._listeners:
            self._emit("market_lifecycle_v2", None, m.ticker, "market_lifecycle_v2", {
                "market_ticker": m.ticker, "event_type": "determined", "determination_ts": now_ms // 1000,
                "result": m.result, "settlement_value": format_price(PRICE_ONE if m.result == "yes" else 0),
            })

    def _finalize_market(self, m: Market, now_ms: int) -> None:
        """Pay winners $1 per contract, write settlement rows, close the positions."""
        m.status = "finalized"
        m.settled_ms = now_ms
        m.updated_ms = now_ms
        yes_won = m.result == "yes"
        for acct in self.accounts.values():
            p = acct.positions.get(m.ticker)
            if p is None or p.settled:
                continue
            q = p.q
            payout = 0
            if q > 0 and yes_won:
                payout = q * PRICE_ONE // COUNT_ONE
            elif q < 0 and not yes_won:
                payout = -q * PRICE_ONE // COUNT_ONE
            acct.cash += payout
            if q:
                p.realized += payout - p.exposure
            if not acct.is_flow and (q or p.volume):
                acct.settlements.append({
                    "seq": self._next_seq(), "ts_ms": now_ms, "event_ticker": m.event_ticker,
                    "row": {
                        "ticker": m.ticker, "event_ticker": m.event_ticker, "exchange_index": 0,
                        "market_result": m.result,
                        "yes_count_fp": format_count(max(q, 0)),
                        "yes_total_cost_dollars": shapes._money(p.exposure if q > 0 else 0),
                        "no_count_fp": format_count(max(-q, 0)),
                        "no_total_cost_dollars": shapes._money(p.exposure if q < 0 else 0),
                        "revenue": payout // 100, "value": 100 if yes_won else 0,
                        "fee_cost": shapes._money(p.fees), "settled_time": rfc3339(now_ms),
                    },
                })
            p.q = 0
            p.exposure = 0
            p.settled = True
            p.updated_ms = now_ms
            self._position_msg(acct, p)
        m.open_interest = 0
        self.public_events += 1
        if self._listeners:
            self._emit("market_lifecycle_v2", None, m.ticker, "market_lifecycle_v2", {
                "market_ticker": m.ticker, "event_type": "settled", "settled_ts": now_ms // 1000,
            })

    # ---- orders: placement and matching ----------------------------------------------------------

    def worst_cost(self, m: Market, is_bid: bool, price: int, count: int) -> int:
        """Most a buy can cost: count at its limit price plus the highest taker fee over the prices it
        could execute at (fees peak at 0.50)."""
        costp = price if is_bid else PRICE_ONE - price
        fee_price = min(price, HALF) if is_bid else max(price, HALF)
        return notional(count, costp) + self.fee(m, count, fee_price, True)

    def _reservation(self, m: Market, o: Order) -> int:
        if not o.remaining:
            return 0
        costp = o.price if o.is_bid else PRICE_ONE - o.price
        return notional(o.remaining, costp) + self.fee(m, o.remaining, o.price, False)

    def place(
        self,
        user: str,
        ticker: str,
        is_bid: bool,
        price: int,
        count: int,
        tif: str = "good_till_canceled",
        stp: str = "taker_at_cross",
        *,
        cid: str | None = None,
        group: str | None = None,
        exp_ms: int | None = None,
        post_only: bool = False,
        reduce_only: bool = False,
        cancel_on_pause: bool = False,
    ) -> Order:
        """Place an already-validated order (prices on the grid, count ≥ 0.01, cid not a duplicate).

        Checks balance, market state and post-only here (in that order, protocol §6.1), then matches.
        """
        m = self._market(ticker)
        acct = self._account(user)
        now = self.now_ms
        if not acct.is_flow and self.worst_cost(m, is_bid, price, count) > acct.available:
            raise ExchangeError(400, "insufficient_balance")
        if m.status != "active":
            raise ExchangeError(400, "market_closed", "market closed", details="market is not open for trading")
        opp = m.book.no if is_bid else m.book.yes
        opp_limit = PRICE_ONE - price if is_bid else price  # opposite bids at ≥ this price cross
        if post_only and opp.prices and opp.prices[-1] >= opp_limit:
            raise ExchangeError(400, "invalid_order", details="post only cross")
        self._seq += 1
        o = Order(self._uuid(), user, ticker, is_bid, price, count, 0, count, "resting", tif, stp, cid, group, exp_ms,
                  now, now, seq=self._seq, cancel_on_pause=cancel_on_pause)
        self.orders[o.order_id] = o
        if not acct.is_flow:
            acct.order_ids.append(o.order_id)
            if cid is not None:
                acct.used_cids.add(cid)
                acct.open_cids[cid] = o.order_id
        if group is not None:
            acct.groups[group].members.append(o.order_id)

        budget = count
        end_reason = ""
        if reduce_only:
            q = acct.positions[ticker].q if ticker in acct.positions else 0
            cap = max(-q, 0) if is_bid else max(q, 0)
            if cap < budget:
                budget = cap
                end_reason = "ReduceOnlyCancel"
        if tif == "fill_or_kill" and budget and not self._fok_fillable(m, o, budget):
            budget = 0
        stopped = self._match(m, acct, o, budget) if budget else ""
        if stopped:
            end_reason = stopped
        if o.remaining and o.status == "resting":
            if tif == "good_till_canceled" and not stopped and budget == count:
                self._rest(m, acct, o)
            else:
                o.remaining = 0
                o.status = "canceled"
                o.reason = end_reason or o.reason
                self._finish(acct, o)
        elif not o.remaining and o.status == "resting":
            o.status = "executed"
            self._finish(acct, o)
        self._user_order(o)
        self._touch(m)
        return o

    def _fok_fillable(self, m: Market, o: Order, need: int) -> bool:
        """Whether a fill-or-kill can fill completely; hitting its own order under taker_at_cross
        makes it behave like IOC (protocol §6.1), so that counts as fillable."""
        opp = m.book.no if o.is_bid else m.book.yes
        limit = PRICE_ONE - o.price if o.is_bid else o.price
        got = 0
        for price in reversed(opp.prices):
            if price < limit:
                break
            for maker in opp.levels[price]:
                if maker.user == o.user:
                    if o.stp == "taker_at_cross":
                        return True
                    continue
                got += maker.remaining
                if got >= need:
                    return True
        return False

    def _match(self, m: Market, acct: Account, o: Order, budget: int) -> str:
        """Match ``budget`` of a taker order; returns the reason if matching was cut short."""
        is_bid = o.is_bid
        opp = m.book.no if is_bid else m.book.yes
        limit = PRICE_ONE - o.price if is_bid else o.price
        prices = opp.prices
        while budget and prices:
            level_price = prices[-1]
            if level_price < limit:
                break
            maker = opp.levels[level_price][0]
            if maker.user == o.user:
                if o.stp == "maker":
                    self._cancel(maker, "SelfTradeCancel")
                    continue
                return "SelfTradeCancel"
            c = budget if budget < maker.remaining else maker.remaining
            yes_price = PRICE_ONE - level_price if is_bid else level_price
            self._execute(m, acct, o, maker, c, yes_price, level_price, opp)
            budget -= c
            if o.status != "resting":  # its order group triggered mid-match
                return o.reason
        return ""

    def _execute(self, m: Market, t_acct: Account, taker: Order, maker: Order, c: int, yes_price: int,
                 level_price: int, opp) -> None:
        now = self.now_ms
        trade_id = self._uuid()
        tfee = self.fee(m, c, yes_price, True)
        mfee = self.fee(m, c, yes_price, False)
        m_acct = self.accounts[maker.user]
        # maker side
        maker.filled += c
        maker.remaining -= c
        maker.fill_notional += c * yes_price
        maker.maker_cost += notional(c, level_price)
        maker.maker_fees += mfee
        maker.updated_ms = now
        maker.reason = "Trade"
        opp.reduce(level_price, c)
        if not maker.remaining:
            opp.pop_front(level_price)
            maker.status = "executed"
        new_res = self._reservation(m, maker)
        m_acct.reserved += new_res - maker.reserved
        maker.reserved = new_res
        self._delta(m, not taker.is_bid, level_price, -c)
        # taker side
        taker.filled += c
        taker.remaining -= c
        taker.fill_notional += c * yes_price
        taker.taker_cost += notional(c, yes_price if taker.is_bid else PRICE_ONE - yes_price)
        taker.taker_fees += tfee
        taker.updated_ms = now
        taker.reason = "Trade"
        # positions and cash
        self._apply_fill(m, m_acct, maker, c, yes_price, mfee, False, trade_id)
        self._apply_fill(m, t_acct, taker, c, yes_price, tfee, True, trade_id)
        # public trade
        m.last_price = yes_price
        m.last_trade_size = c
        m.volume += c
        m.dollar_volume += notional(c, yes_price)
        m.add_volume(now, c)
        m.updated_ms = now
        trade = (self._next_seq(), trade_id, m.ticker, c, yes_price, taker.is_bid, now)
        self.trades.append(trade)
        self.market_trades[m.ticker].append(trade)
        self.public_events += 1
        if self._listeners:
            self._emit("trade", None, m.ticker, "trade", shapes.trade_msg(trade))
        if maker.status == "executed":
            self._finish(m_acct, maker)
        self._user_order(maker)
        if maker.group is not None:
            self._group_matched(m_acct, maker.group, c)
        if taker.group is not None:
            self._group_matched(t_acct, taker.group, c)

    def _apply_fill(self, m: Market, acct: Account, o: Order, c: int, yes_price: int, fee: int, is_taker: bool,
                    trade_id: str) -> None:
        """Netting (protocol §6.2) with average-cost basis: buying the side opposite to the position
        first closes pairs (each pair redeems $1), the rest opens."""
        p = acct.positions.get(m.ticker)
        if p is None:
            p = acct.positions[m.ticker] = Position(m.ticker, m.event_ticker)
        is_bid = o.is_bid
        costp = yes_price if is_bid else PRICE_ONE - yes_price
        q = p.q
        closing = 0
        if is_bid and q < 0:
            closing = min(c, -q)
        elif not is_bid and q > 0:
            closing = min(c, q)
        cash = -fee
        if closing:
            held = q if q > 0 else -q
            removed = p.exposure if closing == held else p.exposure * closing // held
            proceeds = closing * (PRICE_ONE - costp) // COUNT_ONE
            p.exposure -= removed
            p.realized += proceeds - removed
            cash += proceeds
        if c > closing:
            cost = notional(c - closing, costp)
            p.exposure += cost
            cash -= cost
        new_q = q + c if is_bid else q - c
        m.open_interest += max(new_q, 0) - max(q, 0)
        p.q = new_q
        p.fees += fee
        p.traded += notional(c, costp)
        p.volume += c
        p.updated_ms = self.now_ms
        acct.cash += cash
        acct.updated_ms = self.now_ms
        if not acct.is_flow:
            acct.fills.append([self._next_seq(), trade_id, o.order_id, m.ticker, is_bid, c, yes_price, is_taker, fee,
                               self.now_ms])
            if self._listeners:
                self._emit("fill", acct.user, m.ticker, "fill",
                           shapes.fill_msg(o, trade_id, c, yes_price, is_taker, fee, new_q, self.now_ms))
            self._position_msg(acct, p)

    def _rest(self, m: Market, acct: Account, o: Order) -> None:
        side = m.book.yes if o.is_bid else m.book.no
        price = o.book_price
        side.add(o, price)
        o.reserved = self._reservation(m, o)
        acct.reserved += o.reserved
        if o.exp_ms is not None:
            heapq.heappush(self._expiry, (o.exp_ms, o.seq, o.order_id))
        self._delta(m, o.is_bid, price, o.remaining, o)

    def _finish(self, acct: Account, o: Order) -> None:
        """An order reached a terminal state: free its client id (for "open" dedupe) and, for the
        synthetic traders, forget it."""
        if o.cid is not None and acct.open_cids.get(o.cid) == o.order_id:
            del acct.open_cids[o.cid]
        if acct.is_flow:
            self.orders.pop(o.order_id, None)

    def _cancel(self, o: Order, reason: str) -> int:
        """Cancel a resting order; returns the size taken off the book."""
        m = self.markets[o.ticker]
        acct = self.accounts[o.user]
        side = m.book.yes if o.is_bid else m.book.no
        price = o.book_price
        reduced = o.remaining
        side.remove(o, price, reduced)
        acct.reserved -= o.reserved
        o.reserved = 0
        o.remaining = 0
        o.status = "canceled"
        o.reason = reason
        o.updated_ms = self.now_ms
        self._delta(m, o.is_bid, price, -reduced, o)
        self._finish(acct, o)
        self._user_order(o)
        return reduced

    def cancel(self, user: str, order_id: str, reason: str = "Cancel") -> tuple[Order, int]:
        o = self.orders.get(order_id)
        if o is None or o.user != user or o.status != "resting":
            raise ExchangeError(404, "not_found")
        reduced = self._cancel(o, reason)
        self._touch(self.markets[o.ticker])
        return o, reduced

    def decrease(self, user: str, order_id: str, reduce_by: int | None, reduce_to: int | None) -> Order:
        """Shrink a resting order, keeping its queue place; to zero = cancel."""
        o = self.orders.get(order_id)
        if o is None or o.user != user or o.status != "resting":
            raise ExchangeError(404, "not_found")
        target = max(o.remaining - reduce_by, 0) if reduce_by is not None else reduce_to
        if target >= o.remaining:
            raise ExchangeError(400, "invalid_order", details="decrease must reduce the remaining count")
        m = self.markets[o.ticker]
        if target == 0:
            self._cancel(o, "Decrease")
        else:
            self._shrink(m, o, target, "Decrease")
            self._user_order(o)
        self._touch(m)
        return o

    def _shrink(self, m: Market, o: Order, target: int, reason: str) -> None:
        acct = self.accounts[o.user]
        side = m.book.yes if o.is_bid else m.book.no
        cut = o.remaining - target
        side.reduce(o.book_price, cut)
        o.remaining = target
        o.initial -= cut
        new_res = self._reservation(m, o)
        acct.reserved += new_res - o.reserved
        o.reserved = new_res
        o.reason = reason
        o.updated_ms = self.now_ms
        self._delta(m, o.is_bid, o.book_price, -cut, o)

    def amend(self, user: str, order_id: str, price: int, total: int, new_cid: str | None,
              exp_ms: int | None | bool = False) -> Order:
        """``total`` is the new initial count (filled + desired remaining). Priority is kept only for a
        pure size decrease; a price change or increase re-enters the book (and may cross)."""
        o = self.orders.get(order_id)
        if o is None or o.user != user or o.status != "resting":
            raise ExchangeError(404, "not_found")
        if total <= o.filled:
            raise ExchangeError(400, "invalid_order_size", details="count must exceed the filled count")
        m = self.markets[o.ticker]
        acct = self.accounts[user]
        new_remaining = total - o.filled
        if not acct.is_flow:
            costp = price if o.is_bid else PRICE_ONE - price
            fee_price = min(price, HALF) if o.is_bid else max(price, HALF)
            need = notional(new_remaining, costp) + self.fee(m, new_remaining, fee_price, True)
            if need > acct.available + o.reserved:
                raise ExchangeError(400, "insufficient_balance")
        if new_cid is not None and new_cid != o.cid:
            if o.cid is not None and acct.open_cids.get(o.cid) == o.order_id:
                del acct.open_cids[o.cid]
            o.cid = new_cid
            acct.used_cids.add(new_cid)
            acct.open_cids[new_cid] = o.order_id
        if exp_ms is not False:
            o.exp_ms = exp_ms  # type: ignore[assignment]
            if exp_ms is not None:
                heapq.heappush(self._expiry, (exp_ms, o.seq, o.order_id))  # type: ignore[arg-type]
        if price == o.price and new_remaining <= o.remaining:
            if new_remaining < o.remaining:
                self._shrink(m, o, new_remaining, "Amend")
            else:
                o.reason = "Amend"
                o.updated_ms = self.now_ms
            self._user_order(o)
            self._touch(m)
            return o
        # Re-enter: take it off the book, then match and rest like a new GTC order.
        side = m.book.yes if o.is_bid else m.book.no
        old_price = o.book_price
        side.remove(o, old_price, o.remaining)
        acct.reserved -= o.reserved
        o.reserved = 0
        self._delta(m, o.is_bid, old_price, -o.remaining, o)
        o.price = price
        o.remaining = new_remaining
        o.initial = total
        o.seq = self._next_seq()
        o.reason = "Amend"
        o.updated_ms = self.now_ms
        stopped = self._match(m, acct, o, new_remaining)
        if o.status == "resting":
            if o.remaining and not stopped:
                self._rest(m, acct, o)
            elif o.remaining:
                o.remaining = 0
                o.status = "canceled"
                o.reason = stopped
                self._finish(acct, o)
            else:
                o.status = "executed"
                self._finish(acct, o)
        self._user_order(o)
        self._touch(m)
        return o

    def cancel_all(self, user: str, ticker: str | None = None) -> int:
        acct = self._account(user)
        n = 0
        touched: dict[str, None] = {}  # ordered, so event order never depends on hashing
        for oid in list(acct.order_ids):
            o = self.orders[oid]
            if o.status == "resting" and (ticker is None or o.ticker == ticker):
                self._cancel(o, "Cancel")
                touched[o.ticker] = None
                n += 1
        for t in touched:
            self._touch(self.markets[t])
        return n

    def _expire(self, now_ms: int) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now_ms:
            exp_ms, _seq, oid = heapq.heappop(heap)
            o = self.orders.get(oid)
            if o is not None and o.status == "resting" and o.exp_ms == exp_ms:
                self._cancel(o, "ExpiryCancel")
                self._touch(self.markets[o.ticker])

    # ---- order groups ----------------------------------------------------------------------------

    def create_group(self, user: str, limit: int) -> OrderGroup:
        acct = self._account(user)
        gid = "og_" + self._uuid().replace("-", "")[:12]
        g = acct.groups[gid] = OrderGroup(gid, limit, self.now_ms)
        self._group_msg(user, "created", g)
        return g

    def group(self, user: str, gid: str) -> OrderGroup:
        g = self._account(user).groups.get(gid)
        if g is None:
            raise ExchangeError(404, "not_found")
        return g

    def _group_matched(self, acct: Account, gid: str, c: int) -> None:
        g = acct.groups.get(gid)
        if g is None or g.blocked:
            return
        g.window.append((self.now_ms, c))
        if g.matched(self.now_ms) >= g.limit:
            self.trigger_group(acct.user, gid)

    def trigger_group(self, user: str, gid: str) -> None:
        g = self.group(user, gid)
        g.blocked = True
        self._cancel_members(g, "OrderGroupCancel")
        self._group_msg(user, "triggered", g)

    def _cancel_members(self, g: OrderGroup, reason: str) -> None:
        touched: dict[str, None] = {}  # ordered, so event order never depends on hashing
        for oid in g.members:
            o = self.orders.get(oid)
            if o is None or o.status != "resting":
                continue
            if o.remaining and self._is_on_book(o):
                self._cancel(o, reason)
            else:  # a taker mid-match: stop it; place() cancels its remainder
                o.status = "canceled"
                o.reason = reason
                o.remaining = 0
                self._finish(self.accounts[o.user], o)
            touched[o.ticker] = None
        for t in touched:
            self._touch(self.markets[t])

    def _is_on_book(self, o: Order) -> bool:
        side = self.markets[o.ticker].book
        level = (side.yes if o.is_bid else side.no).levels.get(o.book_price)
        return level is not None and o in level

    def reset_group(self, user: str, gid: str) -> None:
        g = self.group(user, gid)
        g.window.clear()
        g.blocked = False
        self._group_msg(user, "reset", g)

    def set_group_limit(self, user: str, gid: str, limit: int) -> None:
        g = self.group(user, gid)
        g.limit = limit
        self._group_msg(user, "limit_updated", g)
        if not g.blocked and g.matched(self.now_ms) >= limit:
            self.trigger_group(user, gid)

    def delete_group(self, user: str, gid: str) -> None:
        g = self.group(user, gid)
        self._cancel_members(g, "OrderGroupCancel")
        del self.accounts[user].groups[gid]
        self._group_msg(user, "deleted", g)

    # ---- persistence -----------------------------------------------------------------------------

    def to_state(self) -> dict:
        return {
            "version": 1,
            "config": self.config.to_dict(),
            "now_ms": self.now_ms,
            "seq": self._seq,
            "market_seq": self._market_seq,
            "public_events": self.public_events,
            "ids_rng": _rng_state(self._ids),
            "mkt_rng": _rng_state(self._mkt_rng),
            "events": dict(self.events),
            "markets": [m.to_dict() for m in self.markets.values()],
            "books": {t: m.book.to_dict() for t, m in self.markets.items() if m.book.yes.prices or m.book.no.prices},
            "slots": list(self.slots),
            "live": list(self.live),
            "orders": [o.to_dict() for o in self.orders.values()],
            "accounts": [a.to_dict() for a in self.accounts.values()],
            "trades": [list(t) for t in self.trades],
            "market_trades": {t: [list(x) for x in d] for t, d in self.market_trades.items()},
            "expiry": [list(e) for e in self._expiry],
            "flow": self.flow.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict, now_ms: int) -> "Engine":
        if state.get("version") != 1:
            raise ValueError("unknown engine state version")
        eng = cls(EngineConfig.from_dict(state["config"]), state["now_ms"], _restore=True)
        eng._seq = state["seq"]
        eng._market_seq = state["market_seq"]
        eng.public_events = state["public_events"]
        _set_rng_state(eng._ids, state["ids_rng"])
        _set_rng_state(eng._mkt_rng, state["mkt_rng"])
        eng.events = dict(state["events"])
        for d in state["markets"]:
            m = Market(**d)
            eng.markets[m.ticker] = m
        eng.orders = {d["order_id"]: Order.from_dict(d) for d in state["orders"]}
        for ticker, book in state["books"].items():
            m = eng.markets[ticker]
            for side_name in ("yes", "no"):
                side = getattr(m.book, side_name)
                for price, oids in book[side_name]:
                    for oid in oids:
                        o = eng.orders[oid]
                        side.add(o, price)
        eng.slots = list(state["slots"])
        eng.live = list(state["live"])
        done = sorted((m for m in eng.markets.values() if m.status == "finalized"), key=lambda m: (m.settled_ms or 0, m.seq))
        eng.finalized = deque(m.ticker for m in done)
        eng.accounts = {d["user"]: Account.from_dict(d) for d in state["accounts"]}
        eng.trades = deque((tuple(t) for t in state["trades"]), maxlen=eng.config.trade_history_per_market * 4)
        for ticker in eng.markets:
            eng.market_trades[ticker] = deque(
                (tuple(t) for t in state["market_trades"].get(ticker, [])), maxlen=eng.config.trade_history_per_market)
        eng._expiry = [tuple(e) for e in state["expiry"]]  # type: ignore[misc]
        heapq.heapify(eng._expiry)
        eng.flow.from_state(state["flow"])
        eng.advance(now_ms)
        return eng
