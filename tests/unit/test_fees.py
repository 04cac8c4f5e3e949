"""kalshi.fees: demo-capture fees, rounding units, maker fees and multipliers, exact against Decimal."""

from __future__ import annotations

import json
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshi.fees import (
    FEE_ROUNDING_CENT,
    FEE_ROUNDING_FILL,
    FeeSchedule,
    maker_fee,
    parse_fee_multiplier,
    taker_fee,
)
from kalshi.units import COUNT_ONE, PRICE_ONE, UnitError, parse_count, parse_money, parse_price

ONE = COUNT_ONE  # one contract in count units


def test_demo_capture_fees():
    # demo fills (protocol doc §6.3): 1 @ 0.52 → "0.017500"; 1 @ 0.99 → "0.000700"
    assert taker_fee(ONE, 5200) == 175
    assert taker_fee(ONE, 9900) == 7
    assert taker_fee(ONE, 100) == 7  # symmetric in P


def test_fees_in_real_fills_capture(wire_dir):
    fills = json.loads((wire_dir / "fills__after_taker.json").read_text())["fills"]
    assert fills
    for fill in fills:
        assert fill["is_taker"] is True
        count = parse_count(fill["count_fp"])
        price = parse_price(fill["yes_price_dollars"])
        assert taker_fee(count, price) == parse_money(fill["fee_cost"]), fill["trade_id"]


def test_hundred_at_half():
    assert taker_fee(100 * ONE, 5000) == 17500  # $1.75
    assert FeeSchedule(rounding_unit=FEE_ROUNDING_CENT).taker(100 * ONE, 5000) == 17500


def test_cent_rounding():
    cent = FeeSchedule(rounding_unit=FEE_ROUNDING_CENT)
    assert cent.taker(ONE, 5000) == 200  # $0.0175 → $0.02 (pre-2026 per-trade cents)
    assert cent.taker(ONE, 5200) == 200
    assert cent.taker(ONE, 9900) == 100  # $0.000693 → $0.01
    assert cent.taker(0, 5000) == 0
    assert cent.taker(ONE, 0) == 0 and cent.taker(ONE, PRICE_ONE) == 0


def test_maker_fees():
    makers = FeeSchedule("quadratic_with_maker_fees")
    assert makers.maker(ONE, 5000) == 44  # 0.0175 × 0.25 = $0.004375 → $0.0044
    assert makers.maker(100 * ONE, 5000) == 4375
    assert makers.fee(ONE, 5000, is_taker=False) == 44
    assert makers.fee(ONE, 5000, is_taker=True) == 175
    assert FeeSchedule("quadratic_with_combo_maker_fees").maker(ONE, 5000) == 44
    assert FeeSchedule("quadratic").maker(100 * ONE, 5000) == 0  # ordinary series: makers free
    assert maker_fee(100 * ONE, 5000) == 0
    assert FeeSchedule("quadratic_with_maker_fees", rounding_unit=FEE_ROUNDING_CENT).maker(ONE, 5000) == 100


def test_multipliers():
    half = FeeSchedule.from_series("quadratic", 0.5)
    assert half.multiplier == Fraction(1, 2)
    assert half.taker(ONE, 5200) == 88  # 0.017472 / 2 = 0.008736 → 0.0088
    assert half.taker(100 * ONE, 5000) == 8750
    zero = FeeSchedule.from_series("quadratic_with_maker_fees", 0)
    assert zero.taker(100 * ONE, 5000) == 0 and zero.maker(100 * ONE, 5000) == 0
    assert FeeSchedule.from_series("quadratic", "1").taker(ONE, 5200) == 175
    assert FeeSchedule.from_series("quadratic", 2).taker(ONE, 5200) == 350  # 0.034944 → 0.0350


def test_fractional_contracts():
    # 0.01 contract at 0.50: 0.07 × 0.01 × 0.25 = $0.000175 = 1.75 units → rounded up to 2
    assert taker_fee(1, 5000) == 2
    assert taker_fee(150, 5000) == 263  # 1.5 contracts: $0.02625 → 262.5 → 263


def test_flat_series():
    flat = FeeSchedule("flat")
    assert flat.taker(ONE, 5000) == 100  # $0.01 per contract × m (documented assumption in fees.py)
    assert flat.taker(250, 1234) == 250
    assert FeeSchedule.from_series("flat", 0.5).taker(ONE, 5000) == 50
    assert flat.maker(ONE, 5000) == 0


def decimal_fee(rate: str, m: Decimal, count: int, price: int, unit: int) -> int:
    c = Decimal(count) / COUNT_ONE
    p = Decimal(price) / PRICE_ONE
    dollars = Decimal(rate) * m * c * p * (1 - p)
    units = dollars * 10_000 / unit
    return int(units.to_integral_value(rounding=ROUND_CEILING)) * unit


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, PRICE_ONE), st.sampled_from(["1", "0.5", "0", "0.25", "1.5"]),
       st.sampled_from([FEE_ROUNDING_FILL, FEE_ROUNDING_CENT]))
def test_against_decimal(count, price, m, unit):
    sched = FeeSchedule.from_series("quadratic_with_maker_fees", m, unit)
    dm = Decimal(m)
    assert sched.taker(count, price) == decimal_fee("0.07", dm, count, price, unit)
    assert sched.maker(count, price) == decimal_fee("0.0175", dm, count, price, unit)
    assert sched.taker(count, price) == sched.taker(count, PRICE_ONE - price)  # YES/NO symmetric
    assert sched.taker(count, price) % unit == 0


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", "-1", -0.5, 101, float("nan"), float("inf"), True,
                                   None, [1], "1e999"], ids=repr)
def test_bad_multiplier(value):
    with pytest.raises(UnitError) as info:
        parse_fee_multiplier(value)
    assert info.value.field == "fee_multiplier"


def test_bad_schedule():
    with pytest.raises(UnitError, match="fee_type"):
        FeeSchedule("cubic")
    with pytest.raises(ValueError):
        FeeSchedule(rounding_unit=10)
    with pytest.raises(ValueError):
        taker_fee(-1, 5000)
    with pytest.raises(ValueError):
        taker_fee(ONE, PRICE_ONE + 1)
    with pytest.raises(ValueError):
        taker_fee(ONE, -1)
    with pytest.raises(ValueError):  # a flat fee is checked too: never a negative fee
        FeeSchedule("flat").taker(-ONE, 5000)
    with pytest.raises(ValueError):
        FeeSchedule("flat").taker(ONE, PRICE_ONE + 1)


def test_float_multiplier_in_constructor():
    # A JSON number passed straight to the constructor is made exact, as from_series does.
    assert FeeSchedule("quadratic", 0.5).taker(ONE, 5200) == 88  # type: ignore[arg-type]
