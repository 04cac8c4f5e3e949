"""kalshi.units: exact fixed-point parsing/formatting, and every bad input → UnitError naming the field."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshi.units import (
    CENT,
    COUNT_ONE,
    MAX_COUNT,
    MAX_MONEY,
    MONEY_ONE,
    PRICE_ONE,
    UnitError,
    cents_to_price,
    centicents_to_money,
    contracts_to_count,
    format_count,
    format_money,
    format_price,
    notional,
    parse_count,
    parse_money,
    parse_price,
    parse_signed_count,
    price_complement,
    safe_repr,
)


# ---------------------------------------------------------------------------------------------
# Good values


@pytest.mark.parametrize(
    "text, units",
    [("0.5200", 5200), ("0.52", 5200), ("0.5", 5000), ("0", 0), ("1", PRICE_ONE), ("1.0000", PRICE_ONE),
     ("0.0001", 1), ("0.001", 10), ("0.99", 9900), ("0.520000", 5200), ("00.52", 5200)],
)
def test_parse_price(text, units):
    assert parse_price(text) == units
    assert parse_price(text) == units  # second call comes from the memo


def test_parse_money_and_counts():
    assert parse_money("0.017500") == 175  # demo fee_cost
    assert parse_money("0.000700") == 7
    assert parse_money("98.0186") == 980186
    assert parse_money("-1.44") == -14400
    assert parse_money("0") == 0
    assert parse_count("10.00") == 1000
    assert parse_count("7.77") == 777
    assert parse_count("0.01") == 1
    assert parse_count("3") == 300
    assert parse_signed_count("-50.00") == -5000
    assert parse_signed_count("5.00") == 500
    assert parse_signed_count("-0.01") == -1


def test_formatting():
    assert format_price(5200) == "0.5200"
    assert format_price(PRICE_ONE) == "1.0000"
    assert format_price(1) == "0.0001"
    assert format_money(175) == "0.017500"
    assert format_money(175, decimals=4) == "0.0175"
    assert format_money(-14400) == "-1.440000"
    assert format_money(980186, 4) == "98.0186"
    assert format_count(1000) == "10.00"
    assert format_count(-5000) == "-50.00"
    assert format_count(1) == "0.01"
    with pytest.raises(ValueError):
        format_money(175, decimals=3)


def test_legacy_conversions():
    assert cents_to_price(52) == 5200
    assert cents_to_price(0) == 0 and cents_to_price(100) == PRICE_ONE
    assert centicents_to_money(500000) == 500000  # $50.00
    assert centicents_to_money(-1234) == -1234
    assert contracts_to_count(10) == 1000
    assert contracts_to_count(-3) == -300


def test_complement_and_notional():
    assert price_complement(4800) == 5200
    assert price_complement(0) == PRICE_ONE
    assert notional(100, 5200) == 5200  # 1 contract at $0.52 = $0.52
    assert notional(1000, 4700) == 47000
    assert notional(1, 5200) == 52  # 0.01 contract at a cent tick is exact
    assert notional(1, 5155) == 52  # $0.005155 → rounded up, never understated
    assert notional(0, 5200) == 0


# ---------------------------------------------------------------------------------------------
# Round trips

prices = st.integers(0, PRICE_ONE)
money = st.integers(-MAX_MONEY, MAX_MONEY)
counts = st.integers(0, MAX_COUNT)
signed_counts = st.integers(-MAX_COUNT, MAX_COUNT)


@settings(max_examples=300)
@given(prices)
def test_price_round_trip(units):
    text = format_price(units)
    assert parse_price(text) == units
    assert Decimal(text) * PRICE_ONE == units  # the string means what the int means
    assert len(text.split(".")[1]) == 4


@settings(max_examples=300)
@given(money, st.sampled_from([4, 5, 6, 8]))
def test_money_round_trip(units, decimals):
    text = format_money(units, decimals)
    assert parse_money(text) == units
    assert Decimal(text) * MONEY_ONE == units


@settings(max_examples=300)
@given(counts, signed_counts)
def test_count_round_trip(count, signed):
    assert parse_count(format_count(count)) == count
    assert parse_signed_count(format_count(signed)) == signed
    assert Decimal(format_count(signed)) * COUNT_ONE == signed


@settings(max_examples=300)
@given(st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False))
def test_parse_price_matches_decimal(value):
    assert parse_price(str(value) if "E" not in str(value) else format(value, "f")) == int(value * PRICE_ONE)


@settings(max_examples=300)
@given(st.integers(0, COUNT_ONE * 1000), st.integers(0, PRICE_ONE))
def test_notional_is_exact_ceiling(count, price):
    exact = Decimal(count) / COUNT_ONE * Decimal(price) / PRICE_ONE * MONEY_ONE
    got = notional(count, price)
    assert got >= exact > got - 1 or got == exact == 0


# ---------------------------------------------------------------------------------------------
# Bad input: a UnitError naming the field, with an escaped, truncated sample

NOT_STRINGS = [0.52, 1, 0, True, None, Decimal("0.52"), b"0.52", ["0.52"], float("nan"), float("inf")]
BAD_TEXT = ["", " ", "abc", "NaN", "nan", "Infinity", "inf", "1e5", "5e-1", "+1", "+0.5", " 1", "1 ", "1\n", "\t1",
            "１", "0.５", "٣", "²", "1_000", "0x10", "1,5", "1.2.3", ".5", "5.", "-", "--1", "0.5-", "0. 5", "1/2"]


@pytest.mark.parametrize("parser", [parse_price, parse_money, parse_count, parse_signed_count])
@pytest.mark.parametrize("value", NOT_STRINGS, ids=repr)
def test_non_strings_rejected(parser, value):
    with pytest.raises(UnitError) as info:
        parser(value, "some_field")
    assert info.value.field == "some_field"
    assert str(info.value).startswith("some_field: ")


@pytest.mark.parametrize("parser", [parse_price, parse_money, parse_count, parse_signed_count])
@pytest.mark.parametrize("value", BAD_TEXT, ids=repr)
def test_malformed_text_rejected(parser, value):
    with pytest.raises(UnitError) as info:
        parser(value, "yes_price_dollars")
    assert info.value.field == "yes_price_dollars"
    message = str(info.value)
    assert message.startswith("yes_price_dollars: ")
    assert message.isascii() and "\n" not in message  # a hostile value cannot forge log lines


@pytest.mark.parametrize(
    "parser, value, problem",
    [
        (parse_price, "0.52001", "decimal places"),
        (parse_price, "0.00001", "decimal places"),
        (parse_money, "0.0000001", "decimal places"),
        (parse_count, "1.001", "decimal places"),
        (parse_signed_count, "-1.001", "decimal places"),
        (parse_price, "1.0001", "out of range"),
        (parse_price, "1.5", "out of range"),
        (parse_price, "2", "out of range"),
        (parse_price, "-0.01", "negative"),
        (parse_count, "-5.00", "negative"),
        (parse_count, "-0.01", "negative"),
        (parse_count, str(MAX_COUNT // COUNT_ONE + 1), "out of range"),
        (parse_signed_count, "-" + str(MAX_COUNT // COUNT_ONE + 1), "out of range"),
        (parse_money, str(2**70), "out of range"),
        (parse_money, "-" + str(MAX_MONEY // MONEY_ONE + 1), "out of range"),
    ],
)
def test_range_and_precision(parser, value, problem):
    with pytest.raises(UnitError, match=problem) as info:
        parser(value, "f")
    assert info.value.field == "f"


def test_boundaries_accepted():
    assert parse_count(str(MAX_COUNT // COUNT_ONE)) == MAX_COUNT
    assert parse_money("-" + str(MAX_MONEY // MONEY_ONE)) == -MAX_MONEY
    assert parse_count("0.010") == 1  # extra zero decimals are exact, so allowed


def test_default_field_names():
    with pytest.raises(UnitError, match="^price: "):
        parse_price("x")
    with pytest.raises(UnitError, match="^count: "):
        parse_count("x")
    with pytest.raises(UnitError, match="^amount: "):
        parse_money("x")


@pytest.mark.parametrize("fn", [cents_to_price, centicents_to_money, contracts_to_count])
@pytest.mark.parametrize("value", [1.0, "52", True, None, Decimal(52)], ids=repr)
def test_legacy_ints_strict(fn, value):
    with pytest.raises(UnitError, match="^legacy: expected an integer"):
        fn(value, "legacy")


def test_legacy_ranges():
    for cents in (-1, 101, 2**70):
        with pytest.raises(UnitError, match="out of range"):
            cents_to_price(cents, "yes_price")
    with pytest.raises(UnitError, match="out of range"):
        centicents_to_money(MAX_MONEY + 1, "position_cost")
    with pytest.raises(UnitError, match="out of range"):
        contracts_to_count(MAX_COUNT, "count")


def test_error_sample_is_escaped_and_truncated():
    hostile = "0.5\n2026-01-01 INFO fake log line" + "x" * 500
    with pytest.raises(UnitError) as info:
        parse_price(hostile, "price_dollars")
    text = str(info.value)
    assert "\n" not in text and len(text) < 150
    assert safe_repr("é\x00" * 100, 20).isascii() and len(safe_repr("a" * 100, 20)) == 20


def test_price_memo_does_not_leak_across_fields():
    assert parse_price("0.4400", "a") == 4400
    with pytest.raises(UnitError, match="^b: "):
        parse_price("0.44001", "b")


def test_cent_constant():
    assert CENT == PRICE_ONE // 100


# Found while testing; the lead owns kalshi/units.py (fix recommended in H2's report).
def test_very_long_digit_string_is_a_unit_error():
    with pytest.raises(UnitError):
        parse_count("1" * 5000, "count_fp")


def test_negative_zero_rejected_by_unsigned_parsers():
    with pytest.raises(UnitError):
        parse_price("-0.0000", "price")


@pytest.mark.parametrize("call", [
    lambda: format_price(5200.0), lambda: format_money(175.0), lambda: format_count(True),
    lambda: notional(100, 52.0), lambda: notional(1.5, 5200),
], ids=["price", "money", "count-bool", "notional-price", "notional-count"])
def test_floats_are_refused_where_units_are_formatted_or_multiplied(call):
    with pytest.raises(TypeError, match="int in fixed-point units"):
        call()
