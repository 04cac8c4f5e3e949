"""Whole-system fault scenarios (reliability.md §7.2 F10, F11, F18, L4 and §7.5 D6): the real actor system
(System, every actor, in-process) against an in-process LocalExchange with the flow off; whales and
counterparties are made by hand so every scenario is deterministic."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter

import pytest

from actors.whale_tracker import WhaleTracker
from kalshi.units import COUNT_ONE
from messages.whale import ACTIONS
from tests.helpers import wait_for
from tests.integration.helpers_system import OTHER_KEY_ID, SystemRig

pytestmark = pytest.mark.timeout(90)

STORM_S = 10.0


def followed(rig: SystemRig) -> list[str]:
    return [row[0] for row in rig.journal_rows("SELECT whale_id FROM decisions WHERE action = 'follow'")]


def follow_one(rig: SystemRig, ticker: str) -> str:
    """A whale on ``ticker`` followed end to end: returns our filled order's client_order_id."""
    before = {cid for _, cid, _, _ in rig.our_orders()}
    rig.whale_trade(ticker)
    wait_for(lambda: any(cid not in before and status == "executed" for _, cid, status, _ in rig.our_orders()),
             15, message=f"our order on {ticker}")
    [cid] = [cid for _, cid, _, _ in rig.our_orders() if cid not in before]
    return cid


def ws_connections(rig: SystemRig) -> int:
    return rig.ex.stats()["connections"]


def test_f11a_exchange_restart_with_state_reconnects_resyncs_without_duplicates(make_rig):
    rig = make_rig()
    rig.start_exchange()
    rig.start_system()
    first = follow_one(rig, rig.tickers[0])
    syncs_before = rig.actor_stats("state_keeper")["syncs_ok"]

    rig.restart_exchange(with_state=True)
    assert [o for o in rig.our_orders() if o[1] == first], "the state file did not carry our order over"
    # The feeds reconnect to the new server and subscribe again; the state keeper reconciles over REST.
    wait_for(lambda: ws_connections(rig) >= 3, 20, message="feeds reconnected")
    wait_for(lambda: rig.actor_stats("state_keeper")["syncs_ok"] > syncs_before, 20, message="state keeper re-synced")
    rig.wait_state("READY", 30)
    assert rig.position(rig.tickers[0]) == 5 * COUNT_ONE

    # The trades channel works again (a new whale is followed), and the old whale is not followed twice.
    second = follow_one(rig, rig.tickers[1])
    assert second != first
    assert rig.duplicate_client_ids() == {}
    assert len(followed(rig)) == len(set(followed(rig))) == 2
    counts = rig.executor()["counts"]  # two creates in all: nothing re-sent (the exchange's dedupe hides nothing)
    assert sum(n for key, n in counts.items() if key.startswith("place_")) == 2, counts
    assert rig.stop_system() == 0


def test_f11b_exchange_restart_empty_resolves_local_orders_and_rereads_positions(make_rig):
    rig = make_rig()
    rig.start_exchange()
    rig.start_system()
    follow_one(rig, rig.tickers[0])
    rig.place_resting(rig.tickers[1], "s1-resting-1", 1000, 1 * COUNT_ONE)
    assert rig.actor_stats("state_keeper")["positions"] == 1

    rig.restart_exchange(with_state=False)  # a new exchange that never saw us
    assert rig.our_orders() == []
    wait_for(lambda: ws_connections(rig) >= 3, 20, message="feeds reconnected")

    def resolved() -> bool:
        keeper = rig.actor_stats("state_keeper")
        return keeper["resting_orders"] == 0 and keeper["positions"] == 0 and not keeper["inflight_orders"]

    wait_for(resolved, 20, message="orders resolved, positions re-read")
    rig.wait_state("READY", 30)
    executor = rig.executor()
    assert executor["open_orders"] == {} and executor["unknown_outcomes"] == 0
    old_group = executor["order_group_id"]
    # The new exchange does not know our order group: the first create says so (404), that whale is
    # rejected, a new group is made, and the next whale is followed (no phantom exposure blocks the risk checks).
    rig.whale_trade(rig.tickers[2])
    wait_for(lambda: rig.executor()["order_group_id"] not in (None, old_group), 15, message="a new order group")
    assert rig.executor()["order_group_triggered"] is False
    follow_one(rig, rig.tickers[3])
    assert rig.duplicate_client_ids() == {}
    assert rig.stop_system() == 0


def test_d6_resting_order_filled_while_we_are_down_is_reconciled_on_restart(make_rig):
    rig = make_rig()
    rig.start_exchange()
    rig.start_system()
    ticker = rig.tickers[0]
    order_id = rig.place_resting(ticker, "s1-d6-gtc", 4000, 3 * COUNT_ONE)
    # Its user_orders frame (a new order: no last_update_reason yet) decodes; none is dropped as malformed.
    wait_for(lambda: rig.actor_stats("position_listener")["orders"] >= 1, 10, message="user_order frame")
    assert rig.actor_stats("position_listener")["malformed"] == 0
    rig.crash_system()
    assert [(o[0], o[2]) for o in rig.our_orders()] == [(order_id, "resting")]  # nothing canceled it

    with rig.rest(OTHER_KEY_ID) as other:  # the counterparty sells YES into our bid while we are down
        fill = other.create_order(ticker, "ask", 3 * COUNT_ONE, 4000, "immediate_or_cancel", "s1-d6-taker")
    assert fill.fill_count == 3 * COUNT_ONE
    [(oid, _, status, filled)] = rig.our_orders()
    assert (oid, status, filled) == (order_id, "executed", 3 * COUNT_ONE)

    rig.start_system()
    keeper = rig.actor_stats("state_keeper")
    assert keeper["positions"] == 1 and keeper["resting_orders"] == 0 and not keeper["inflight_orders"]
    # Re-read from REST at start (absolute, not from fills); the status reaches the broadcaster on a later Tick.
    [position] = wait_for(lambda: rig.system.status(2.0)["positions"], 5, message="position in the status")
    assert (position["market_ticker"], position["position"], position["cost_dollars"]) == (ticker, "3.00", "1.2000")
    assert rig.executor()["open_orders"] == {}
    # The fill itself was never streamed to us: the start-up sync reads it over REST and the executor journals
    # it (issue 5, rule 12) — once, however many syncs read it again.
    fills_sql = "SELECT fill_id, body FROM fills"
    [(fill_id, body)] = wait_for(lambda: rig.journal_rows(fills_sql), 10, message="the missed fill journaled")
    journaled = json.loads(body)
    assert (journaled["order_id"], journaled["count"], journaled["yes_price"], journaled["source"]) == (
        order_id, 3 * COUNT_ONE, 4000, "rest")
    assert rig.stop_system() == 0
    rig.start_system()  # the next run reads the same fill again (a day back): the journal keeps it once
    wait_for(lambda: rig.executor()["counts"].get("fills_already_journaled") == 1, 10, message="fill re-read")
    assert rig.stop_system() == 0
    assert [r[0] for r in rig.journal_rows(fills_sql)] == [fill_id]


def test_f10_crash_loop_goes_to_error_closes_the_gate_and_cancels_resting_orders(make_rig, monkeypatch):
    rig = make_rig(supervisor={"max_restarts": 3})
    rig.start_exchange()
    rig.start_system()
    rig.place_resting(rig.tickers[1], "s1-f10-resting", 1000, 1 * COUNT_ONE)

    def explode(self, msg):
        raise RuntimeError("s1 crash loop")

    monkeypatch.setattr(WhaleTracker, "on_tick", explode)  # every Tick (20 a second) now fails
    rig.sup()["refs"]["whale_tracker"].stop()  # the next generation picks up the broken handler
    rig.wait_state("ERROR", 30)
    sup = rig.sup()
    assert sup["gate_open"] is False
    assert "restart intensity exceeded" in sup["state_reason"] and "whale_tracker" in sup["state_reason"]
    wait_for(lambda: [o for o in rig.our_orders() if o[2] == "resting"] == [], 10, message="resting orders canceled")
    assert rig.executor()["gate_open"] is False

    # ERROR is final until the cool-down: the broken actor is not restarted again (no busy loop).
    generation = sup["children"]["whale_tracker"]["generation"]
    handled = rig.executor()["handled"]
    wait_for(lambda: rig.executor()["handled"] > handled + 20, 10, message="20 more ticks")  # about a second
    assert rig.sup()["children"]["whale_tracker"]["generation"] == generation
    assert rig.state() == "ERROR"

    events = [json.loads(line) for line in rig.supervisor_log().splitlines()]
    delays = [e["extra"]["delay_ms"] for e in events if e["event"] == "restart_scheduled" and e["actor"] == "whale_tracker"]
    assert len(delays) == 3 and delays == sorted(delays) and delays[-1] > delays[0], delays  # backoff grows
    [error] = [e for e in events if e["event"] == "state" and e["state_after"] == "ERROR"]
    assert error["state_before"] == "READY" and "restart intensity exceeded" in error["reason"]
    assert any(e["event"] == "gate" and e["state_after"] == "ERROR" and e["extra"]["open"] is False for e in events)
    rig.stop_system()


def test_f18_triggered_order_group_rejects_creates_without_a_replacement_loop(make_rig):
    # A bucket large enough that the local rate limit does not hide a loop.
    rig = make_rig(env={"WHALE_MAX_TRADES_PER_MINUTE": "20"})
    rig.start_exchange()
    rig.start_system()
    gid = rig.executor()["order_group_id"]
    assert gid
    user = rig.user()
    rig.ex.call(lambda e: e.trigger_group(user, gid))
    for ticker in rig.tickers[:3]:
        rig.whale_trade(ticker)
    # The first refusal tells the executor the group is triggered; follows already decided by then are sent and
    # refused (final), later whales are held back (skipped_gate, not final).
    wait_for(lambda: rig.executor()["order_group_triggered"] and rig.executor()["counts"].get("place_rejected", 0) >= 1
             and not rig.executor()["open_orders"], 15, message="the trigger seen through a refused create")
    for ticker in rig.tickers[:3]:
        rig.whale_trade(ticker, contracts=150)
    wait_for(lambda: len(rig.journal_rows("SELECT * FROM decisions WHERE action = 'skipped_gate'")) >= 3, 15,
             message="later whales held back")
    refused = rig.executor()["counts"]["place_rejected"]
    handled = rig.executor()["handled"]
    wait_for(lambda: rig.executor()["handled"] > handled + 20, 10, message="20 more ticks")  # retries would show here
    stats = rig.executor()
    assert rig.our_orders() == []
    assert 1 <= refused <= 3 and stats["counts"].get("place_rejected") == refused, stats["counts"]
    assert stats["counts"].get("place_accepted", 0) == 0 and stats["counts"].get("follow", 0) == refused, stats["counts"]
    assert stats["order_group_triggered"] is True and stats["order_group_id"] == gid
    outcomes = rig.journal_rows("SELECT client_order_id, status FROM order_outcomes")
    assert len(outcomes) == len({cid for cid, _ in outcomes}) == refused and {st for _, st in outcomes} == {"rejected"}
    rig.stop_system()


@pytest.mark.slow
def test_l4_whale_storm_stays_within_the_local_bucket(make_rig):
    # One position per market is allowed, so more markets than the bucket can pay for in the storm.
    capacity, refill_s, markets = 3, 2, 12
    rig = make_rig(markets=markets, env={"WHALE_MAX_TRADES_PER_MINUTE": str(capacity),
                                         "WHALE_TOKEN_REFILL_SECONDS": str(refill_s),
                                         "WHALE_QUEUE_SIZE": "50", "RL_ORDERBOOK_MARKET_LIMIT": str(markets)})
    rig.start_exchange(liquidity=1_000_000)
    rig.start_system()
    started = time.monotonic()
    count = 0
    # About 120 qualifying whale trades a second on twelve markets for ten seconds (paced load, not a wait).
    while time.monotonic() - started < STORM_S:
        rig.ex.call(lambda e: [rig.whale_trade_on(e, t) for t in rig.tickers for _ in range(2)])
        count += 2 * len(rig.tickers)
        threading.Event().wait(0.2)
    rig.wait_quiet()
    stats = rig.executor()
    decisions = rig.journal_rows("SELECT action, body FROM decisions")
    follows = [json.loads(body) for action, body in decisions if action == "follow"]
    assert capacity <= len(follows) <= markets, len(follows)
    # The local bucket: over any stretch of W ms, at most capacity + ⌈W / refill⌉ orders.
    times = sorted(f["ts_ms"] for f in follows)
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = capacity + math.ceil((times[j] - times[i]) / (refill_s * 1000))
            assert j - i + 1 <= allowed, (times, i, j)
    assert times[capacity - 1] - times[0] < refill_s * 1000  # the storm emptied the bucket at once
    sent = stats["counts"].get("place_accepted", 0) + stats["counts"].get("place_rejected", 0)
    assert sent == len(follows) and len(rig.our_orders()) == len(follows)
    assert rig.exchange_429s() == 0 and stats["counts"].get("place_rate_limited", 0) == 0
    trade_ids = [t for f in follows for t in f["trade_ids"]]
    assert len(trade_ids) == len(set(trade_ids))  # each trade followed at most once
    assert rig.duplicate_client_ids() == {}
    skipped = Counter(action for action, _ in decisions if action != "follow")
    assert skipped["rate_limited"] > 0, skipped
    assert set(skipped) <= set(ACTIONS), skipped
    seen = {row[0] for row in rig.journal_rows("SELECT whale_id FROM whales_seen")}
    decided = {row[0] for row in rig.journal_rows("SELECT whale_id FROM decisions")}
    assert seen <= decided, len(seen - decided)  # every whale that reached the executor has a journaled decision
    trades_seen = rig.actor_stats("whale_tracker")["trades_seen"]
    assert trades_seen >= count // 2, (trades_seen, count)
    rig.stop_system()
