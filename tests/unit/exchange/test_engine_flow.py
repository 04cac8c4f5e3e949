"""Synthetic flow: determinism, whales (informed, sweeping), settlement consistent with the fair
value path, the firehose rate, and state round-trips."""

from __future__ import annotations

import json
from collections import defaultdict

from kalshi.exchange.engine import Engine, EngineConfig
from kalshi.exchange.flow import FlowConfig

from .test_engine_support import ALICE, T0, Recorder, call, order_body

STEP_MS = 20


def run(eng: Engine, start_ms: int, seconds: float, step_ms: int = STEP_MS) -> None:
    for i in range(1, int(seconds * 1000 / step_ms) + 1):
        eng.advance(start_ms + i * step_ms)


def scripted(eng: Engine, rec: Recorder, start_ms: int) -> list:
    """Flow steps interleaved with a user's REST calls; returns the REST results."""
    out = []
    for i in range(1, 101):
        now = start_ms + i * STEP_MS
        eng.advance(now)
        if i % 25 == 0:
            t = eng.slots[i // 25 % len(eng.slots)]
            top = eng.markets[t].book.no.prices
            price = f"{(10_000 - top[-1]) / 10_000:.4f}" if top else "0.5000"
            body = order_body(t, "bid", price, "5.00", "good_till_canceled", client_order_id=f"s-{start_ms}-{i}")
            out.append(eng_call(eng, "POST", "/portfolio/events/orders", body, now))
            out.append(eng_call(eng, "GET", "/portfolio/positions", None, now))
            out.append(eng_call(eng, "GET", "/markets/trades", None, now, {"limit": ["5"]}))
    out.append(eng_call(eng, "GET", "/portfolio/balance", None, eng.now_ms))
    return out


def eng_call(eng, method, path, body, now, query=None):
    return call(eng, method, path, body, ALICE, query, now)


def test_same_seed_same_output_and_different_seed_differs():
    def one(seed):
        eng = Engine(EngineConfig(seed=seed, n_markets=4), T0)
        rec = Recorder()
        eng.add_listener(rec)
        results = scripted(eng, rec, T0)
        return json.dumps(results), json.dumps(rec.events), json.dumps(eng.to_state(), sort_keys=True)

    a, b, c = one(7), one(7), one(8)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


def test_state_round_trip_then_same_results():
    eng = Engine(EngineConfig(seed=3, n_markets=4), T0)
    scripted(eng, Recorder(), T0)  # leave resting orders, fills and positions behind
    t = eng.slots[0]
    call(eng, "POST", "/portfolio/events/orders",
         order_body(t, "bid", "0.0500", "2.00", expiration_time=(eng.now_ms // 1000) + 1), ALICE)
    call(eng, "POST", "/portfolio/order_groups/create", {"contracts_limit_fp": "50.00"}, ALICE)
    text = json.dumps(eng.to_state())
    restored = Engine.from_state(json.loads(text), eng.now_ms)
    assert json.dumps(restored.to_state(), sort_keys=True) == json.dumps(eng.to_state(), sort_keys=True)
    rec_a, rec_b = Recorder(), Recorder()
    eng.add_listener(rec_a)
    restored.add_listener(rec_b)
    start = eng.now_ms
    assert scripted(eng, rec_a, start) == scripted(restored, rec_b, start)
    assert rec_a.events == rec_b.events and len(rec_a.events) > 100
    assert json.dumps(restored.to_state(), sort_keys=True) == json.dumps(eng.to_state(), sort_keys=True)


def test_calm_whales_appear_some_informed_some_sweeping():
    eng = Engine(EngineConfig(seed=11, n_markets=4), T0)
    rec = Recorder()
    eng.add_listener(rec)
    run(eng, T0, 60, 50)
    per_second = eng.public_events / 60
    assert 150 < per_second < 1_000  # readable
    whales = eng.flow.whale_log
    assert 6 <= len(whales) <= 40  # about one every 4 s
    assert any(w["informed"] for w in whales) and any(not w["informed"] for w in whales)
    sweeps = [w for w in whales if w["sweep"] and w["filled"]]
    assert sweeps
    # a sweeping whale prints at several prices at one instant
    prices = defaultdict(set)
    for m in rec.of("trade"):
        prices[(m["market_ticker"], m["ts_ms"])].add(m["yes_price_dollars"])
    assert any(len(prices[(w["ticker"], w["ts_ms"])]) >= 2 for w in sweeps)
    assert max(w["filled"] for w in whales) >= 150 * 100
    # makers keep every active book two-sided
    for t in eng.slots:
        assert eng.markets[t].book.yes.prices and eng.markets[t].book.no.prices


def test_markets_settle_consistent_with_fair_value():
    flow = FlowConfig(messages_per_s=40, whale_every_s=1.0, fair_vol=60)
    eng = Engine(EngineConfig(seed=5, n_markets=4, market_duration_s=20, settlement_timer_s=1, flow=flow), T0)
    run(eng, T0, 900, 100)
    done = [m for m in eng.markets.values() if m.status == "finalized"]
    assert len(done) >= 150
    for m in done:
        assert m.result == ("yes" if m.settle_u < m.fair else "no")
    yes_rate = sum(m.result == "yes" for m in done) / len(done)
    mean_fair = sum(m.fair for m in done) / len(done) / 10_000
    assert abs(yes_rate - mean_fair) < 0.1
    high = [m for m in done if m.fair > 7_000]
    low = [m for m in done if m.fair < 3_000]
    assert sum(m.result == "yes" for m in high) > 0.6 * len(high)
    assert sum(m.result == "no" for m in low) > 0.6 * len(low)
    # informed whales bet on the side that later won more often than not
    results = {m.ticker: m.result for m in done}
    informed = [w for w in eng.flow.whale_log if w["informed"] and w["ticker"] in results]
    right = sum((results[w["ticker"]] == "yes") == w["is_bid"] for w in informed)
    assert informed and right > 0.6 * len(informed)


def test_firehose_reaches_20k_messages_per_simulated_second():
    eng = Engine(EngineConfig(seed=2, n_markets=20, flow=FlowConfig.firehose()), T0)
    counts = defaultdict(int)
    eng.add_listener(lambda ch, user, t, kind, msg: counts.__setitem__(ch, counts[ch] + 1))
    run(eng, T0, 1.0, 10)
    public = sum(v for k, v in counts.items() if k in ("orderbook_delta", "trade", "ticker", "market_lifecycle_v2"))
    assert public >= 20_000
    assert counts["trade"] > 0 and counts["ticker"] > 0
    assert eng.flow.whales >= 1


def test_flow_off_leaves_books_empty_and_clock_jump_is_bounded():
    quiet = Engine(EngineConfig(flow=FlowConfig.off()), T0)
    quiet.advance(T0 + 60_000)
    assert all(not m.book.yes.prices for m in quiet.markets.values()) and quiet.flow.whales == 0
    eng = Engine(EngineConfig(n_markets=2), T0)
    before = eng.public_events
    eng.advance(T0 + 3_600_000)  # one hour at once: at most max_catchup_ms of activity
    assert eng.public_events - before < 2_000


def test_output_does_not_depend_on_string_hashing():
    import hashlib
    import os
    import subprocess
    import sys

    script = (
        "import json, hashlib\n"
        "from kalshi.exchange.engine import Engine, EngineConfig\n"
        "from tests.unit.exchange.test_engine_flow import scripted, T0\n"
        "from tests.unit.exchange.test_engine_support import Recorder\n"
        "e = Engine(EngineConfig(seed=9, n_markets=3), T0); r = Recorder(); e.add_listener(r)\n"
        "out = scripted(e, r, T0)\n"
        "print(hashlib.sha256(json.dumps([out, r.events, e.to_state()], sort_keys=True).encode()).hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env,
                              cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.strip())
    assert len(digests) == 1 and len(hashlib.sha256().hexdigest()) == len(digests.pop())
