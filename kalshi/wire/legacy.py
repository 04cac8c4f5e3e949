"""Era A/B (legacy integer) wire forms, shared by ``frames`` (WebSocket) and ``bodies`` (REST).

Kalshi's current fields are fixed-point strings (``count_fp``, ``yes_price_dollars``); older
payloads carry integer twins (contracts, cents, centi-cents). Both decoders accept the old form
when the new one is absent, convert it with the functions here, and count what they saw in a
``DriftCounter`` so schema drift shows up as a number instead of a silent fallback.
"""

from __future__ import annotations

import itertools
import threading
from typing import Callable, Iterator, TypeVar

from ..units import CENT, MAX_MONEY, UnitError, contracts_to_count

__all__ = ["DriftCounter", "legacy_count", "legacy_cents_money", "modern_or_legacy", "direction"]

_T = TypeVar("_T")


class DriftCounter:
    """Thread-safe ``{"<where>.<field>": times seen}`` for legacy/deprecated wire fields.

    ``note`` is on the feed's hot path (real era-C deltas still carry the deprecated ``ts``), so it
    takes no lock: each name has an ``itertools.count`` and ``next()`` on it is atomic under the
    GIL (a lock here cost ~3x the rest of the bookkeeping). Reading a count advances it too, so
    ``seen`` remembers its own reads and subtracts them."""

    __slots__ = ("_lock", "_counters", "_reads")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards adding names, reading and resetting
        self._counters: dict[str, Iterator[int]] = {}
        self._reads: dict[str, int] = {}

    def note(self, name: str) -> None:
        try:
            next(self._counters[name])
        except KeyError:
            with self._lock:
                counter = self._counters.setdefault(name, itertools.count())
            next(counter)

    def seen(self) -> dict[str, int]:
        with self._lock:
            out = {}
            for name, counter in self._counters.items():
                reads = self._reads.get(name, 0)
                out[name] = next(counter) - reads  # next() = notes + earlier reads
                self._reads[name] = reads + 1
            return out

    def reset(self) -> None:
        with self._lock:
            self._counters = {}
            self._reads = {}


def legacy_count(contracts: object, field: str) -> int:
    """Legacy integer contracts for a size or volume (never negative) → count units.
    Signed quantities (positions, deltas) use ``units.contracts_to_count`` directly."""
    value = contracts_to_count(contracts, field)
    if value < 0:
        raise UnitError(field, contracts, "must not be negative")
    return value


def legacy_cents_money(cents: object, field: str) -> int:
    """Legacy integer cents of money (REST balances, P&L; may be negative) → money units."""
    if type(cents) is not int:
        raise UnitError(field, cents, "expected an integer number of cents")
    if abs(cents) * CENT > MAX_MONEY:
        raise UnitError(field, cents, "out of range")
    return cents * CENT


def modern_or_legacy(
    modern: object | None,
    legacy: object | None,
    parse: Callable[[object, str], _T],
    legacy_parse: Callable[[object, str], _T],
    modern_field: str,
    legacy_field: str,
) -> _T | None:
    """The modern field parsed if present, else the legacy twin converted, else None.
    Counting the legacy field is the caller's choice (WS counts presence, REST counts use)."""
    if modern is not None:
        return parse(modern, modern_field)
    if legacy is not None:
        return legacy_parse(legacy, legacy_field)
    return None


_OUTCOME_OF_BOOK = {"bid": "yes", "ask": "no"}
_BOOK_OF_OUTCOME = {"yes": "bid", "no": "ask"}


def direction(book: object, outcome: object, side: object, action: object) -> tuple[str, str]:
    """``(book_side, outcome_side)`` of an order or fill.

    A bid buys YES and an ask buys NO (sells YES), so either V2 field implies the other. Without
    them, the deprecated ``side`` + ``action`` decide: buy YES / sell NO rest on the bid side, buy
    NO / sell YES on the ask side. Fields that disagree are refused: one of them is corrupt."""
    legacy = None
    if action in ("buy", "sell") and side in ("yes", "no"):
        legacy = "bid" if (action == "buy") == (side == "yes") else "ask"
    if book is None and outcome is None:
        if legacy is None:
            raise UnitError("book_side", None, "missing")
        return legacy, _OUTCOME_OF_BOOK[legacy]
    if book is not None and book not in ("bid", "ask"):
        raise UnitError("book_side", book, "expected 'bid' or 'ask'")
    if outcome is not None and outcome not in ("yes", "no"):
        raise UnitError("outcome_side", outcome, "expected 'yes' or 'no'")
    resolved: str = book if book is not None else _BOOK_OF_OUTCOME[outcome]  # type: ignore[assignment,index]
    if outcome is not None and outcome != _OUTCOME_OF_BOOK[resolved]:
        raise UnitError("outcome_side", outcome, "contradicts book_side")
    if legacy is not None and legacy != resolved:
        raise UnitError("book_side", resolved, "disagrees with side/action")
    return resolved, _OUTCOME_OF_BOOK[resolved]
