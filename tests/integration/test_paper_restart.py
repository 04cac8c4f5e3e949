"""Paper execution across a crash: a subprocess follows a whale on paper exactly as the executor does —
decision, intent (fsync), paper fill, fills journaled, outcome — and dies with os._exit(137) at one point.
The executor restarted on the same journal (the real paper venue, built by make_venue) rebuilds the paper
account from the journaled fills: the position is back, a pending intent whose fills were journaled is found
(never filled twice), one without fills is resent with the same client_order_id, the whale is never followed
twice and a new whale in the held market is skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.context import SystemContext, wall_ms
from actors.journal import Journal
from actors.whale_executor import WhaleExecutor
from kalshi.units import COUNT_ONE
from messages.account import PositionChanged
from messages.control import RequestStats, Tick, TradingClientReady, TradingGateChanged
from messages.state import AccountViewUpdated, BookViewsUpdated
from messages.whale import WhaleDecisionMade
from tests.actors.helpers_whale import Recorders, account, book, settings, whale
from tests.helpers import wait_for
from tests.integration.helpers_whale import queue_update

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
TICKER = "KXPAPER-26NOV25-T1"
NO_BIDS = ((4500, 50 * COUNT_ONE),)  # a YES offer at 0.55 for 50: our 5 fill at once

CRASHER = r"""
import json, os, sys
from actors.journal import Journal
from actors.venues import PaperVenue
from actors.whale_executor import _fill_body
from actors.whale_rules import client_order_id_for
from messages.state import BookView
from messages.whale import Decision, OrderPlan

args = json.loads(sys.argv[1])
point, now = args["point"], args["now_ms"]
journal = Journal(args["data_dir"])
coid = client_order_id_for(args["whale_id"], "v1")
plan = OrderPlan(client_order_id=coid, whale_id=args["whale_id"], market=args["ticker"], outcome="yes", side="bid",
                 price=5500, count=500)
with journal.batch():
    journal.record_decision(Decision(action="follow", reason="crash test", whale_id=args["whale_id"],
                                     market=args["ticker"], final=True, outcome="yes", side="bid", price=5500,
                                     count=500, client_order_id=coid, trade_ids=tuple(args["trade_ids"]),
                                     whale_ts_ms=args["whale_ts_ms"], plan=plan, decided_ms=now))
    journal.record_intent(plan, now)
if point == "after_intent":
    os._exit(137)
view = BookView(market_ticker=args["ticker"], valid=True, yes=(), no=tuple(map(tuple, args["no_bids"])), seq=1, recv_ns=0)
outcome = PaperVenue(None, lambda market: view, clock_ms=lambda: now).place(plan, None)
assert outcome.status == "accepted" and outcome.fills, outcome
if point == "after_fill":  # filled in memory only: nothing of it reached the journal
    os._exit(137)
with journal.batch():
    for fill in outcome.fills:
        journal.record_fill(fill.fill_id, _fill_body(fill))
if point == "after_fills_journaled":
    os._exit(137)
journal.record_outcome(coid, "accepted", now, outcome.order_id, {"fill_count": outcome.fill_count})
os._exit(137)
"""


@pytest.mark.parametrize("point", ["after_intent", "after_fill", "after_fills_journaled", "after_outcome"])
def test_paper_restart_rebuilds_the_account_and_never_fills_a_whale_twice(tmp_path, point):
    w = whale(TICKER, "yes", 5500, 300, wall_ms())
    data_dir = tmp_path / "data"
    args = {"point": point, "now_ms": wall_ms(), "data_dir": str(data_dir), "whale_id": w.whale_id, "ticker": TICKER,
            "trade_ids": list(w.trade_ids), "whale_ts_ms": w.ts_ms, "no_bids": NO_BIDS}
    proc = subprocess.run([sys.executable, "-c", CRASHER, json.dumps(args)], cwd=REPO, capture_output=True, timeout=30)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    with Journal(data_dir) as journal:
        fills_before = len(journal.load().paper_fills)
    assert fills_before == (1 if point in ("after_fills_journaled", "after_outcome") else 0)

    rec = Recorders()
    # No REST at all: make_venue builds the real PaperVenue with the standard fee.
    ctx = SystemContext(settings=settings(), rest_url="", ws_url="", credentials=None, data_dir=data_dir,
                        market_tickers=(), execution="paper")
    ref = WhaleExecutor.start("whale_executor", 1, rec.refs["supervisor"], rec.peers("whale_executor"),
                              {"context": ctx, "absent_grace_s": 0.3, "resolve_backoff_s": 0.05})
    try:
        wait_for(lambda: rec.got("supervisor", TradingClientReady), 15, message="TradingClientReady")
        ref.tell(TradingGateChanged(open=True, reason="test"))
        ref.tell(AccountViewUpdated(view=account()))
        ref.tell(BookViewsUpdated(views=(book(TICKER, yes=(), no=NO_BIDS),)))
        ref.tell(queue_update(w))  # the same whale again: never followed twice

        def resolved():
            ref.tell(Tick(now_mono_ns=0, now_wall_ms=0))
            return not ref.ask(RequestStats(), timeout=10)["open_orders"]

        wait_for(resolved, 15, interval=0.02, message="every intent resolved")
        later = whale(TICKER, "yes", 5500, 300, wall_ms() + 1000, trade_id="t-later")
        ref.tell(queue_update(w, later))
        decided = wait_for(lambda: rec.got("broadcaster", WhaleDecisionMade), 10, message="the later whale")
        assert [(m.decision.whale_id, m.decision.action) for m in decided] == [(later.whale_id, "skipped_position")]
        positions = wait_for(lambda: rec.got("state_keeper", PositionChanged), 10, message="a paper position")
        assert positions[-1].market_ticker == TICKER and positions[-1].position == 5 * COUNT_ONE
        assert positions[-1].source == "paper"
    finally:
        ref.stop(timeout=15)
        rec.stop()
    with Journal(data_dir) as journal:
        view = journal.load()
    assert view.pending_intents == ()
    # One order's fills on the journal, 5 contracts in all: filled once, whatever the crash point.
    assert len({f["order_id"] for f in view.paper_fills}) == 1
    assert sum(f["count"] for f in view.paper_fills) == 5 * COUNT_ONE
