"""Feed hot-path benchmark: frame decoding and book updates.  Run: python -m bench.wire_and_book

Measures, on a deterministic realistic mix (~90 % orderbook deltas, ~9 % trades, ~1 % snapshots of
20 levels a side, over 20 markets):
- frames/s through kalshi.wire.frames.decode_frame (validated, typed, integer units);
- frames/s through a bare json.loads of the same bytes (no validation, no units: a floor);
- frames/s through json.loads + kalshi.units parsing + a frozen dataclass (the naive typed way);
- deltas/s through OrderBook.apply_delta, through the same plus a best-bid query after each
  delta, and through a plain dict-of-levels update.
Prints a table, then one JSON line with every figure. Not run by pytest; takes ~10 s.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # allow `python bench/wire_and_book.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kalshi.book import OrderBook  # noqa: E402
from kalshi.units import format_count, format_price, parse_count, parse_price, parse_signed_count  # noqa: E402
from kalshi.wire.frames import decode_frame  # noqa: E402

SEED = 20261125
N_FRAMES = 20_000
N_DELTAS = 200_000
REPEATS = 5


def make_frames(rng: random.Random, n: int) -> list[bytes]:
    tickers = [f"KXHIGHNY-26NOV25-T{50 + i}" for i in range(20)]
    seq = 0
    out = []
    for i in range(n):
        seq += 1
        ticker = rng.choice(tickers)
        roll = rng.random()
        ts_ms = 1764000000000 + i * 37
        if roll < 0.01:
            levels = sorted(rng.sample(range(1, 99), 20))
            msg = {
                "market_ticker": ticker,
                "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
                "yes_dollars_fp": [[format_price(c * 100), format_count(rng.randint(1, 50000))] for c in levels],
                "no_dollars_fp": [[format_price(c * 100), format_count(rng.randint(1, 50000))] for c in levels],
            }
            frame = {"type": "orderbook_snapshot", "sid": 1, "seq": seq, "msg": msg}
        elif roll < 0.10:
            yes = rng.randint(1, 99) * 100
            frame = {"type": "trade", "sid": 2, "seq": seq, "msg": {
                "trade_id": f"5a3c0e1e-0c1b-4c5e-9f61-{i:012d}", "market_ticker": ticker,
                "yes_price_dollars": format_price(yes), "no_price_dollars": format_price(10_000 - yes),
                "count_fp": format_count(rng.randint(1, 100) * 100), "taker_side": "yes",
                "taker_outcome_side": rng.choice(["yes", "no"]), "taker_book_side": "bid",
                "is_block_trade": False, "ts": ts_ms // 1000, "ts_ms": ts_ms}}
        else:
            frame = {"type": "orderbook_delta", "sid": 1, "seq": seq, "msg": {
                "market_ticker": ticker, "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
                "price_dollars": format_price(rng.randint(1, 99) * 100),
                "delta_fp": format_count(rng.randint(-5000, 5000)), "side": rng.choice(["yes", "no"]),
                "ts": "2026-11-24T15:02:03.123456Z", "ts_ms": ts_ms}}
        out.append(json.dumps(frame, separators=(",", ":")).encode())
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class _DcDelta:
    sid: int
    seq: int
    market_ticker: str
    price: int
    delta: int
    side: str
    ts_ms: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class _DcTrade:
    sid: int
    seq: int
    trade_id: str
    market_ticker: str
    yes_price: int
    no_price: int
    count: int
    taker_side: str
    ts_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class _DcSnapshot:
    sid: int
    seq: int
    market_ticker: str
    yes: tuple
    no: tuple


def naive_decode(data: bytes):
    """json.loads + kalshi.units + dataclasses, without the decoder's validation."""
    obj = json.loads(data)
    m = obj["msg"]
    kind = obj["type"]
    if kind == "orderbook_delta":
        return _DcDelta(obj["sid"], obj["seq"], m["market_ticker"], parse_price(m["price_dollars"]),
                        parse_signed_count(m["delta_fp"]), m["side"], m.get("ts_ms"))
    if kind == "trade":
        return _DcTrade(obj["sid"], obj["seq"], m["trade_id"], m["market_ticker"], parse_price(m["yes_price_dollars"]),
                        parse_price(m["no_price_dollars"]), parse_count(m["count_fp"]), m["taker_outcome_side"],
                        m["ts_ms"])
    return _DcSnapshot(obj["sid"], obj["seq"], m["market_ticker"],
                       tuple((parse_price(p), parse_count(c)) for p, c in m.get("yes_dollars_fp") or ()),
                       tuple((parse_price(p), parse_count(c)) for p, c in m.get("no_dollars_fp") or ()))


def best_rate(fn, items) -> float:
    """Items per second, best of REPEATS (the least disturbed run on a shared machine)."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def run_decode(frames: list[bytes]) -> None:
    for f in frames:
        decode_frame(f)


def run_json(frames: list[bytes]) -> None:
    loads = json.loads
    for f in frames:
        loads(f)


def run_naive(frames: list[bytes]) -> None:
    for f in frames:
        naive_decode(f)


def make_deltas(rng: random.Random, n: int) -> tuple[list[tuple[int, int]], list[tuple[str, int, int]]]:
    """A snapshot plus n deltas that never drive a level negative (so the book stays valid)."""
    prices = [c * 100 for c in range(1, 100)]
    snapshot = [(p, rng.randint(1, 50000)) for p in prices[::3]]
    model = {"yes": dict(snapshot), "no": dict(snapshot)}
    out = []
    for _ in range(n):
        side = "yes" if rng.random() < 0.5 else "no"
        price = rng.choice(prices)
        have = model[side].get(price, 0)
        delta = rng.randint(-have, 5000) if have else rng.randint(1, 5000)
        if have and rng.random() < 0.1:
            delta = -have  # level removed
        new = have + delta
        if new:
            model[side][price] = new
        else:
            model[side].pop(price, None)
        out.append((side, price, delta))
    return snapshot, out


def main() -> dict:
    rng = random.Random(SEED)
    frames = make_frames(rng, N_FRAMES)
    for f in frames[:200]:  # the naive path must agree with the real decoder
        a, b = decode_frame(f), naive_decode(f)
        assert (a.sid, a.seq, a.market_ticker) == (b.sid, b.seq, b.market_ticker)
    kinds = {}
    for f in frames:
        k = json.loads(f)["type"]
        kinds[k] = kinds.get(k, 0) + 1

    decode_rate = best_rate(run_decode, frames)
    json_rate = best_rate(run_json, frames)
    naive_rate = best_rate(run_naive, frames)

    snapshot, deltas = make_deltas(rng, N_DELTAS)

    def run_book(items):
        book = OrderBook("KXHIGHNY-26NOV25-T55")
        book.apply_snapshot(snapshot, snapshot)
        apply = book.apply_delta
        for side, price, delta in items:
            apply(side, price, delta)
        assert book.valid

    def run_book_query(items):
        book = OrderBook("KXHIGHNY-26NOV25-T55")
        book.apply_snapshot(snapshot, snapshot)
        apply, best_yes, best_no = book.apply_delta, book.best_yes_bid, book.best_no_bid
        for side, price, delta in items:
            apply(side, price, delta)
            best_yes()
            best_no()

    def run_dict(items):
        levels = {"yes": dict(snapshot), "no": dict(snapshot)}
        for side, price, delta in items:
            d = levels[side]
            new = d.get(price, 0) + delta
            if new > 0:
                d[price] = new
            else:
                d.pop(price, None)

    book_rate = best_rate(run_book, deltas)
    book_query_rate = best_rate(run_book_query, deltas)
    dict_rate = best_rate(run_dict, deltas)

    figures = {
        "frames": len(frames),
        "mix": kinds,
        "decode_frame_per_s": round(decode_rate),
        "json_loads_per_s": round(json_rate),
        "json_units_dataclass_per_s": round(naive_rate),
        "decode_vs_json_loads": round(decode_rate / json_rate, 2),
        "decode_vs_json_units_dataclass": round(decode_rate / naive_rate, 2),
        "deltas": len(deltas),
        "book_apply_delta_per_s": round(book_rate),
        "book_apply_delta_plus_best_bids_per_s": round(book_query_rate),
        "plain_dict_update_per_s": round(dict_rate),
        "book_vs_dict": round(book_rate / dict_rate, 2),
        "python": sys.version.split()[0],
    }
    rows = [
        ("decode_frame (validated, typed, int units)", decode_rate, "frames/s"),
        ("json.loads only (no validation, no units)", json_rate, "frames/s"),
        ("json.loads + units + dataclass", naive_rate, "frames/s"),
        ("OrderBook.apply_delta", book_rate, "deltas/s"),
        ("OrderBook.apply_delta + best bids", book_query_rate, "deltas/s"),
        ("plain dict update", dict_rate, "deltas/s"),
    ]
    print(f"mix of {len(frames)} frames: {kinds}")
    print(f"{'path':46s} {'rate':>12s}  unit        us/item")
    for name, rate, unit in rows:
        print(f"{name:46s} {rate:12,.0f}  {unit:10s} {1e6 / rate:7.2f}")
    print(f"decode_frame is {figures['decode_vs_json_loads']}x bare json.loads and "
          f"{figures['decode_vs_json_units_dataclass']}x json+units+dataclass; "
          f"OrderBook runs at {figures['book_vs_dict']}x a plain dict")
    print(json.dumps(figures, separators=(",", ":")))
    return figures


if __name__ == "__main__":
    main()
