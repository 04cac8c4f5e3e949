"""Exact fixed-point units for Kalshi prices, money and contract counts.

Kalshi sends prices and money as dollar strings (``"0.5200"``, ``"0.017500"``) and counts as
contract strings (``"10.00"``). Floats never touch them: they are parsed by hand into integers in
named units and formatted back the way Kalshi emits them.

- price and money: integer units of $0.0001 (``PRICE_ONE`` = $1 = 10_000 units)
- counts: integer units of 0.01 contract (``COUNT_ONE`` = one contract = 100 units)

Every parse error is a ``UnitError`` (a ``ValueError``) naming the field and showing the offending
value, truncated and escaped so a hostile string cannot forge log lines.
"""

from __future__ import annotations

__all__ = [
    "PRICE_ONE",
    "MONEY_ONE",
    "COUNT_ONE",
    "CENT",
    "MAX_COUNT",
    "MAX_MONEY",
    "UnitError",
    "parse_price",
    "parse_money",
    "parse_count",
    "parse_signed_count",
    "format_price",
    "format_money",
    "format_count",
    "cents_to_price",
    "centicents_to_money",
    "contracts_to_count",
    "price_complement",
    "notional",
    "safe_repr",
]

PRICE_ONE = 10_000  # $1.0000 in price units ($0.0001 each)
MONEY_ONE = 10_000  # $1.0000 in money units ($0.0001 each)
CENT = 100  # $0.01 in price/money units
COUNT_ONE = 100  # one contract in count units (0.01 contract each)

PRICE_DECIMALS = 4
MONEY_DECIMALS = 4
COUNT_DECIMALS = 2

# Bounds that no real value reaches; they stop a hostile 2**70 from becoming a "valid" size.
MAX_COUNT = 10**12 * COUNT_ONE  # a trillion contracts
MAX_MONEY = 10**13 * MONEY_ONE  # ten trillion dollars


class UnitError(ValueError):
    """A price, amount or count that is not a valid Kalshi fixed-point value."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem} (got {safe_repr(value)})")


def safe_repr(value: object, limit: int = 40) -> str:
    """repr() of untrusted input, escaped to ASCII and cut to ``limit`` characters."""
    text = ascii(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _parse_fixed(
    text: object, decimals: int, field: str, signed: bool, max_abs: int
) -> int:
    """Parse ``[-]digits[.digits]`` into an integer scaled by 10**decimals.

    Extra decimals are accepted only when they are zeros (``"0.017500"`` is exactly 175 units);
    anything that would need rounding is refused rather than silently changed.
    """
    if type(text) is not str:
        kind = "a number" if isinstance(text, (int, float)) else type(text).__name__
        raise UnitError(field, text, f"expected a decimal string, got {kind}")
    if len(text) > 40:  # no real value is this long; also keeps int() far from its digit limit
        raise UnitError(field, text, "too long to be a Kalshi number")
    negative = text.startswith("-")
    if negative and not signed:
        raise UnitError(field, text, "must not be negative")
    body = text[1:] if negative else text
    whole, dot, frac = body.partition(".")
    if not (whole.isascii() and whole.isdigit()):
        raise UnitError(field, text, "not a plain decimal number")
    if dot:
        if not (frac.isascii() and frac.isdigit()):
            raise UnitError(field, text, "not a plain decimal number")
        if len(frac) > decimals:
            extra = frac[decimals:]
            if extra.strip("0"):
                raise UnitError(field, text, f"more than {decimals} decimal places")
            frac = frac[:decimals]
        value = int(whole) * 10**decimals + int(frac.ljust(decimals, "0"))
    else:
        value = int(whole) * 10**decimals
    if negative:
        value = -value
    if abs(value) > max_abs:
        raise UnitError(field, text, "out of range")
    return value


# Prices repeat constantly on the feed (a few hundred distinct strings), so memoize them.
_PRICE_CACHE: dict[str, int] = {}


def parse_price(text: object, field: str = "price") -> int:
    """A YES/NO price string in dollars (``"0.5200"``) → units of $0.0001, 0..10_000 inclusive."""
    try:
        return _PRICE_CACHE[text]  # type: ignore[index]
    except (KeyError, TypeError):
        pass
    value = _parse_fixed(text, PRICE_DECIMALS, field, False, PRICE_ONE)
    if len(_PRICE_CACHE) < 65_536:
        _PRICE_CACHE[text] = value  # type: ignore[index]
    return value


def parse_money(text: object, field: str = "amount") -> int:
    """A signed dollar amount (``"0.017500"``, ``"-1.44"``) → units of $0.0001."""
    return _parse_fixed(text, MONEY_DECIMALS, field, True, MAX_MONEY)


def parse_count(text: object, field: str = "count") -> int:
    """A non-negative contract count (``"10.00"``) → units of 0.01 contract."""
    return _parse_fixed(text, COUNT_DECIMALS, field, False, MAX_COUNT)


def parse_signed_count(text: object, field: str = "count") -> int:
    """A signed contract count (``position_fp`` "-3.00", ``delta_fp`` "-50.00") → 0.01 units."""
    return _parse_fixed(text, COUNT_DECIMALS, field, True, MAX_COUNT)


def _require_int(value: object, what: str) -> None:
    # A float here would format or multiply into a plausible but wrong number: refuse it.
    if type(value) is not int:
        raise TypeError(f"{what} must be an int in fixed-point units, got {type(value).__name__}")


def _format_fixed(value: int, decimals: int, shown: int) -> str:
    _require_int(value, "value to format")
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    frac_text = str(frac).rjust(decimals, "0")
    if shown > decimals:
        frac_text += "0" * (shown - decimals)
    return f"{sign}{whole}.{frac_text}"


def format_price(units: int) -> str:
    """Price units → Kalshi's 4-decimal dollar string: 5200 → ``"0.5200"``."""
    return _format_fixed(units, PRICE_DECIMALS, PRICE_DECIMALS)


def format_money(units: int, decimals: int = 6) -> str:
    """Money units → dollar string; Kalshi emits portfolio money with 6 decimals
    (175 → ``"0.017500"``) and prices/balances with 4 (``decimals=4``)."""
    if decimals < MONEY_DECIMALS:
        raise ValueError("money is kept to $0.0001; format it with at least 4 decimals")
    return _format_fixed(units, MONEY_DECIMALS, decimals)


def format_count(units: int) -> str:
    """Count units → Kalshi's 2-decimal contract string: 1000 → ``"10.00"``."""
    return _format_fixed(units, COUNT_DECIMALS, COUNT_DECIMALS)


def _strict_int(value: object, field: str) -> int:
    if type(value) is not int:
        raise UnitError(field, value, "expected an integer")
    return value


def cents_to_price(cents: object, field: str = "price") -> int:
    """Legacy integer cents (era A/B ``yes_price: 52``) → price units."""
    value = _strict_int(cents, field) * CENT
    if not 0 <= value <= PRICE_ONE:
        raise UnitError(field, cents, "out of range")
    return value


def centicents_to_money(centicents: object, field: str = "amount") -> int:
    """Legacy WS ``market_positions`` centi-cents (1 = $0.0001) → money units (the same scale)."""
    value = _strict_int(centicents, field)
    if abs(value) > MAX_MONEY:
        raise UnitError(field, centicents, "out of range")
    return value


def contracts_to_count(contracts: object, field: str = "count") -> int:
    """Legacy integer contract counts (era A/B ``count: 10``) → count units."""
    value = _strict_int(contracts, field) * COUNT_ONE
    if abs(value) > MAX_COUNT:
        raise UnitError(field, contracts, "out of range")
    return value


def price_complement(price: int) -> int:
    """The other leg's price: a NO bid at q is a YES ask at 1 − q."""
    return PRICE_ONE - price


def notional(count: int, price: int) -> int:
    """Money units paid for ``count`` (0.01 contracts) at ``price`` ($0.0001), exact.

    count × price is in 1e-6 dollars; dividing by COUNT_ONE gives $0.0001 units. The remainder is
    zero whenever count is whole contracts or the price is on a cent tick; otherwise the cost is
    rounded up (never understate what we pay).
    """
    _require_int(count, "count")
    _require_int(price, "price")
    q, r = divmod(count * price, COUNT_ONE)
    return q + (1 if r else 0)
