"""Crash recovery (F16, D1): a subprocess follows a whale exactly as the executor does — decision, intent
(fsync), send, outcome — and dies with os._exit(137) at one injection point. The executor restarted on the same
journal resolves every intent at the exchange: one order at most, every intent closed, the whale never
followed twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.context import wall_ms
from actors.journal import Journal
from messages.whale import OrderAccepted, WhaleDecisionMade
from tests.actors.helpers_whale import whale
from tests.integration.helpers_whale import (
    KEY_ID,
    LiveRig,
    b3_keys,  # noqa: F401 - fixture
    our_orders,
    private_key_file,
    queue_update,
    seed_liquidity,
    start_exchange,
    tickers,
)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]

CRASHER = r"""
import json, os, sys
from actors.journal import Journal
from actors.whale_rules import client_order_id_for
from kalshi.auth import Credentials
from kalshi.rest import KalshiRest, OrderRequest
from messages.whale import Decision, OrderPlan

args = json.loads(sys.argv[1])
point = args["point"]
now = args["now_ms"]
journal = Journal(args["data_dir"])
coid = client_order_id_for(args["whale_id"], "v1")
plan = OrderPlan(client_order_id=coid, whale_id=args["whale_id"], market=args["ticker"], outcome="yes", side="bid",
                 price=5500, count=500)
journal.record_decision(Decision(action="follow", reason="crash test", whale_id=args["whale_id"],
                                 market=args["ticker"], final=True, outcome="yes", side="bid", price=5500, count=500,
                                 client_order_id=coid, trade_ids=tuple(args["trade_ids"]),
                                 whale_ts_ms=args["whale_ts_ms"], plan=plan, decided_ms=now))
if point == "after_decision":
    os._exit(137)
journal.record_intent(plan, now)
if point == "after_intent":
    os._exit(137)
rest = KalshiRest(args["rest_url"], Credentials.from_pem_file(args["key_id"], args["key_file"]), total_timeout=5)
result = rest.submit_order(OrderRequest(ticker=plan.market, side=plan.side, count=plan.count, price=plan.price,
                                        time_in_force=plan.time_in_force, client_order_id=coid))
if point == "after_send":
    os._exit(137)
journal.record_outcome(coid, "accepted", now, result.order_id, {"fill_count": result.fill_count})
os._exit(137)
"""


@pytest.fixture
def ex(b3_keys):
    exchange = start_exchange(b3_keys)
    yield exchange
    exchange.stop()


@pytest.mark.parametrize("point", ["after_decision", "after_intent", "after_send", "after_outcome"])
def test_restart_after_kill_resolves_every_intent_and_never_follows_twice(ex, b3_keys, tmp_path, point):
    ticker = tickers(ex)[0]
    seed_liquidity(ex, ticker)
    w = whale(ticker, "yes", 5500, 300, wall_ms())
    data_dir = tmp_path / "data"
    args = {
        "point": point, "now_ms": wall_ms(), "data_dir": str(data_dir), "whale_id": w.whale_id, "ticker": ticker,
        "trade_ids": list(w.trade_ids), "whale_ts_ms": w.ts_ms, "rest_url": ex.rest_url, "key_id": KEY_ID,
        "key_file": str(private_key_file(tmp_path, b3_keys)),
    }
    proc = subprocess.run([sys.executable, "-c", CRASHER, json.dumps(args)], cwd=REPO, capture_output=True,
                          timeout=30)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    sent_before = len(our_orders(ex))
    assert sent_before == (1 if point in ("after_send", "after_outcome") else 0)

    rig = LiveRig(ex, b3_keys, data_dir)
    try:
        rig.start()
        # Gate open (as after READY); the same whale (and its trades) arrives again: never followed twice.
        rig.open_market(ticker, w)
        rig.ticking(lambda: not rig.stats()["open_orders"], message="every intent resolved")
        for _ in range(10):
            rig.tick()
            rig.ref.tell(queue_update(w))
        stats = rig.stats()
        assert stats["open_orders"] == {}
        orders = our_orders(ex)
        expected = 0 if point == "after_decision" else 1
        assert len(orders) == expected, orders
        if expected:
            assert orders[0][2] == "executed" and orders[0][3] == 500
        assert rig.rec.got("broadcaster", WhaleDecisionMade) == []  # already decided before the crash
        if point in ("after_intent", "after_send"):
            assert rig.rec.got("broadcaster", OrderAccepted)  # resolved (found, or resent with the same id)
    finally:
        rig.close()
    with Journal(data_dir) as journal:
        view = journal.load()
        assert view.pending_intents == ()
        assert w.whale_id in view.evaluated_whale_ids
        if expected:
            assert [coid for coid, _ in view.known_orders] == [orders[0][1]]
