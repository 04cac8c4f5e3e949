"""kalshi.book.OrderBook: against a plain dict-of-levels model, YES/NO ask mapping, buy_cost sweeps."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kalshi.book import BuyQuote, OrderBook
from kalshi.units import COUNT_ONE, PRICE_ONE, parse_count, parse_price
from kalshi.wire.frames import decode_frame

T = "KXHIGHNY-26NOV25-T55"


def booked(yes=(), no=()) -> OrderBook:
    book = OrderBook(T)
    assert book.apply_snapshot(yes, no)
    return book


# ---------------------------------------------------------------------------------------------
# Basics


def test_new_book_is_invalid_until_snapshot():
    book = OrderBook(T)
    assert not book.valid and book.invalid_reason == "no snapshot yet"
    assert book.apply_delta("yes", 4700, 100) is False
    assert book.best_yes_bid() is None and book.levels("yes") == ()
    assert book.apply_snapshot([(4700, 300)], [])
    assert book.valid and book.invalid_reason is None and book.best_yes_bid() == (4700, 300)


def test_ask_mapping_and_spread():
    book = booked(yes=[(4500, 5000), (4700, 30000)], no=[(3000, 1000), (4800, 15000)])
    assert book.best_yes_bid() == (4700, 30000)
    assert book.best_no_bid() == (4800, 15000)
    assert book.best_yes_ask() == (5200, 15000)  # NO bid 0.48 = YES ask 0.52
    assert book.best_no_ask() == (5300, 30000)  # YES bid 0.47 = NO ask 0.53
    assert book.spread() == 500
    assert not book.crossed()
    assert book.depth("yes") == 2 and book.depth("no") == 2
    assert book.total_size("yes") == 35000 and book.total_size("no") == 16000
    assert book.levels("no") == ((3000, 1000), (4800, 15000))


def test_one_sided_and_empty():
    book = booked(yes=[(4700, 100)])
    assert book.best_no_bid() is None and book.best_yes_ask() is None
    assert book.best_no_ask() == (5300, 100)
    assert book.spread() is None and not book.crossed()
    empty = booked()
    assert empty.valid and empty.best_yes_bid() is None and empty.total_size("no") == 0


def test_crossed_is_reported_not_invalidated():
    book = booked(yes=[(5000, 100)], no=[(4900, 100)])
    assert not book.crossed()
    assert book.apply_delta("no", 5000, 100)
    assert book.crossed() and book.valid and book.spread() == 0


def test_delta_rules():
    book = booked(yes=[(4700, 300)], no=[(4800, 200)])
    assert book.apply_delta("yes", 4700, -300)  # removed at exactly 0
    assert book.levels("yes") == () and book.best_yes_bid() is None
    assert book.apply_delta("yes", 4600, 0)  # no-op on a missing level
    assert book.levels("yes") == ()
    assert book.apply_delta("yes", 4900, 150) and book.best_yes_bid() == (4900, 150)
    assert book.apply_delta("yes", 4800, 10) and book.best_yes_bid() == (4900, 150)
    assert book.apply_delta("yes", 4900, -150) and book.best_yes_bid() == (4800, 10)  # lazy recompute
    assert book.apply_delta("no", 4800, -201) is False  # would go negative
    assert not book.valid and "4800" in book.invalid_reason
    assert book.levels("no") == () and book.best_yes_bid() is None  # an invalid book shows nothing
    assert book.apply_delta("yes", 4800, 5) is False  # ignored until the next snapshot
    assert book.apply_snapshot([(100, 1)], [(200, 2)]) and book.valid


def test_delta_on_missing_level_negative_invalidates():
    book = booked(yes=[(4700, 300)])
    assert book.apply_delta("yes", 4600, -1) is False and not book.valid


def test_bad_arguments_raise():
    book = booked(yes=[(4700, 300)])
    with pytest.raises(ValueError):
        book.apply_delta("maybe", 4700, 1)
    for price in (0, PRICE_ONE, -5, PRICE_ONE + 1):
        with pytest.raises(ValueError):
            book.apply_delta("yes", price, 1)
    with pytest.raises(ValueError):
        book.depth("both")
    with pytest.raises(ValueError):
        book.buy_cost("maybe", 100)
    for count in (0, -1, 1.5):
        with pytest.raises(ValueError):
            book.buy_cost("yes", count)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        book.apply_snapshot([(0.47, 100)], [])  # type: ignore[list-item]
    assert book.valid and book.levels("yes") == ((4700, 300),)


def test_snapshot_rules():
    book = OrderBook(T)
    # zero-size levels are dropped, the input order does not matter
    assert book.apply_snapshot([(4700, 300), (4500, 0), (4600, 10)], iter([(4800, 200)]))
    assert book.levels("yes") == ((4600, 10), (4700, 300))
    # duplicates → invalid (decided: a corrupt snapshot, not "last wins")
    assert book.apply_snapshot([(4700, 300), (4700, 100)], []) is False
    assert not book.valid and "twice" in book.invalid_reason and book.levels("yes") == ()
    assert book.apply_snapshot([(4700, 300)], [(4800, -1)]) is False and "negative" in book.invalid_reason
    assert book.apply_snapshot([(0, 300)], []) is False
    assert book.apply_snapshot([], [(PRICE_ONE, 300)]) is False
    # a good snapshot replaces everything and revalidates
    assert book.apply_snapshot([(100, 1)], []) and book.levels("yes") == ((100, 1),) and book.levels("no") == ()


def test_invalidate():
    book = booked(yes=[(4700, 300)])
    book.invalidate("sequence gap on sid 1")
    assert not book.valid and book.invalid_reason == "sequence gap on sid 1"
    assert book.best_yes_bid() is None and book.buy_cost("no", 100) == BuyQuote(0, 0, None, None, 0)
    assert "invalid" in repr(book)


def test_subpenny_ticks():
    book = booked(yes=[(10, 100), (15, 250)], no=[(9985, 7)])  # 0.001 and 0.0015 ticks
    assert book.best_yes_bid() == (15, 250) and book.best_yes_ask() == (15, 7)
    assert book.crossed()  # 0.0015 + 0.9985 = 1


def test_capture_replay(wire_dir):
    """Decode the real capture and replay it into a book."""
    book = OrderBook("KXWTACHALLENGERMATCH-26JUN11JIMLEP-LEP")
    lines = [l for l in (wire_dir / "ws__orderbook_trade_noleg.jsonl").read_bytes().split(b"\n") if l.strip()]
    frames = [decode_frame(l) for l in lines][2:]
    assert book.apply_snapshot(frames[0].yes, frames[0].no)
    assert book.best_yes_ask() == (5200, 200)
    for d in frames[1:3]:
        assert book.apply_delta(d.side, d.price, d.delta)
    assert book.levels("yes") == () and book.levels("no") == ()
    for d in frames[3:]:
        assert book.apply_delta(d.side, d.price, d.delta)
    assert book.best_yes_bid() == (4700, 300) and book.best_no_bid() == (4800, 100)


# ---------------------------------------------------------------------------------------------
# buy_cost


def test_buy_cost_demo_fill():
    # demo capture: IOC bid 0.99 against a NO bid at 0.48 filled 1 @ 0.52 → cost $0.52
    book = booked(yes=[(4700, 300)], no=[(4800, 300)])
    q = book.buy_cost("yes", COUNT_ONE)
    assert q == BuyQuote(100, 5200, 5200, 5200, 1)


def test_buy_cost_walks_levels_and_limit():
    book = booked(yes=[(4000, 1000), (4500, 500)], no=[(4800, 200), (4700, 300), (4000, 1000)])
    # buy YES: asks are 0.52 x2, 0.53 x3, 0.60 x10
    q = book.buy_cost("yes", 600)
    assert q.count_filled == 600 and q.levels_walked == 3 and q.worst_price == 6000
    assert q.cost == 2 * 5200 + 3 * 5300 + 1 * 6000
    assert q.average_price == -(-(2 * 5200 + 3 * 5300 + 1 * 6000) * 100 // 600)
    q = book.buy_cost("yes", 600, limit_price=5300)
    assert (q.count_filled, q.levels_walked, q.worst_price) == (500, 2, 5300)
    assert book.buy_cost("yes", 600, limit_price=5100) == BuyQuote(0, 0, None, None, 0)
    # more than the book holds: partial
    assert book.buy_cost("yes", 10**6).count_filled == 1500
    # buy NO walks the YES bids: NO asks 0.55 x5, 0.60 x10
    q = book.buy_cost("no", 700)
    assert (q.count_filled, q.cost, q.worst_price, q.levels_walked) == (700, 5 * 5500 + 2 * 6000, 6000, 2)


def test_buy_cost_fractional_rounds_up():
    book = booked(no=[(4845, 1)])  # 0.01 contract at YES 0.5155 → $0.005155 → 52 units
    q = book.buy_cost("yes", 1)
    assert q.cost == 52 and q.average_price == 5155


def brute_force(levels_bid_side, outcome_count, limit):
    """Independent sweep: one 0.01-contract unit at a time, exact Fractions, per-level ceil."""
    asks = sorted((PRICE_ONE - p, s) for p, s in levels_bid_side)
    units = []
    for level, (price, size) in enumerate(asks):
        if limit is not None and price > limit:
            break
        units.extend([(level, price)] * size)
    units = units[:outcome_count]
    if not units:
        return BuyQuote(0, 0, None, None, 0)
    per_level: dict[int, Fraction] = {}
    for level, price in units:
        # one unit = 0.01 contract; price/10^4 dollars; money units = $ × 10^4
        per_level[level] = per_level.get(level, Fraction(0)) + Fraction(price, COUNT_ONE)
    cost = sum(-(-f.numerator // f.denominator) for f in per_level.values())
    exact = sum(Fraction(p) for _, p in units) / len(units)
    average = -(-exact.numerator // exact.denominator)
    return BuyQuote(len(units), cost, average, units[-1][1], len(per_level))


levels_st = st.dictionaries(st.integers(1, PRICE_ONE - 1), st.integers(1, 400), max_size=8)


@settings(max_examples=200, deadline=None)
@given(levels_st, levels_st, st.sampled_from(["yes", "no"]), st.integers(1, 2000),
       st.none() | st.integers(1, PRICE_ONE - 1))
def test_buy_cost_matches_brute_force(yes, no, outcome, count, limit):
    book = booked(yes=list(yes.items()), no=list(no.items()))
    opposite = no if outcome == "yes" else yes
    assert book.buy_cost(outcome, count, limit) == brute_force(opposite.items(), count, limit)


# ---------------------------------------------------------------------------------------------
# Stateful: OrderBook vs a dict-of-levels model

PRICES = st.sampled_from([1, 50, 100, 4700, 4800, 5000, 5200, 9900, 9999])
SIDES = st.sampled_from(["yes", "no"])
SNAP_SIDE = st.lists(st.tuples(PRICES, st.integers(0, 500)), max_size=6, unique_by=lambda level: level[0])


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook(T)
        self.model: dict[str, dict[int, int]] = {"yes": {}, "no": {}}
        self.valid = False

    @rule(yes=SNAP_SIDE, no=SNAP_SIDE)
    def snapshot(self, yes, no):
        assert self.book.apply_snapshot(yes, no)
        self.model = {"yes": {p: s for p, s in yes if s}, "no": {p: s for p, s in no if s}}
        self.valid = True

    @rule(side=SIDES, price=PRICES, delta=st.integers(-300, 300))
    def delta(self, side, price, delta):
        ok = self.book.apply_delta(side, price, delta)
        if not self.valid:
            assert ok is False
            return
        new = self.model[side].get(price, 0) + delta
        if new < 0:
            assert ok is False
            self.valid = False
            self.model = {"yes": {}, "no": {}}
            return
        assert ok is True
        if new == 0:
            self.model[side].pop(price, None)
        else:
            self.model[side][price] = new

    @precondition(lambda self: self.valid)
    @rule(side=SIDES, price=PRICES)
    def remove_level_exactly(self, side, price):
        size = self.model[side].get(price, 0)
        assert self.book.apply_delta(side, price, -size)
        self.model[side].pop(price, None)

    @rule()
    def invalidate(self):
        self.book.invalidate("test")
        self.valid = False
        self.model = {"yes": {}, "no": {}}

    @rule(outcome=SIDES, count=st.integers(1, 1500), limit=st.none() | PRICES)
    def buy(self, outcome, count, limit):
        opposite = self.model["no" if outcome == "yes" else "yes"]
        assert self.book.buy_cost(outcome, count, limit) == brute_force(opposite.items(), count, limit)

    @invariant()
    def matches_model(self):
        book, model = self.book, self.model
        assert book.valid == self.valid
        for side in ("yes", "no"):
            levels = book.levels(side)
            assert levels == tuple(sorted(model[side].items()))
            assert all(size > 0 and 0 < price < PRICE_ONE for price, size in levels)
            assert book.depth(side) == len(model[side])
            assert book.total_size(side) == sum(model[side].values())
        y = max(model["yes"].items(), default=None)
        n = max(model["no"].items(), default=None)
        assert book.best_yes_bid() == y
        assert book.best_no_bid() == n
        assert book.best_yes_ask() == (None if n is None else (PRICE_ONE - n[0], n[1]))
        assert book.best_no_ask() == (None if y is None else (PRICE_ONE - y[0], y[1]))
        assert book.spread() == (None if y is None or n is None else PRICE_ONE - n[0] - y[0])
        assert book.crossed() == (y is not None and n is not None and y[0] + n[0] >= PRICE_ONE)


BookMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBookMachine = BookMachine.TestCase


def test_decoded_units_feed_the_book():
    # the decoder's units are the book's units
    book = booked(yes=[(parse_price("0.4700"), parse_count("3.00"))])
    assert book.best_no_ask() == (5300, 300)
