"""Data model of the local exchange engine: errors, clock formatting, price grids, orders, books,
positions, accounts, markets and order groups.

Everything is plain Python with ``__slots__`` (the flow drives thousands of orders a second) and
integers in kalshi.units (prices/money in $0.0001, counts in 0.01 contract). Each class can turn
itself into a JSON-ready dict and back, for ``Engine.to_state``/``from_state``.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from typing import Any, Iterator

from kalshi.units import PRICE_ONE

__all__ = [
    "ExchangeError",
    "rfc3339",
    "PRICE_STRUCTURES",
    "PriceGrid",
    "Order",
    "BookSide",
    "Book",
    "Position",
    "Account",
    "Market",
    "OrderGroup",
]


class ExchangeError(Exception):
    """A Kalshi 4xx answer. ``shape``: "nested" {"error":{...}}, "flat" {code,message,details}, "bare" {"msg"}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        details: str | None = None,
        shape: str = "nested",
        service: str | None = "exchange",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message if message is not None else code.replace("_", " ")
        self.details = details
        self.shape = shape
        # Kalshi's nested bodies carry "service":"exchange" except the ones with details (captures).
        self.service = None if details is not None else service
        super().__init__(f"{status} {code}: {self.message}" + (f" ({details})" if details else ""))

    def inner(self) -> dict:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        if self.service is not None and self.shape == "nested":
            body["service"] = self.service
        return body

    def body(self) -> dict:
        if self.shape == "bare":
            return {"msg": self.message}
        if self.shape == "flat":
            return self.inner()
        return {"error": self.inner()}


# ---- time -------------------------------------------------------------------------------------

_SEC_CACHE: dict[int, str] = {}


def rfc3339(ms: int) -> str:
    """Unix ms → RFC3339 UTC like Go's RFC3339Nano (trailing zeros trimmed): 2026-06-11T06:29:30.164Z."""
    sec, frac = divmod(ms, 1000)
    head = _SEC_CACHE.get(sec)
    if head is None:
        if len(_SEC_CACHE) > 4096:
            _SEC_CACHE.clear()
        head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _SEC_CACHE[sec] = head
    if not frac:
        return head + "Z"
    return f"{head}.{frac:03d}".rstrip("0") + "Z"


# ---- price grids ------------------------------------------------------------------------------

# price_level_structure → price_ranges as (start, end, step) in price units.
PRICE_STRUCTURES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "linear_cent": ((0, PRICE_ONE, 100),),
    "deci_cent": ((0, PRICE_ONE, 10),),
    "tapered_deci_cent": ((0, 1000, 10), (1000, 9000, 100), (9000, PRICE_ONE, 10)),
}


class PriceGrid:
    """The valid order prices of one price_level_structure (strictly between 0 and 1)."""

    _cache: dict[str, "PriceGrid"] = {}

    def __init__(self, structure: str) -> None:
        ranges = PRICE_STRUCTURES[structure]
        prices: set[int] = set()
        for start, end, step in ranges:
            prices.update(range(start, end + 1, step))
        prices.discard(0)
        prices.discard(PRICE_ONE)
        self.structure = structure
        self.ranges = ranges
        self.prices = sorted(prices)
        self.valid = frozenset(prices)
        self.min_price = self.prices[0]
        self.max_price = self.prices[-1]

    @classmethod
    def of(cls, structure: str) -> "PriceGrid":
        grid = cls._cache.get(structure)
        if grid is None:
            grid = cls._cache[structure] = cls(structure)
        return grid

    def floor(self, price: int) -> int:
        """Largest valid price ≤ price (clamped into the grid)."""
        i = bisect.bisect_right(self.prices, price) - 1
        return self.prices[max(i, 0)]

    def ceil(self, price: int) -> int:
        i = bisect.bisect_left(self.prices, price)
        return self.prices[min(i, len(self.prices) - 1)]

    def step_from(self, price: int, steps: int) -> int:
        """The grid price ``steps`` ticks away from a grid price (clamped)."""
        i = bisect.bisect_left(self.prices, price) + steps
        return self.prices[min(max(i, 0), len(self.prices) - 1)]


# ---- orders -----------------------------------------------------------------------------------


class Order:
    """One order. ``price`` is always the YES price; asks rest in the NO book at 1 − price."""

    FIELDS = (
        "order_id", "user", "ticker", "is_bid", "price", "initial", "filled", "remaining", "status",
        "tif", "stp", "cid", "group", "exp_ms", "created_ms", "updated_ms", "taker_cost", "maker_cost",
        "taker_fees", "maker_fees", "reason", "seq", "reserved", "cancel_on_pause", "fill_notional",
    )
    __slots__ = FIELDS

    def __init__(
        self, order_id: str, user: str, ticker: str, is_bid: bool, price: int, initial: int, filled: int = 0,
        remaining: int = 0, status: str = "resting", tif: str = "good_till_canceled", stp: str = "taker_at_cross",
        cid: str | None = None, group: str | None = None, exp_ms: int | None = None, created_ms: int = 0,
        updated_ms: int = 0, taker_cost: int = 0, maker_cost: int = 0, taker_fees: int = 0, maker_fees: int = 0,
        reason: str = "", seq: int = 0, reserved: int = 0, cancel_on_pause: bool = False, fill_notional: int = 0,
    ) -> None:
        self.order_id = order_id
        self.user = user
        self.ticker = ticker
        self.is_bid = is_bid
        self.price = price
        self.initial = initial
        self.filled = filled
        self.remaining = remaining
        self.status = status
        self.tif = tif
        self.stp = stp
        self.cid = cid
        self.group = group
        self.exp_ms = exp_ms
        self.created_ms = created_ms
        self.updated_ms = updated_ms
        self.taker_cost = taker_cost
        self.maker_cost = maker_cost
        self.taker_fees = taker_fees
        self.maker_fees = maker_fees
        self.reason = reason
        self.seq = seq
        self.reserved = reserved
        self.cancel_on_pause = cancel_on_pause
        self.fill_notional = fill_notional

    @property
    def book_price(self) -> int:
        """Price of this order in its own bid book (YES price for bids, NO price for asks)."""
        return self.price if self.is_bid else PRICE_ONE - self.price

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "Order":
        return cls(**d)


class BookSide:
    """Bids of one leg: price → FIFO of resting orders, with level totals and a sorted price list."""

    __slots__ = ("levels", "totals", "prices")

    def __init__(self) -> None:
        self.levels: dict[int, deque[Order]] = {}
        self.totals: dict[int, int] = {}
        self.prices: list[int] = []  # ascending; best bid last

    def add(self, order: Order, price: int) -> None:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = deque()
            self.totals[price] = 0
            bisect.insort(self.prices, price)
        level.append(order)
        self.totals[price] += order.remaining

    def remove(self, order: Order, price: int, count: int) -> None:
        """Take an order out of its level (count = its size still on the book)."""
        level = self.levels[price]
        if level[0] is order:
            level.popleft()
        else:
            level.remove(order)
        self.reduce(price, count)
        if not level:
            self._drop(price)

    def reduce(self, price: int, count: int) -> None:
        self.totals[price] -= count

    def pop_front(self, price: int) -> None:
        level = self.levels[price]
        level.popleft()
        if not level:
            self._drop(price)

    def _drop(self, price: int) -> None:
        del self.levels[price]
        del self.totals[price]
        i = bisect.bisect_left(self.prices, price)
        del self.prices[i]

    def best(self) -> int | None:
        return self.prices[-1] if self.prices else None

    def depth(self, n: int = 0) -> list[tuple[int, int]]:
        prices = self.prices[-n:] if n else self.prices
        return [(p, self.totals[p]) for p in prices]

    def orders(self) -> Iterator[Order]:
        for p in self.prices:
            yield from self.levels[p]


class Book:
    __slots__ = ("yes", "no")

    def __init__(self) -> None:
        self.yes = BookSide()
        self.no = BookSide()

    def side_of(self, order: Order) -> BookSide:
        return self.yes if order.is_bid else self.no

    def to_dict(self) -> dict:
        return {
            "yes": [[p, [o.order_id for o in side_levels]] for p, side_levels in ((p, self.yes.levels[p]) for p in self.yes.prices)],
            "no": [[p, [o.order_id for o in side_levels]] for p, side_levels in ((p, self.no.levels[p]) for p in self.no.prices)],
        }


# ---- positions and accounts -------------------------------------------------------------------


class Position:
    """Net position in one market: q signed (+YES/−NO), cost basis of the open contracts (average cost)."""

    FIELDS = ("ticker", "event_ticker", "q", "exposure", "realized", "fees", "traded", "volume", "updated_ms", "settled")
    __slots__ = FIELDS

    def __init__(self, ticker: str, event_ticker: str, **kw: Any) -> None:
        self.ticker = ticker
        self.event_ticker = event_ticker
        self.q = kw.get("q", 0)
        self.exposure = kw.get("exposure", 0)
        self.realized = kw.get("realized", 0)
        self.fees = kw.get("fees", 0)
        self.traded = kw.get("traded", 0)
        self.volume = kw.get("volume", 0)
        self.updated_ms = kw.get("updated_ms", 0)
        self.settled = kw.get("settled", False)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        d = dict(d)
        return cls(d.pop("ticker"), d.pop("event_ticker"), **d)


class Account:
    """One user: cash, money reserved for resting buys, positions and (for real users) history."""

    __slots__ = (
        "user", "cash", "reserved", "positions", "order_ids", "fills", "settlements", "used_cids",
        "open_cids", "groups", "is_flow", "updated_ms",
    )

    def __init__(self, user: str, cash: int, is_flow: bool = False) -> None:
        self.user = user
        self.cash = cash
        self.reserved = 0
        self.positions: dict[str, Position] = {}
        self.order_ids: list[str] = []  # creation order (real users only)
        # fills: (seq, trade_id, order_id, ticker, is_bid, count, yes_price, is_taker, fee, ts_ms)
        self.fills: list[list] = []
        self.settlements: list[dict] = []  # {"seq", "ts_ms", "event_ticker", "row": {...}}
        self.used_cids: set[str] = set()
        self.open_cids: dict[str, str] = {}  # client_order_id → order_id of open orders
        self.groups: dict[str, "OrderGroup"] = {}
        self.is_flow = is_flow
        self.updated_ms = 0

    @property
    def available(self) -> int:
        return self.cash - self.reserved

    def to_dict(self) -> dict:
        return {
            "user": self.user, "cash": self.cash, "reserved": self.reserved, "is_flow": self.is_flow,
            "updated_ms": self.updated_ms,
            "positions": [p.to_dict() for p in self.positions.values()],
            "order_ids": list(self.order_ids), "fills": [list(f) for f in self.fills],
            "settlements": list(self.settlements), "used_cids": sorted(self.used_cids),
            "open_cids": dict(self.open_cids), "groups": [g.to_dict() for g in self.groups.values()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Account":
        acct = cls(d["user"], d["cash"], d["is_flow"])
        acct.reserved = d["reserved"]
        acct.updated_ms = d["updated_ms"]
        acct.positions = {p["ticker"]: Position.from_dict(p) for p in d["positions"]}
        acct.order_ids = list(d["order_ids"])
        acct.fills = [list(f) for f in d["fills"]]
        acct.settlements = list(d["settlements"])
        acct.used_cids = set(d["used_cids"])
        acct.open_cids = dict(d["open_cids"])
        acct.groups = {g["group_id"]: OrderGroup.from_dict(g) for g in d["groups"]}
        return acct


class OrderGroup:
    """Contracts matched by member orders over a rolling 15 s window; at the limit, trigger."""

    WINDOW_MS = 15_000
    __slots__ = ("group_id", "limit", "window", "blocked", "members", "created_ms")

    def __init__(self, group_id: str, limit: int, created_ms: int) -> None:
        self.group_id = group_id
        self.limit = limit
        self.window: deque[tuple[int, int]] = deque()  # (ts_ms, matched count)
        self.blocked = False
        self.members: list[str] = []  # order ids ever placed in the group
        self.created_ms = created_ms

    def matched(self, now_ms: int) -> int:
        cutoff = now_ms - self.WINDOW_MS
        while self.window and self.window[0][0] <= cutoff:
            self.window.popleft()
        return sum(c for _, c in self.window)

    def to_dict(self) -> dict:
        return {
            "group_id": self.group_id, "limit": self.limit, "window": [list(w) for w in self.window],
            "blocked": self.blocked, "members": list(self.members), "created_ms": self.created_ms,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "OrderGroup":
        g = cls(d["group_id"], d["limit"], d["created_ms"])
        g.window = deque((a, b) for a, b in d["window"])
        g.blocked = d["blocked"]
        g.members = list(d["members"])
        return g


# ---- markets ----------------------------------------------------------------------------------


class Market:
    """A binary market with its lifecycle times, statistics and the flow's hidden fair value.

    ``fair`` (price units) is the synthetic fair probability of YES; ``settle_u`` is a uniform draw in
    [0, 1) made at creation: the market resolves YES iff settle_u < fair at determination, i.e. with
    probability = final fair value.
    """

    FIELDS = (
        "ticker", "event_ticker", "series_ticker", "market_id", "title", "yes_sub_title", "no_sub_title",
        "structure", "created_ms", "open_ms", "close_ms", "determine_ms", "finalize_ms", "settled_ms",
        "updated_ms", "status", "result", "last_price", "prev_price", "prev_yes_bid", "prev_yes_ask",
        "volume", "open_interest", "dollar_volume", "floor_strike", "fair", "settle_u", "seq",
        "last_trade_size", "vol_buckets", "ticker_key",
    )
    __slots__ = FIELDS + ("book", "grid")

    def __init__(self, **kw: Any) -> None:
        for name in self.FIELDS:
            setattr(self, name, kw.get(name))
        if self.vol_buckets is None:
            self.vol_buckets = deque()
        else:
            self.vol_buckets = deque((a, b) for a, b in self.vol_buckets)
        self.book = Book()
        self.grid = PriceGrid.of(self.structure)
        # what the last ticker message showed (persisted: a restored engine must not resend it)
        if self.ticker_key is not None:
            self.ticker_key = tuple(self.ticker_key)

    def add_volume(self, ts_ms: int, count: int) -> None:
        minute = ts_ms // 60_000
        if self.vol_buckets and self.vol_buckets[-1][0] == minute:
            m, c = self.vol_buckets[-1]
            self.vol_buckets[-1] = (m, c + count)
        else:
            self.vol_buckets.append((minute, count))

    def volume_24h(self, now_ms: int) -> int:
        cutoff = now_ms // 60_000 - 24 * 60
        while self.vol_buckets and self.vol_buckets[0][0] <= cutoff:
            self.vol_buckets.popleft()
        return sum(c for _, c in self.vol_buckets)

    def to_dict(self) -> dict:
        d = {name: getattr(self, name) for name in self.FIELDS}
        d["vol_buckets"] = [list(b) for b in self.vol_buckets]
        return d
