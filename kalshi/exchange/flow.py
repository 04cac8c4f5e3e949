"""Synthetic order flow for the local exchange: market makers, noise takers and whales.

Stepped from ``Engine.advance``. Per market a fair value (YES probability, price units) follows a
random walk; makers keep quotes on both sides around it; noise takers hit the top of book; whales are
large IOC takers drawn from a size distribution, some informed (they know the market's hidden
settlement draw and buy the side that is ahead), some not, sometimes sweeping several levels. The
market resolves YES iff its settlement draw (uniform, made at creation) is below the final fair value,
i.e. with probability = final fair value.

Message pacing: the flow spends a budget of ``messages_per_s`` public WS events per second of
simulated time (counted by the engine), so the feed rate is what the preset says. At most
``max_catchup_ms`` of activity is generated per step, so a long gap (a test jumping the clock by
an hour) does not produce an hour of orders at once.

Synthetic accounts: "flow-mm-<i>" (makers), "flow-noise", "flow-whale-<i>", with large balances.

``Engine.set_flow`` (``LocalExchange.set_flow``, ``POST /_control/flow``) pauses the flow (a disabled
config: quotes stay, nothing new happens), resumes it from the current time, or retunes it.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kalshi.units import COUNT_ONE, MONEY_ONE, PRICE_ONE

if TYPE_CHECKING:
    from .engine import Engine
    from .engine_model import Market, Order

__all__ = ["FlowConfig", "Flow"]

FAIR_MIN = 300  # fair values stay within [0.03, 0.97] so both sides can be quoted
FAIR_MAX = PRICE_ONE - FAIR_MIN


@dataclass(frozen=True)
class FlowConfig:
    enabled: bool = True
    messages_per_s: int = 300  # public WS events per simulated second (deltas, trades, tickers, lifecycle)
    whale_every_s: float = 4.0  # mean time between whales (exponential)
    whale_sizes: tuple[int, ...] = (150, 300, 600, 1200, 2500)  # contracts
    whale_weights: tuple[int, ...] = (35, 30, 20, 10, 5)
    whale_accounts: int = 4
    informed_fraction: float = 0.5
    informed_impact: int = 0  # price units the fair value moves toward an informed whale (0 = none)
    sweep_probability: float = 0.4
    sweep_levels: int = 4  # a sweeping whale goes up to this many levels deep
    maker_count: int = 3
    maker_levels: int = 3
    maker_size: tuple[int, int] = (20, 200)  # contracts per quote, inclusive range
    maker_half_spread: int = 100  # price units from fair to the first quote
    maker_level_gap: int = 100
    noise_takers_per_s: float = 1.0
    noise_size: tuple[int, int] = (1, 25)
    fair_vol: int = 15  # random-walk standard deviation, price units per sqrt(second)
    max_catchup_ms: int = 1000
    account_cash: int = 100_000_000 * MONEY_ONE

    def __post_init__(self) -> None:
        if len(self.whale_sizes) != len(self.whale_weights) or not self.whale_sizes:
            raise ValueError("whale_sizes and whale_weights must be non-empty and of equal length")
        if self.messages_per_s < 0 or self.whale_every_s <= 0 or self.noise_takers_per_s < 0:
            raise ValueError("rates must be non-negative (whale_every_s > 0)")
        if not (0 <= self.informed_fraction <= 1 and 0 <= self.sweep_probability <= 1):
            raise ValueError("informed_fraction and sweep_probability are probabilities")
        if self.maker_count < 1 or self.maker_levels < 1 or self.sweep_levels < 1:
            raise ValueError("maker_count, maker_levels and sweep_levels must be ≥ 1")

    @classmethod
    def calm(cls) -> "FlowConfig":
        """Readable: a whale every few seconds, a few hundred book updates a second."""
        return cls()

    @classmethod
    def firehose(cls) -> "FlowConfig":
        """≥ 20,000 public WS messages/s across all markets."""
        return cls(
            messages_per_s=24_000, whale_every_s=0.25, noise_takers_per_s=300.0, maker_count=4, maker_levels=5,
            fair_vol=25,
        )

    @classmethod
    def off(cls) -> "FlowConfig":
        return cls(enabled=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FlowConfig":
        d = dict(d)
        for key in ("whale_sizes", "whale_weights", "maker_size", "noise_size"):
            d[key] = tuple(d[key])
        return cls(**d)


class Flow:
    def __init__(self, engine: "Engine", config: FlowConfig, rng: random.Random) -> None:
        self.engine = engine
        self.config = config
        self.rng = rng
        self.last_ms = 0
        self.budget = 0  # message budget in milli-messages
        self.noise_acc = 0
        self.next_whale_ms = 0
        self.started = False
        # ticker → maker quote slots (Order or None); slot k = (maker, side, level)
        self.quotes: dict[str, list[Order | None]] = {}
        self.whales = 0
        self.whale_log: list[dict] = []  # the last whales, for tests and the control API
        n_slots = config.maker_count * 2 * config.maker_levels
        self._n_slots = n_slots

    # ---- lifecycle hooks --------------------------------------------------------------------------

    def start(self, now_ms: int) -> None:
        if not self.config.enabled:
            return
        cfg = self.config
        for i in range(cfg.maker_count):
            self.engine.ensure_flow_account(f"flow-mm-{i}", cfg.account_cash)
        self.engine.ensure_flow_account("flow-noise", cfg.account_cash)
        for i in range(cfg.whale_accounts):
            self.engine.ensure_flow_account(f"flow-whale-{i}", cfg.account_cash)
        self.started = True
        self.last_ms = now_ms
        self.next_whale_ms = now_ms + self._whale_gap_ms()
        for ticker in self.engine.slots:
            self.market_opened(ticker)

    def reconfigure(self, config: FlowConfig, now_ms: int) -> None:
        """Switch to ``config`` at ``now_ms``. A disabled config pauses the flow: the makers' quotes stay on
        the books and nothing new happens; enabling it again resumes from ``now_ms`` (no catch-up burst)."""
        old = self.config
        relayout = (config.maker_count, config.maker_levels) != (old.maker_count, old.maker_levels)
        if relayout:
            self._withdraw_quotes()  # the slot layout changes: start the books' maker side afresh
            self._n_slots = config.maker_count * 2 * config.maker_levels
        self.config = config
        if not config.enabled:
            self.started = False
            return
        if self.started:  # a new pace: reschedule the next whale on the new mean gap
            self.next_whale_ms = min(self.next_whale_ms, now_ms + self._whale_gap_ms())
            self.budget = min(self.budget, config.messages_per_s * config.max_catchup_ms)
            if relayout:
                for ticker in self.engine.slots:
                    self.market_opened(ticker)
            return
        self.budget = 0
        self.noise_acc = 0
        self.start(now_ms)

    def _withdraw_quotes(self) -> None:
        eng = self.engine
        for ticker, slots in self.quotes.items():
            for order in slots:
                if order is not None and order.status == "resting":
                    eng._cancel(order, "Cancel")
            eng._touch(eng.markets[ticker])
        self.quotes.clear()

    def market_opened(self, ticker: str) -> None:
        if not self.started:
            return
        if ticker not in self.quotes:  # on a resume the quotes left by the pause are kept
            self.quotes[ticker] = [None] * self._n_slots
        self._refill(ticker)

    def market_closed(self, ticker: str) -> None:
        self.quotes.pop(ticker, None)

    # ---- stepping ---------------------------------------------------------------------------------

    def step(self, now_ms: int) -> None:
        if not self.started:
            return
        dt = now_ms - self.last_ms
        if dt <= 0:
            return
        self.last_ms = now_ms
        cfg = self.config
        eng = self.engine
        active = dt if dt < cfg.max_catchup_ms else cfg.max_catchup_ms
        self._drift(dt)
        # time-scheduled takers
        if self.next_whale_ms <= now_ms - cfg.max_catchup_ms:
            self.next_whale_ms = now_ms - cfg.max_catchup_ms + self._whale_gap_ms()
        while self.next_whale_ms <= now_ms:
            self._whale()
            self.next_whale_ms += self._whale_gap_ms()
        self.noise_acc += round(cfg.noise_takers_per_s * 1000) * active
        while self.noise_acc >= 1_000_000:
            self.noise_acc -= 1_000_000
            self._noise()
        # book churn fills the rest of the message budget
        self.budget = min(self.budget + cfg.messages_per_s * active, cfg.messages_per_s * cfg.max_catchup_ms)
        while self.budget > 0 and self.quotes:
            before = eng.public_events
            self._requote()
            self.budget -= max(eng.public_events - before, 1) * 1000

    def _whale_gap_ms(self) -> int:
        return max(1, int(self.rng.expovariate(1.0 / self.config.whale_every_s) * 1000))

    def _drift(self, dt_ms: int) -> None:
        sigma = self.config.fair_vol * math.sqrt(dt_ms / 1000)
        if sigma <= 0:
            return
        gauss = self.rng.gauss
        for ticker in self.engine.slots:
            m = self.engine.markets[ticker]
            fair = m.fair + round(gauss(0.0, sigma))
            m.fair = FAIR_MIN if fair < FAIR_MIN else FAIR_MAX if fair > FAIR_MAX else fair

    # ---- makers -----------------------------------------------------------------------------------

    def _target(self, m: "Market", slot: int) -> tuple[bool, int] | None:
        """(is_bid, YES price) for a maker slot, never crossing the current book."""
        cfg = self.config
        levels = cfg.maker_levels
        side, level = divmod(slot % (2 * levels), levels)
        is_bid = side == 0
        grid = m.grid
        offset = cfg.maker_half_spread + level * cfg.maker_level_gap + self.rng.randrange(cfg.maker_level_gap)
        book = m.book
        if is_bid:
            price = grid.floor(m.fair - offset)
            if book.no.prices:  # stay below the best YES ask
                ask = PRICE_ONE - book.no.prices[-1]
                if price >= ask:
                    price = grid.step_from(ask, -1)
                    if price >= ask:
                        return None
        else:
            price = grid.ceil(m.fair + offset)
            if book.yes.prices:  # stay above the best YES bid
                bid = book.yes.prices[-1]
                if price <= bid:
                    price = grid.step_from(bid, 1)
                    if price <= bid:
                        return None
        return is_bid, price

    def _quote(self, ticker: str, slot: int) -> None:
        eng = self.engine
        m = eng.markets[ticker]
        target = self._target(m, slot)
        if target is None:
            return
        is_bid, price = target
        lo, hi = self.config.maker_size
        count = self.rng.randrange(lo, hi + 1) * COUNT_ONE
        maker = f"flow-mm-{slot // (2 * self.config.maker_levels)}"
        order = eng.place(maker, ticker, is_bid, price, count, "good_till_canceled", "maker")
        self.quotes[ticker][slot] = order if order.status == "resting" else None

    def _requote(self) -> None:
        tickers = self.engine.slots
        ticker = tickers[self.rng.randrange(len(tickers))]
        slots = self.quotes.get(ticker)
        if slots is None:
            return
        slot = self.rng.randrange(self._n_slots)
        old = slots[slot]
        if old is not None and old.status == "resting":
            self.engine._cancel(old, "Cancel")
        slots[slot] = None
        self._quote(ticker, slot)

    def _refill(self, ticker: str) -> None:
        slots = self.quotes.get(ticker)
        if slots is None:
            return
        for slot, order in enumerate(slots):
            if order is None or order.status != "resting":
                slots[slot] = None
                self._quote(ticker, slot)

    # ---- takers -----------------------------------------------------------------------------------

    def _pick_market(self) -> "Market":
        tickers = self.engine.slots
        return self.engine.markets[tickers[self.rng.randrange(len(tickers))]]

    def _noise(self) -> None:
        m = self._pick_market()
        is_bid = self.rng.random() < 0.5
        opp = m.book.no if is_bid else m.book.yes
        if not opp.prices:
            return
        top = opp.prices[-1]
        lo, hi = self.config.noise_size
        count = self.rng.randrange(lo, hi + 1) * COUNT_ONE
        price = PRICE_ONE - top if is_bid else top
        self.engine.place("flow-noise", m.ticker, is_bid, price, count, "immediate_or_cancel", "maker")
        self._refill(m.ticker)

    def _whale(self) -> None:
        cfg = self.config
        rng = self.rng
        m = self._pick_market()
        informed = rng.random() < cfg.informed_fraction
        is_bid = (m.settle_u < m.fair) if informed else rng.random() < 0.5
        size = rng.choices(cfg.whale_sizes, weights=cfg.whale_weights)[0] * COUNT_ONE
        sweep = rng.random() < cfg.sweep_probability
        depth = rng.randint(2, max(2, cfg.sweep_levels)) if sweep else 1
        user = f"flow-whale-{rng.randrange(cfg.whale_accounts)}"
        opp = m.book.no if is_bid else m.book.yes
        if not opp.prices:
            return
        level = opp.prices[-min(depth, len(opp.prices))]
        price = PRICE_ONE - level if is_bid else level
        order = self.engine.place(user, m.ticker, is_bid, price, size, "immediate_or_cancel", "maker")
        self.whales += 1
        self.whale_log.append({
            "ticker": m.ticker, "is_bid": is_bid, "informed": informed, "sweep": sweep, "count": size,
            "filled": order.filled, "price": price, "ts_ms": self.engine.now_ms,
        })
        del self.whale_log[:-200]
        if informed and cfg.informed_impact:
            fair = m.fair + (cfg.informed_impact if is_bid else -cfg.informed_impact)
            m.fair = min(max(fair, FAIR_MIN), FAIR_MAX)
        self._refill(m.ticker)

    # ---- persistence ------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        version, internal, gauss_next = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss_next],
            "last_ms": self.last_ms, "budget": self.budget, "noise_acc": self.noise_acc,
            "next_whale_ms": self.next_whale_ms, "started": self.started, "whales": self.whales,
            "whale_log": list(self.whale_log),
            "quotes": {t: [o.order_id if o is not None else None for o in slots] for t, slots in self.quotes.items()},
        }

    def from_state(self, state: dict[str, Any]) -> None:
        v, internal, gauss_next = state["rng"]
        self.rng.setstate((v, tuple(internal), gauss_next))
        self.last_ms = state["last_ms"]
        self.budget = state["budget"]
        self.noise_acc = state["noise_acc"]
        self.next_whale_ms = state["next_whale_ms"]
        self.started = state["started"]
        self.whales = state["whales"]
        self.whale_log = list(state["whale_log"])
        orders = self.engine.orders
        self.quotes = {
            t: [orders.get(oid) if oid is not None else None for oid in slots] for t, slots in state["quotes"].items()
        }
