"""Follow-the-whale rules as pure logic: whale sizing, sweep grouping, the whale queue, the token
bucket and the executor's decision. No threads, no pykka, no clock: time is always passed in.

Times: ``now_ms``/``ts_ms`` are exchange (wall-clock) milliseconds — a whale's age is measured
against the exchange's trade time. The token bucket takes any monotonic millisecond clock; the
caller keeps one clock per bucket.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
from collections.abc import Hashable, Iterator, Set
from dataclasses import dataclass, field, replace
from fractions import Fraction
from types import MappingProxyType
from typing import AbstractSet, Iterable, Mapping, Protocol

from kalshi.units import (
    CENT,
    COUNT_ONE,
    MONEY_ONE,
    PRICE_ONE,
    UnitError,
    format_price,
    notional,
    parse_count,
    parse_price,
    safe_repr,
)
from messages.whale import (
    FINAL_ACTIONS,
    FOLLOW,
    RATE_LIMITED,
    SKIPPED_AGE,
    SKIPPED_BOOK_STALE,
    SKIPPED_CHASED,
    SKIPPED_DEPTH,
    SKIPPED_GATE,
    SKIPPED_ORDERS,
    SKIPPED_POSITION,
    SKIPPED_RISK,
    SKIPPED_UNKNOWN_OUTCOME,
    Decision,
    OrderPlan,
    QueueStats,
    Whale,
)

__all__ = [
    "PublicTrade",
    "SizeQuote",
    "whale_size",
    "whale_id_for",
    "client_order_id_for",
    "WhaleQueue",
    "SetView",
    "EvaluatedWhales",
    "TokenBucket",
    "FollowRules",
    "BookView",
    "Context",
    "decide",
    "process_queue",
    "event_of",
    "Whale",
    "Decision",
    "OrderPlan",
    "QueueStats",
]


# --- sizing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicTrade:
    """One print of the public ``trade`` channel, parsed into units."""

    trade_id: str
    market: str
    taker_side: str  # "yes" | "no": the outcome the taker bought
    yes_price: int
    no_price: int
    count: int
    ts_ms: int

    def __post_init__(self) -> None:
        if not self.trade_id or not isinstance(self.trade_id, str):
            raise UnitError("trade_id", self.trade_id, "missing")
        if not self.market or not isinstance(self.market, str):
            raise UnitError("market_ticker", self.market, "missing")
        if self.taker_side not in ("yes", "no"):
            raise UnitError("taker_side", self.taker_side, "expected 'yes' or 'no'")
        if not (0 < self.yes_price < PRICE_ONE and self.yes_price + self.no_price == PRICE_ONE):
            raise UnitError("yes_price", (self.yes_price, self.no_price), "prices must be in (0, 1) and sum to 1")
        if self.count <= 0:
            raise UnitError("count", self.count, "must be positive")

    @classmethod
    def from_printed(cls, printed) -> "PublicTrade":
        """From a ``messages.market.TradePrinted``; raises UnitError on inconsistent fields."""
        return cls(
            trade_id=printed.trade_id,
            market=printed.market_ticker,
            taker_side=printed.taker_side,
            yes_price=printed.yes_price,
            no_price=printed.no_price,
            count=printed.count,
            ts_ms=printed.ts_ms,
        )

    @classmethod
    def from_wire(cls, msg: Mapping) -> "PublicTrade":
        """From a ``trade`` channel ``msg`` (or a REST trade); raises UnitError on bad fields."""
        side = msg.get("taker_outcome_side") or msg.get("taker_side")
        ts_ms = msg.get("ts_ms")
        if type(ts_ms) is not int:
            ts = msg.get("ts")
            if type(ts) is not int:
                raise UnitError("ts_ms", ts_ms, "missing trade time")
            ts_ms = ts * 1000
        return cls(
            trade_id=msg.get("trade_id"),
            market=msg.get("market_ticker") or msg.get("ticker"),
            taker_side=side,
            yes_price=parse_price(msg.get("yes_price_dollars"), "yes_price_dollars"),
            no_price=parse_price(msg.get("no_price_dollars"), "no_price_dollars"),
            count=parse_count(msg.get("count_fp"), "count_fp"),
            ts_ms=ts_ms,
        )

    @property
    def taker_price(self) -> int:
        return self.yes_price if self.taker_side == "yes" else self.no_price


@dataclass(frozen=True, slots=True)
class SizeQuote:
    price: int
    cost: int
    payout: int
    whale_size: int


def whale_size(taker_side: str, yes_price: int, no_price: int, count: int) -> SizeQuote:
    """The seed's whale size: max(cost, payout), cost = count × the taker's price, payout = count × $1.

    For any price below $1 the payout is always the larger, so this is in effect the payout (the
    number of contracts); the max() is kept to stay faithful to the seed's definition.
    """
    if taker_side not in ("yes", "no"):
        raise UnitError("taker_side", taker_side, "expected 'yes' or 'no'")
    price = yes_price if taker_side == "yes" else no_price
    cost = notional(count, price)
    payout = notional(count, PRICE_ONE)
    return SizeQuote(price, cost, payout, max(cost, payout))


def _short_hash(text: str, n: int = 20) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def whale_id_for(first_trade_id: str) -> str:
    """A whale's id, from the first trade id of its sweep: stable as more prints arrive."""
    return "w-" + _short_hash(first_trade_id, 16)


def client_order_id_for(whale_id: str, strategy_version: str) -> str:
    """The order id of the order following ``whale_id``: the same for every retry and restart."""
    return "tv3-" + _short_hash(f"{strategy_version}|{whale_id}", 24)


# --- the whale queue ------------------------------------------------------------------------


class _Group:
    """The prints of one taker order so far (mutable, private to the queue).

    Running totals only: the whale id and the ``Whale`` are built when the sweep qualifies, and the
    Whale is kept until the sweep grows, so a small print costs no Whale and no hash.
    """

    __slots__ = ("key", "first_trade_id", "trade_ids", "count", "price_volume", "prices", "size", "state",
                 "tracked", "_whale_id", "_whale")

    def __init__(self, key: tuple[str, str, int], trade: PublicTrade) -> None:
        self.key = key
        self.first_trade_id = trade.trade_id
        self.trade_ids: list[str] = []
        self.count = 0
        self.price_volume = 0
        self.prices: set[int] = set()
        self.size = 0  # whale_size: max(cost, payout)
        self.state = "pending"  # pending | queued | removed
        self.tracked = False  # has an entry in the queue's expiry heap (it entered the queue once)
        self._whale_id: str | None = None
        self._whale: Whale | None = None
        self.add(trade)

    def add(self, trade: PublicTrade) -> None:
        price = trade.taker_price
        self.trade_ids.append(trade.trade_id)
        self.count += trade.count
        self.price_volume += trade.count * price
        self.prices.add(price)
        self.size = max(self._cost(), notional(self.count, PRICE_ONE))
        self._whale = None

    def _cost(self) -> int:
        q, r = divmod(self.price_volume, COUNT_ONE)
        return q + (1 if r else 0)

    @property
    def whale_id(self) -> str:
        if self._whale_id is None:
            self._whale_id = whale_id_for(self.first_trade_id)
        return self._whale_id

    def out_of_band(self, band_min: int, band_max: int) -> bool:
        """The volume-weighted price (price_volume / count) at or beyond a band edge, in integers."""
        return self.price_volume >= band_max * self.count or self.price_volume <= band_min * self.count

    def whale(self) -> Whale:
        if self._whale is None:
            market, side, ts_ms = self.key
            cost = self._cost()
            payout = notional(self.count, PRICE_ONE)
            self._whale = Whale(
                whale_id=self.whale_id,
                market=market,
                side=side,
                count=self.count,
                price_volume=self.price_volume,
                cost=cost,
                payout=payout,
                whale_size=max(cost, payout),
                min_price=min(self.prices),
                max_price=max(self.prices),
                levels=len(self.prices),
                trade_ids=tuple(self.trade_ids),
                ts_ms=ts_ms,
            )
        return self._whale


class WhaleQueue:
    """Whales of the last ``window_minutes``, the ``capacity`` largest first.

    Prints of one taker order that swept several levels share market, taker side and ``ts_ms``;
    they are grouped into one whale (the group is tracked even while it is below the threshold,
    since the sweep as a whole may qualify). A sweep's prints arrive together, so once a print of
    the same market and side with another ``ts_ms`` arrives, a group that never entered the queue
    is dropped: only its trade ids stay, for deduplication. Trades are deduplicated by ``trade_id``
    for as long as they are inside the window; older trades are discarded as stale, so a backfill
    can never bring back a trade the window has forgotten.
    """

    def __init__(
        self,
        *,
        capacity: int = 10,
        window_minutes: int = 5,
        min_size: int = 100 * MONEY_ONE,
        band_min: int = 500,
        band_max: int = 9_500,
        markets: frozenset[str] | None = None,
        max_tracked_trades: int = 200_000,
    ) -> None:
        if capacity < 1 or window_minutes < 1 or min_size < 1 or max_tracked_trades < 1:
            raise ValueError("whale queue: capacity, window, min size and trade cap must be positive")
        if not 0 <= band_min < band_max <= PRICE_ONE:
            raise ValueError("whale queue: need 0 <= band_min < band_max <= 1")
        self.capacity = capacity
        self.window_minutes = window_minutes
        self.window_ms = window_minutes * 60_000
        self.min_size = min_size
        self.band_min = band_min
        self.band_max = band_max
        self.markets = markets
        self.max_tracked_trades = max_tracked_trades
        self._groups: dict[tuple[str, str, int], _Group] = {}  # sweeps that may grow or that entered the queue
        self._open: dict[tuple[str, str], _Group] = {}  # (market, side) → the group of its latest print
        # trade id → its group while that is kept, else the trade's ts_ms (a dropped small sweep)
        self._by_trade: dict[str, _Group | int] = {}
        self._arrivals: collections.deque[str] = collections.deque()  # trade ids in arrival order
        self._expiry: list[tuple[int, tuple[str, str, int]]] = []  # heap of (ts_ms, key) of queued groups
        self._queued: dict[str, _Group] = {}  # whale_id → group, at most `capacity`
        self.trades_seen = 0
        self.trades_accepted = 0  # trades that are part of a whale that entered the queue
        self.duplicates = 0
        self.discards: dict[str, int] = {}

    # -- intake --

    def _discard(self, reason: str, n: int = 1) -> tuple[str, None]:
        self.discards[reason] = self.discards.get(reason, 0) + n
        return reason, None

    @classmethod
    def from_settings(cls, settings, markets: frozenset[str] | None = None) -> "WhaleQueue":
        """From ``actors.settings.Settings`` (the WHALE_* values, in cents)."""
        return cls(
            capacity=settings.whale_queue_size,
            window_minutes=settings.whale_window_minutes,
            min_size=settings.whale_min_size_cents * CENT,
            band_min=settings.price_band_min_cents * CENT,
            band_max=settings.price_band_max_cents * CENT,
            markets=markets,
        )

    def add(self, trade: PublicTrade, now_ms: int) -> tuple[str, Whale | None]:
        """Take one print. Returns (outcome, whale): outcome is ``new`` or ``grown`` (the whale is
        in the queue), or why the trade did not make a queued whale: ``duplicate`` (with the whale
        the first sighting joined, if it was one), ``stale``, ``market``, ``below_threshold``,
        ``band``, ``queue_full``, ``processed``."""
        self.trades_seen += 1
        horizon = now_ms - self.window_ms
        seen = self._by_trade.get(trade.trade_id)
        if seen is not None and (seen.key[2] if type(seen) is _Group else seen) >= horizon:
            # F04: a repeat never makes a second whale; the whale it belongs to (if its group
            # qualified) is returned so the caller can journal the sighting as a duplicate.
            self.duplicates += 1
            if type(seen) is _Group and seen.state != "pending":
                return "duplicate", seen.whale()
            return "duplicate", None
        if trade.ts_ms < horizon:
            return self._discard("stale")
        if self.markets is not None and trade.market not in self.markets:
            return self._discard("market")

        key = (trade.market, trade.taker_side, trade.ts_ms)
        group = self._groups.get(key)
        if group is None:
            group = _Group(key, trade)
            self._groups[key] = group
        else:
            group.add(trade)
        lane = key[:2]
        latest = self._open.get(lane)
        if latest is not group:
            if latest is not None and latest.state == "pending":
                self._close(latest)  # another ts_ms in its market and side: that sweep is over
            self._open[lane] = group
        self._by_trade[trade.trade_id] = group
        self._arrivals.append(trade.trade_id)
        try:
            return self._judge(group)
        finally:
            if len(self._by_trade) > self.max_tracked_trades:
                self._evict_oldest()

    def _judge(self, group: _Group) -> tuple[str, Whale | None]:
        """Whether the group (which just took a print) is a queued whale now."""
        if group.state == "removed":
            self.trades_accepted += 1  # part of a whale already handled: not a new signal
            return "processed", None
        if group.size < self.min_size:
            return self._discard("below_threshold")
        if group.out_of_band(self.band_min, self.band_max):
            if group.state == "queued":
                # More prints moved the sweep out of the band: it is no longer a signal.
                del self._queued[group.whale_id]
                group.state = "pending"
            return self._discard("band")
        if group.state == "queued":
            self.trades_accepted += 1
            return "grown", group.whale()
        if len(self._queued) >= self.capacity:
            smallest = min(self._queued.values(), key=lambda g: (g.size, -g.key[2]))
            if smallest.size >= group.size:
                return self._discard("queue_full")
            del self._queued[smallest.whale_id]
            smallest.state = "pending"
        self._queued[group.whale_id] = group
        group.state = "queued"
        if not group.tracked:
            group.tracked = True
            heapq.heappush(self._expiry, (group.key[2], group.key))
        self.trades_accepted += len(group.trade_ids)
        return "new", group.whale()

    def _close(self, group: _Group) -> None:
        """A sweep that never entered the queue and can no longer grow: keep only its trade ids."""
        ts = group.key[2]
        for trade_id in group.trade_ids:
            if self._by_trade.get(trade_id) is group:
                self._by_trade[trade_id] = ts
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
        if self._open.get(group.key[:2]) is group:
            del self._open[group.key[:2]]

    def _drop_group(self, group: _Group) -> int:
        """Forget a group and its trade ids; returns how many trade ids went."""
        forgotten = 0
        for trade_id in group.trade_ids:
            if self._by_trade.get(trade_id) is group:
                del self._by_trade[trade_id]
                forgotten += 1
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
        if self._open.get(group.key[:2]) is group:
            del self._open[group.key[:2]]
        if group.state == "queued":
            self._queued.pop(group.whale_id, None)
            group.state = "pending"
        return forgotten

    def _forget_front(self) -> tuple[int, int] | None:
        """Forget the trade id that arrived first (with its whole group if that is kept): (ts_ms, how
        many ids went), or None when nothing is left. Ids already forgotten are skipped."""
        while self._arrivals:
            trade_id = self._arrivals.popleft()
            seen = self._by_trade.get(trade_id)
            if seen is None:
                continue
            if type(seen) is _Group:
                return seen.key[2], self._drop_group(seen)
            del self._by_trade[trade_id]
            return seen, 1
        return None

    def _evict_oldest(self) -> None:
        # Memory bound under a trade storm: forget the earliest trades (and their sweeps) first (counted).
        while len(self._by_trade) > self.max_tracked_trades:
            gone = self._forget_front()
            if gone is None:
                break
            self._discard("evicted", gone[1])

    # -- upkeep --

    def prune(self, now_ms: int) -> int:
        """Forget everything older than the window; returns how many whales left the queue."""
        before = len(self._queued)
        horizon = now_ms - self.window_ms
        while self._expiry and self._expiry[0][0] < horizon:
            _, key = heapq.heappop(self._expiry)
            group = self._groups.get(key)
            if group is not None:
                self._drop_group(group)
        # Trade ids leave in arrival order (about time order: a late arrival waits behind a newer one,
        # which costs memory for a while, never correctness — add() checks each id's own time).
        arrivals, by_trade = self._arrivals, self._by_trade
        while arrivals:
            seen = by_trade.get(arrivals[0])
            if seen is None:
                arrivals.popleft()  # forgotten with its group already
            elif (seen.key[2] if type(seen) is _Group else seen) < horizon:
                self._forget_front()
            else:
                break
        return before - len(self._queued)

    def remove(self, whale_id: str) -> bool:
        """Take a whale out after a final decision; later prints of its sweep will not bring it back."""
        group = self._queued.pop(whale_id, None)
        if group is None:
            return False
        group.state = "removed"
        return True

    # -- views --

    def snapshot(self) -> tuple[Whale, ...]:
        """Queued whales, largest first (ties: older first, then by id, for a stable order)."""
        whales = [g.whale() for g in self._queued.values()]
        whales.sort(key=lambda w: (-w.whale_size, w.ts_ms, w.whale_id))
        return tuple(whales)

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def tracked_trades(self) -> int:
        """Trade ids remembered for deduplication."""
        return len(self._by_trade)

    @property
    def tracked_sweeps(self) -> int:
        """Sweeps kept whole: the latest of each market and side, and those that entered the queue."""
        return len(self._groups)

    def stats(self) -> QueueStats:
        discarded = self.trades_seen - self.trades_accepted
        rate_bp = (discarded * 10_000) // self.trades_seen if self.trades_seen else 0
        return QueueStats(
            trades_seen=self.trades_seen,
            trades_discarded=discarded,
            duplicates=self.duplicates,
            discard_rate_bp=rate_bp,
            queue_size=len(self._queued),
            window_minutes=self.window_minutes,
            min_size=self.min_size,
        )


# --- what the executor has evaluated ----------------------------------------------------------


class SetView(Set):
    """A read-only set over other sets, without copying them: ``view | more`` adds a layer.

    The executor hands its live id memories to the decision this way; a pass that decides several
    whales layers the new ids on top instead of copying everything it has evaluated.
    """

    __slots__ = ("_parts",)

    def __init__(self, *parts: Iterable) -> None:
        flat: list[AbstractSet] = []
        for part in parts:
            if isinstance(part, SetView):
                flat.extend(part._parts)
            else:
                flat.append(part if isinstance(part, Set) else frozenset(part))
        self._parts = tuple(flat)

    def __contains__(self, item: object) -> bool:
        return any(item in part for part in self._parts)

    def __iter__(self) -> Iterator:
        if len(self._parts) == 1:
            yield from self._parts[0]
            return
        seen: set = set()
        for part in self._parts:
            for item in part:
                if item not in seen:
                    seen.add(item)
                    yield item

    def __len__(self) -> int:
        if len(self._parts) == 1:
            return len(self._parts[0])
        return sum(1 for _ in self)

    def isdisjoint(self, other: Iterable) -> bool:
        other = other if isinstance(other, (tuple, list, set, frozenset)) else tuple(other)
        return all(part.isdisjoint(other) for part in self._parts)

    def __or__(self, other: Iterable) -> "SetView":
        # A union is a value: a mutable operand is copied (the layers below are the owner's views).
        return SetView(self, other if isinstance(other, (frozenset, SetView)) else frozenset(other))

    __ror__ = __or__

    def __repr__(self) -> str:
        return f"SetView({len(self)} items)"

    @classmethod
    def _from_iterable(cls, items: Iterable) -> frozenset:
        return frozenset(items)  # the other set operations (&, -, ^) give plain frozensets


class EvaluatedWhales:
    """Whales with a final decision, their trade ids and sweeps, for as long as they can matter.

    A whale reaches the executor only from the tracker's queue, which holds whales of the last
    window; and a whale older than the follow rules' max age can only be skipped for age. So an
    entry is kept ``retention_ms`` (window + max age) past its trade time and then forgotten: the
    memory stays bounded on a long run, and the journal still holds every decision for replay.
    ``whale_ids``, ``trade_ids`` and ``sweeps`` are live read-only views (no copies).
    """

    def __init__(self, retention_ms: int) -> None:
        if retention_ms <= 0:
            raise ValueError("evaluated whales: retention must be positive")
        self.retention_ms = retention_ms
        self._whales: dict[str, int] = {}  # id → the latest trade time it was evaluated with
        self._trades: dict[str, int] = {}
        self._sweeps: dict[tuple[str, str, int], int] = {}
        self._expiry: list[tuple[int, int, str, tuple[str, ...], tuple[str, str, int] | None]] = []
        self._n = 0  # heap tie-breaker
        self.whale_ids = SetView(self._whales.keys())
        self.trade_ids = SetView(self._trades.keys())
        self.sweeps = SetView(self._sweeps.keys())

    def add(self, whale_id: str, trade_ids: Iterable[str], sweep: tuple[str, str, int] | None, ts_ms: int) -> None:
        trade_ids = tuple(trade_ids)
        _remember(self._whales, whale_id, ts_ms)
        for trade_id in trade_ids:
            _remember(self._trades, trade_id, ts_ms)
        if sweep is not None:
            _remember(self._sweeps, sweep, ts_ms)
        self._n += 1
        heapq.heappush(self._expiry, (ts_ms, self._n, whale_id, trade_ids, sweep))

    def prune(self, now_ms: int) -> int:
        """Forget whales whose trade time is more than ``retention_ms`` before ``now_ms``; returns how many."""
        horizon = now_ms - self.retention_ms
        forgotten = 0
        while self._expiry and self._expiry[0][0] < horizon:
            ts, _, whale_id, trade_ids, sweep = heapq.heappop(self._expiry)
            forgotten += _forget(self._whales, whale_id, ts)
            for trade_id in trade_ids:
                _forget(self._trades, trade_id, ts)
            if sweep is not None:
                _forget(self._sweeps, sweep, ts)
        return forgotten

    def __len__(self) -> int:
        return len(self._whales)


def _remember(memory: dict, key: Hashable, ts_ms: int) -> None:
    if memory.get(key, ts_ms) <= ts_ms:
        memory[key] = ts_ms


def _forget(memory: dict, key: Hashable, ts_ms: int) -> int:
    """Drop ``key`` unless a later evaluation refreshed it."""
    if memory.get(key, ts_ms + 1) <= ts_ms:
        del memory[key]
        return 1
    return 0


# --- token bucket ---------------------------------------------------------------------------


class TokenBucket:
    """``capacity`` tokens, one more every ``refill_every_s`` seconds; time passed in (ms).

    The bucket starts full. While it is full, time does not accumulate: the refill clock starts
    when the first token is taken, so over any window of W ms at most capacity + ⌈W / refill⌉
    tokens are taken.
    """

    def __init__(self, capacity: int, refill_every_s: int | Fraction) -> None:
        refill_ms = Fraction(refill_every_s) * 1000
        if capacity < 1 or refill_ms <= 0 or refill_ms.denominator != 1:
            raise ValueError("token bucket: capacity >= 1 and a positive refill period in whole ms")
        self.capacity = capacity
        self.refill_ms = int(refill_ms)
        self._tokens = capacity
        self._anchor: int | None = None  # time of the last refill step

    @classmethod
    def from_history(
        cls, capacity: int, refill_every_s: int | Fraction, take_times_ms: Iterable[int]
    ) -> "TokenBucket":
        """Rebuild a bucket after a restart from the times tokens were taken (journaled intents),
        so a restart never hands out a fresh full bucket. Times must be on the caller's clock."""
        bucket = cls(capacity, refill_every_s)
        for t in sorted(take_times_ms):
            bucket._refill(t)
            if bucket._tokens == bucket.capacity:
                bucket._anchor = t
            bucket._tokens = max(0, bucket._tokens - 1)
        return bucket

    def _refill(self, now_ms: int) -> None:
        if self._anchor is None:
            self._anchor = now_ms
            return
        if now_ms <= self._anchor:
            return  # a clock that went back gives nothing
        steps = (now_ms - self._anchor) // self.refill_ms
        if steps:
            self._tokens = min(self.capacity, self._tokens + steps)
            self._anchor += steps * self.refill_ms

    def available(self, now_ms: int) -> int:
        self._refill(now_ms)
        return self._tokens

    def try_take(self, now_ms: int) -> bool:
        self._refill(now_ms)
        if self._tokens <= 0:
            return False
        if self._tokens == self.capacity:
            self._anchor = now_ms  # a full bucket banks no time
        self._tokens -= 1
        return True


# --- the decision ---------------------------------------------------------------------------


class BookView(Protocol):
    """What the decision needs of our copy of a market's book (``kalshi.book.OrderBook``)."""

    @property
    def valid(self) -> bool: ...

    def best_yes_ask(self) -> tuple[int, int] | None: ...

    def best_no_ask(self) -> tuple[int, int] | None: ...

    def buy_cost(self, outcome: str, count: int, limit_price: int | None = None): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowRules:
    """How we follow, and the risk limits. Money/prices in $0.0001, counts in 0.01 contract."""

    max_age_ms: int = 120_000
    follow_count: int = 5 * COUNT_ONE
    max_slippage: int = 2 * CENT  # how far above the whale's average price we still buy
    tick: int = CENT
    strategy_version: str = "v1"
    time_in_force: str = "immediate_or_cancel"
    max_open_positions: int = 5
    max_cost_per_market: int = 50 * MONEY_ONE
    max_cost_per_event: int = 100 * MONEY_ONE
    max_daily_loss: int = 100 * MONEY_ONE

    @classmethod
    def from_settings(cls, settings, strategy_version: str = "v1") -> "FollowRules":
        """From ``actors.settings.Settings`` (whale and risk sections, in cents and contracts)."""
        return cls(
            max_age_ms=settings.whale_max_age_seconds * 1000,
            follow_count=settings.follow_count * COUNT_ONE,
            max_slippage=settings.max_slippage_cents * CENT,
            strategy_version=strategy_version,
            max_open_positions=settings.max_open_positions,
            max_cost_per_market=settings.max_cost_per_market_cents * CENT,
            max_cost_per_event=settings.max_cost_per_event_cents * CENT,
            max_daily_loss=settings.max_daily_loss_cents * CENT,
        )

    def __post_init__(self) -> None:
        if self.max_age_ms <= 0 or self.follow_count <= 0 or self.max_slippage < 0 or self.tick <= 0:
            raise ValueError("follow rules: age, count and tick must be positive, slippage not negative")
        if self.time_in_force not in ("immediate_or_cancel", "fill_or_kill", "good_till_canceled"):
            raise ValueError(f"follow rules: unknown time_in_force {safe_repr(self.time_in_force)}")


_EMPTY_MAP: Mapping = MappingProxyType({})
_ID_SETS = ("evaluated_whale_ids", "evaluated_trade_ids", "evaluated_sweeps")


def _frozen_map(value: Mapping) -> Mapping:
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def _read_only_set(value: AbstractSet) -> AbstractSet:
    return value if isinstance(value, (frozenset, SetView)) else SetView(value)


def event_of(market: str) -> str:
    """Kalshi market tickers are ``EVENT-SUFFIX``; the event is everything before the last dash."""
    head, dash, _ = market.rpartition("-")
    return head if dash else market


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """Everything the decision looks at, at one instant.

    Mappings are read-only proxies (a plain dict is copied into one); the evaluated id sets are
    read-only views (a mutable set is wrapped, not copied): the owner must not change them while a
    decision runs — the executor builds a context, decides and only then records what it decided.
    ``inflight_markets`` holds markets with an order in flight or a fill not yet synced;
    ``exposure`` maps market → cost basis held or committed there; ``events`` maps market → event
    ticker where the event is not simply the ticker's prefix.
    """

    gate_open: bool
    rules: FollowRules = field(default_factory=FollowRules)
    evaluated_whale_ids: AbstractSet[str] = frozenset()
    evaluated_trade_ids: AbstractSet[str] = frozenset()
    evaluated_sweeps: AbstractSet[tuple[str, str, int]] = frozenset()
    position_markets: frozenset[str] = frozenset()
    inflight_markets: frozenset[str] = frozenset()
    resting_order_markets: frozenset[str] = frozenset()
    books: Mapping[str, BookView] = field(default_factory=lambda: _EMPTY_MAP)
    exposure: Mapping[str, int] = field(default_factory=lambda: _EMPTY_MAP)
    events: Mapping[str, str] = field(default_factory=lambda: _EMPTY_MAP)
    daily_pnl: int = 0
    kill_switch: bool = False
    unknown_outcome_orders: int = 0
    tokens_available: int = 0

    def __post_init__(self) -> None:
        for name in ("books", "exposure", "events"):
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))
        for name in _ID_SETS:
            object.__setattr__(self, name, _read_only_set(getattr(self, name)))

    def event(self, market: str) -> str:
        return self.events.get(market) or event_of(market)


def _decision(whale: Whale, action: str, reason: str, now_ms: int) -> Decision:
    return Decision(
        action=action,
        reason=reason,
        whale_id=whale.whale_id,
        market=whale.market,
        final=action in FINAL_ACTIONS,
        outcome=whale.side,
        trade_ids=whale.trade_ids,
        whale_ts_ms=whale.ts_ms,
        decided_ms=now_ms,
    )


def _fmt(units: int | Fraction) -> str:
    """A price for reason text: exact fractions rounded half-up to $0.0001, no floats."""
    value = Fraction(units)
    return format_price((2 * value.numerator + value.denominator) // (2 * value.denominator))


def decide(whale: Whale, ctx: Context, now_ms: int) -> Decision | None:
    """The executor's rules, in order. None means already evaluated (nothing to record)."""
    rules = ctx.rules
    # Already evaluated: by id, by any of its trades, or by its sweep (a restart's backfill may
    # deliver the prints of a sweep in another order, giving the regrouped whale another id).
    if (
        whale.whale_id in ctx.evaluated_whale_ids
        or whale.sweep_key in ctx.evaluated_sweeps
        or not ctx.evaluated_trade_ids.isdisjoint(whale.trade_ids)
    ):
        return None
    if not ctx.gate_open:
        return _decision(whale, SKIPPED_GATE, "trading gate closed", now_ms)
    age = now_ms - whale.ts_ms
    if age > rules.max_age_ms:
        return _decision(whale, SKIPPED_AGE, f"whale is {age} ms old (max {rules.max_age_ms})", now_ms)
    market = whale.market
    if market in ctx.position_markets or market in ctx.inflight_markets:
        return _decision(whale, SKIPPED_POSITION, "position, order in flight or unsynced fill in market", now_ms)
    if market in ctx.resting_order_markets:
        return _decision(whale, SKIPPED_ORDERS, "we have resting orders in market", now_ms)
    book = ctx.books.get(market)
    if book is None or not book.valid:
        return _decision(whale, SKIPPED_BOOK_STALE, "no valid book for market", now_ms)

    best = book.best_yes_ask() if whale.side == "yes" else book.best_no_ask()
    if best is None:
        return _decision(whale, SKIPPED_DEPTH, f"no {whale.side.upper()} offers", now_ms)
    average = whale.average_price
    if best[0] - average > rules.max_slippage:
        return _decision(
            whale,
            SKIPPED_CHASED,
            f"best ask {_fmt(best[0])} is more than {_fmt(rules.max_slippage)} above the whale's {_fmt(average)}",
            now_ms,
        )
    # The highest outcome price we accept: the whale's average plus slippage, down to the tick.
    limit = int((average + rules.max_slippage) // rules.tick) * rules.tick
    limit = min(limit, PRICE_ONE - rules.tick)
    quote = book.buy_cost(whale.side, rules.follow_count, limit)
    if quote.count_filled < rules.follow_count:
        return _decision(whale, SKIPPED_DEPTH, f"only {quote.count_filled} units offered up to {_fmt(limit)}", now_ms)

    if ctx.kill_switch or ctx.daily_pnl <= -rules.max_daily_loss:
        return _decision(whale, SKIPPED_RISK, "daily loss limit reached (kill switch)", now_ms)
    open_markets = ctx.position_markets | ctx.inflight_markets
    if len(open_markets) >= rules.max_open_positions:
        return _decision(whale, SKIPPED_RISK, f"{len(open_markets)} open positions (max {rules.max_open_positions})", now_ms)
    cost = quote.cost
    if ctx.exposure.get(market, 0) + cost > rules.max_cost_per_market:
        return _decision(whale, SKIPPED_RISK, "max cost per market would be exceeded", now_ms)
    event = ctx.event(market)
    event_cost = sum(v for m, v in ctx.exposure.items() if ctx.event(m) == event)
    if event_cost + cost > rules.max_cost_per_event:
        return _decision(whale, SKIPPED_RISK, "max cost per event would be exceeded", now_ms)

    if ctx.unknown_outcome_orders > 0:
        return _decision(whale, SKIPPED_UNKNOWN_OUTCOME, "an order with an unknown outcome is unresolved", now_ms)
    if ctx.tokens_available <= 0:
        return _decision(whale, RATE_LIMITED, "rate limit: no token", now_ms)

    # Our order: the worst level we need from our own book, expressed on the YES book (V2).
    outcome_price = quote.worst_price
    if whale.side == "yes":
        side, price = "bid", outcome_price
    else:
        side, price = "ask", PRICE_ONE - outcome_price
    plan = OrderPlan(
        client_order_id=client_order_id_for(whale.whale_id, rules.strategy_version),
        whale_id=whale.whale_id,
        market=market,
        outcome=whale.side,
        side=side,
        price=price,
        count=rules.follow_count,
        time_in_force=rules.time_in_force,
    )
    return Decision(
        action=FOLLOW,
        reason=f"follow: buy {whale.side.upper()} up to {_fmt(outcome_price)}",
        whale_id=whale.whale_id,
        market=market,
        final=True,
        outcome=whale.side,
        side=side,
        price=price,
        count=plan.count,
        client_order_id=plan.client_order_id,
        trade_ids=whale.trade_ids,
        whale_ts_ms=whale.ts_ms,
        plan=plan,
        decided_ms=now_ms,
    )


def process_queue(
    queue: Iterable[Whale], ctx: Context, now_ms: int, bucket: TokenBucket, bucket_now_ms: int
) -> tuple[tuple[Decision, ...], Context]:
    """The executor's pass over a queue update, largest whale first (the seed's loop).

    Each follow takes a token and marks its market in flight, so two whales of one market in the
    same pass do not both trade. Returns the decisions (to journal) and the updated context.
    """
    decisions: list[Decision] = []
    for whale in sorted(queue, key=lambda w: (-w.whale_size, w.ts_ms, w.whale_id)):
        tokens = bucket.available(bucket_now_ms)
        if tokens != ctx.tokens_available:
            ctx = replace(ctx, tokens_available=tokens)
        decision = decide(whale, ctx, now_ms)
        if decision is None:
            continue
        if decision.action == FOLLOW and not bucket.try_take(bucket_now_ms):
            decision = _decision(whale, RATE_LIMITED, "rate limit: no token", now_ms)
        decisions.append(decision)
        if decision.final:
            # Layered on the views, not copied: what this pass decided is not evaluated again in it.
            ctx = replace(
                ctx,
                evaluated_whale_ids=SetView(ctx.evaluated_whale_ids, (whale.whale_id,)),
                evaluated_trade_ids=SetView(ctx.evaluated_trade_ids, whale.trade_ids),
                evaluated_sweeps=SetView(ctx.evaluated_sweeps, (whale.sweep_key,)),
            )
        if decision.action == FOLLOW:
            ctx = replace(ctx, inflight_markets=ctx.inflight_markets | {whale.market})
    return tuple(decisions), ctx
