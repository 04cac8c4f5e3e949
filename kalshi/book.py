"""L2 order book of one Kalshi market: YES bids and NO bids, in integer units.

Kalshi shows bids only (protocol doc §5): a NO bid at q is a YES ask at 1 − q and a YES bid at p a NO
ask at 1 − p. Prices are price units ($0.0001), sizes count units (0.01 contract). NO levels are
kept in NO-leg prices, as the default feed sends them (use_yes_price=false).

Validity: a new book is invalid until its first snapshot. A delta that would drive a level below
zero, or a snapshot with a negative size or a duplicate price, marks the book invalid; an invalid
book holds no levels, answers every query with "empty" (None / () / 0 / an empty quote) and
ignores deltas until the next snapshot, so nothing can trade off a book known to be wrong.
``invalid_reason`` says why. A crossed book (yes bid + no bid ≥ 1) is reported by ``crossed()``
but not invalidated: the caller decides (it cannot rest on Kalshi, so it means a missed delta).

Levels are plain dicts (apply_delta is one dict update); the best price of each side is cached and
recomputed lazily only after the best level is removed; sorted level tuples are cached until the
side changes. Ticks come from the market's price_ranges, so nothing here assumes 1¢ steps.
"""

from __future__ import annotations

from typing import Iterable

import msgspec

from .units import PRICE_ONE, notional, safe_repr

__all__ = ["OrderBook", "BuyQuote"]

_UNKNOWN = -1  # cached best price must be recomputed; 0 means "side is empty"


class BuyQuote(msgspec.Struct, frozen=True, gc=False):
    """What sweeping the book for ``count`` would cost now.

    ``cost`` is money units, the sum over levels of ``units.notional`` (each level is one fill);
    ``average_price`` is the cost-weighted price rounded up to $0.0001 (None when nothing fills);
    ``worst_price`` the last (highest) price paid, in the bought outcome's price.
    """

    count_filled: int
    cost: int
    average_price: int | None
    worst_price: int | None
    levels_walked: int


_EMPTY_QUOTE = BuyQuote(0, 0, None, None, 0)


class OrderBook:
    __slots__ = (
        "ticker",
        "valid",
        "invalid_reason",
        "_yes",
        "_no",
        "_yes_best",
        "_no_best",
        "_yes_sorted",
        "_no_sorted",
    )

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        self.valid = False
        self.invalid_reason: str | None = "no snapshot yet"
        self._yes: dict[int, int] = {}
        self._no: dict[int, int] = {}
        self._yes_best = 0
        self._no_best = 0
        self._yes_sorted: tuple[tuple[int, int], ...] | None = ()
        self._no_sorted: tuple[tuple[int, int], ...] | None = ()

    def __repr__(self) -> str:
        state = "valid" if self.valid else f"invalid: {self.invalid_reason}"
        return (
            f"OrderBook({self.ticker!r}, {state}, yes={self.best_yes_bid()}, no={self.best_no_bid()}, "
            f"depth={len(self._yes)}/{len(self._no)})"
        )

    # -- updates --------------------------------------------------------------------------

    def apply_snapshot(
        self, yes_levels: Iterable[tuple[int, int]], no_levels: Iterable[tuple[int, int]]
    ) -> bool:
        """Replace the whole book. Zero-size levels are dropped; a negative size, a price outside
        (0, 1) or a duplicate price makes the book invalid (returns False)."""
        sides = []
        for name, levels in (("yes", yes_levels), ("no", no_levels)):
            book: dict[int, int] = {}
            for price, size in levels:
                if type(price) is not int or type(size) is not int:
                    raise TypeError(f"{name} level ({safe_repr(price)}, {safe_repr(size)}): expected ints")
                if not 0 < price < PRICE_ONE:
                    self.invalidate(f"snapshot {name} price {price} outside (0, 1)")
                    return False
                if size < 0:
                    self.invalidate(f"snapshot {name} size {size} at {price} is negative")
                    return False
                if price in book:
                    self.invalidate(f"snapshot {name} has price {price} twice")
                    return False
                if size:
                    book[price] = size
            sides.append(book)
        self._yes, self._no = sides
        self._yes_best = self._no_best = _UNKNOWN
        self._yes_sorted = self._no_sorted = None
        self.valid = True
        self.invalid_reason = None
        return True

    def apply_delta(self, side: str, price: int, delta: int) -> bool:
        """``book[side][price] += delta``; the level is removed at 0. Returns False (and the book
        becomes invalid) when the level would go negative; False without change when invalid."""
        if not self.valid:
            return False
        if side == "yes":
            levels = self._yes
        elif side == "no":
            levels = self._no
        else:
            raise ValueError(f"side must be 'yes' or 'no', got {safe_repr(side)}")
        if not 0 < price < PRICE_ONE:
            raise ValueError(f"price {safe_repr(price)} outside (0, {PRICE_ONE})")
        new = levels.get(price, 0) + delta
        if new > 0:
            levels[price] = new
            if side == "yes":
                if self._yes_best != _UNKNOWN and price > self._yes_best:
                    self._yes_best = price
                self._yes_sorted = None
            else:
                if self._no_best != _UNKNOWN and price > self._no_best:
                    self._no_best = price
                self._no_sorted = None
            return True
        if new < 0:
            self.invalidate(f"{side} level {price} would go to {new}")
            return False
        if price in levels:  # new == 0: the level is gone
            del levels[price]
            if side == "yes":
                if price == self._yes_best:
                    self._yes_best = _UNKNOWN
                self._yes_sorted = None
            else:
                if price == self._no_best:
                    self._no_best = _UNKNOWN
                self._no_sorted = None
        return True

    def invalidate(self, reason: str) -> None:
        """Drop all levels until the next snapshot."""
        self.valid = False
        self.invalid_reason = reason
        self._yes = {}
        self._no = {}
        self._yes_best = self._no_best = 0
        self._yes_sorted = self._no_sorted = ()

    # -- queries --------------------------------------------------------------------------

    def _best(self, side: str) -> int:
        if side == "yes":
            if self._yes_best == _UNKNOWN:
                self._yes_best = max(self._yes) if self._yes else 0
            return self._yes_best
        if self._no_best == _UNKNOWN:
            self._no_best = max(self._no) if self._no else 0
        return self._no_best

    def best_yes_bid(self) -> tuple[int, int] | None:
        price = self._best("yes")
        return (price, self._yes[price]) if price else None

    def best_no_bid(self) -> tuple[int, int] | None:
        price = self._best("no")
        return (price, self._no[price]) if price else None

    def best_yes_ask(self) -> tuple[int, int] | None:
        """The best NO bid seen from the YES side: (1 − q, size)."""
        price = self._best("no")
        return (PRICE_ONE - price, self._no[price]) if price else None

    def best_no_ask(self) -> tuple[int, int] | None:
        price = self._best("yes")
        return (PRICE_ONE - price, self._yes[price]) if price else None

    def spread(self) -> int | None:
        """Best YES ask − best YES bid in price units (None when a side is empty)."""
        yes, no = self._best("yes"), self._best("no")
        if not yes or not no:
            return None
        return PRICE_ONE - no - yes

    def crossed(self) -> bool:
        yes, no = self._best("yes"), self._best("no")
        return bool(yes and no and yes + no >= PRICE_ONE)

    def _side(self, side: str) -> dict[int, int]:
        if side == "yes":
            return self._yes
        if side == "no":
            return self._no
        raise ValueError(f"side must be 'yes' or 'no', got {safe_repr(side)}")

    def depth(self, side: str) -> int:
        return len(self._side(side))

    def total_size(self, side: str) -> int:
        return sum(self._side(side).values())

    def levels(self, side: str) -> tuple[tuple[int, int], ...]:
        """Bid levels of ``side`` ascending by price (best bid last), as Kalshi lists them."""
        levels = self._side(side)
        if side == "yes":
            if self._yes_sorted is None:
                self._yes_sorted = tuple(sorted(levels.items()))
            return self._yes_sorted
        if self._no_sorted is None:
            self._no_sorted = tuple(sorted(levels.items()))
        return self._no_sorted

    def buy_cost(self, outcome: str, count: int, limit_price: int | None = None) -> BuyQuote:
        """Cost of buying ``count`` (count units) of ``outcome`` by sweeping the opposite bids.

        Buying YES takes NO bids from the highest q, i.e. YES prices 1 − q ascending; buying NO
        takes YES bids likewise. ``limit_price`` (in the bought outcome's price) stops the walk
        before any level priced above it. The quote may fill less than ``count``.
        """
        if outcome == "yes":
            opposite = "no"
        elif outcome == "no":
            opposite = "yes"
        else:
            raise ValueError(f"outcome must be 'yes' or 'no', got {safe_repr(outcome)}")
        if type(count) is not int or count <= 0:
            raise ValueError(f"count must be a positive int of count units, got {safe_repr(count)}")
        remaining = count
        cost = 0
        raw = 0  # sum of take × price, for an exact average
        worst = None
        walked = 0
        for bid, size in reversed(self.levels(opposite)):
            price = PRICE_ONE - bid
            if limit_price is not None and price > limit_price:
                break
            take = size if size < remaining else remaining
            cost += notional(take, price)
            raw += take * price
            worst = price
            walked += 1
            remaining -= take
            if not remaining:
                break
        filled = count - remaining
        if not filled:
            return _EMPTY_QUOTE
        average = -(-raw // filled)  # round up: never understate the price paid
        return BuyQuote(filled, cost, average, worst, walked)
