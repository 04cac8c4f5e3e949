"""Kalshi trading fees, exact in integer money units ($0.0001).

Taker: ``round_up(0.07 × m × C × P × (1 − P))``; maker (only on ``quadratic_with_maker_fees`` and
``quadratic_with_combo_maker_fees`` series): ``round_up(0.0175 × m × C × P × (1 − P))``, with P the
execution price in dollars, C the contracts and m the series ``fee_multiplier``.

Sources disagree on the rounding unit (protocol doc §6.3): the API's fee-rounding page and demo
fills round each fill up to $0.0001 (1 @ 0.52 → $0.0175); the fee-schedule PDF rounds up to the
next cent per trade. The unit is therefore a parameter: ``FEE_ROUNDING_FILL`` (default) or
``FEE_ROUNDING_CENT``.

``flat`` series: the protocol doc names the type but not its formula; we charge a configurable
flat amount per contract ($0.01 × m) and say so here rather than guess silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .units import CENT, COUNT_ONE, PRICE_ONE, UnitError, safe_repr

__all__ = [
    "FEE_TYPES",
    "FEE_ROUNDING_FILL",
    "FEE_ROUNDING_CENT",
    "FeeSchedule",
    "parse_fee_multiplier",
    "taker_fee",
    "maker_fee",
]

FEE_TYPES = frozenset(
    {"quadratic", "quadratic_with_maker_fees", "quadratic_with_combo_maker_fees", "flat"}
)
FEE_ROUNDING_FILL = 1  # $0.0001 per fill (API docs, demo captures)
FEE_ROUNDING_CENT = CENT  # $0.01 per fill (fee-schedule PDF, conservative)

TAKER_RATE = Fraction(7, 100)
MAKER_RATE = Fraction(175, 10_000)
FLAT_PER_CONTRACT = CENT  # money units per contract on `flat` series, times the multiplier


def parse_fee_multiplier(value: object, field: str = "fee_multiplier") -> Fraction:
    """Kalshi sends ``fee_multiplier`` as a JSON number (1, 0.5, 0); keep it exact."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Fraction)):
        raise UnitError(field, value, "expected a number")
    if isinstance(value, Fraction):
        if not 0 <= value <= 100:
            raise UnitError(field, value, "must be a finite number between 0 and 100")
        return value
    if isinstance(value, str) and not value.replace(".", "", 1).isdigit():
        raise UnitError(field, value, "not a plain non-negative decimal number")
    try:
        # str() of a float is its shortest round-trip text: 0.5 → "0.5", exact as a Decimal.
        dec = Decimal(str(value))
    except InvalidOperation:
        raise UnitError(field, value, "not a number") from None
    if not dec.is_finite() or dec < 0 or dec > 100:
        raise UnitError(field, value, "must be a finite number between 0 and 100")
    return Fraction(dec)


def _round_up(amount: Fraction, unit: int) -> int:
    """Round a money amount (in $0.0001 units) up to a multiple of ``unit``."""
    steps = -((-amount.numerator) // (amount.denominator * unit))
    return steps * unit


def _check_fill(count: int, price: int) -> None:
    if count < 0 or not 0 <= price <= PRICE_ONE:
        raise ValueError(f"fee on count={safe_repr(count)} price={safe_repr(price)}: out of range")


def _quadratic(rate: Fraction, multiplier: Fraction, count: int, price: int, unit: int) -> int:
    _check_fill(count, price)
    # rate × m × C × P × (1 − P) in dollars, with C = count/100, P = price/10^4;
    # times 10^4 for money units.
    amount = (
        rate
        * multiplier
        * Fraction(count * price * (PRICE_ONE - price), COUNT_ONE * PRICE_ONE * PRICE_ONE)
        * PRICE_ONE
    )
    return _round_up(amount, unit)


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """A series' fee terms: ``fee_type`` and ``fee_multiplier`` from ``GET /series/{ticker}``."""

    fee_type: str = "quadratic"
    multiplier: Fraction = Fraction(1)
    rounding_unit: int = FEE_ROUNDING_FILL

    def __post_init__(self) -> None:
        if not isinstance(self.multiplier, Fraction):
            object.__setattr__(self, "multiplier", parse_fee_multiplier(self.multiplier))
        if self.fee_type not in FEE_TYPES:
            raise UnitError("fee_type", self.fee_type, f"unknown fee type, expected one of {sorted(FEE_TYPES)}")
        if self.rounding_unit not in (FEE_ROUNDING_FILL, FEE_ROUNDING_CENT):
            raise ValueError(f"fee rounding unit {safe_repr(self.rounding_unit)}: use 1 ($0.0001) or 100 ($0.01)")

    @classmethod
    def from_series(cls, fee_type: str, fee_multiplier: object, rounding_unit: int = FEE_ROUNDING_FILL) -> "FeeSchedule":
        return cls(fee_type, parse_fee_multiplier(fee_multiplier), rounding_unit)

    def taker(self, count: int, price: int) -> int:
        """Fee in money units for a taker fill of ``count`` (0.01 contracts) at ``price``."""
        if self.fee_type == "flat":
            _check_fill(count, price)  # a negative count would be a negative fee
            return self._flat(count)
        return _quadratic(TAKER_RATE, self.multiplier, count, price, self.rounding_unit)

    def maker(self, count: int, price: int) -> int:
        """Fee in money units for a maker fill; zero unless the series charges makers."""
        if self.fee_type in ("quadratic_with_maker_fees", "quadratic_with_combo_maker_fees"):
            return _quadratic(MAKER_RATE, self.multiplier, count, price, self.rounding_unit)
        return 0

    def fee(self, count: int, price: int, is_taker: bool) -> int:
        return self.taker(count, price) if is_taker else self.maker(count, price)

    def _flat(self, count: int) -> int:
        amount = Fraction(FLAT_PER_CONTRACT * count, COUNT_ONE) * self.multiplier
        return _round_up(amount, self.rounding_unit)


DEFAULT_SCHEDULE = FeeSchedule()


def taker_fee(count: int, price: int, schedule: FeeSchedule = DEFAULT_SCHEDULE) -> int:
    return schedule.taker(count, price)


def maker_fee(count: int, price: int, schedule: FeeSchedule = DEFAULT_SCHEDULE) -> int:
    return schedule.maker(count, price)
