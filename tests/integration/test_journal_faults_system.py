"""Journal faults in the whole system (reliability.md D3 and F22): the real actor system (System, every actor,
in-process) against an in-process LocalExchange, as in test_system_faults.py.

- D3: a journal with a corrupt middle record refuses to trade: ERROR at once with the table and seq in the
  reason, the executor is not restart-looped, no order reaches the exchange; recovery after the cool-down
  tries it again (fixed → trading; still corrupt → ERROR again, and repeated ERRORs end in SHUTDOWN, exit 70).
- F22: the journal's disk fills up while trading (SQLite's own "database or disk is full", made real with
  ``PRAGMA max_page_count`` on the executor's journal connection, as tests/unit/test_journal.py does): ERROR
  at once with a reason starting "journal", the gate closed, our resting orders canceled, no order after it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pykka
import pytest

from actors.health_supervisor import EXIT_ESCALATED
from actors.journal import JOURNAL_FILE, Journal
from actors.supervisor_log import read_events
from actors.whale_rules import PublicTrade, WhaleQueue, client_order_id_for
from kalshi.units import COUNT_ONE
from messages.whale import Decision, OrderPlan
from tests.helpers import wait_for
from tests.integration.helpers_system import NS, SystemRig

pytestmark = pytest.mark.timeout(90)

T0 = 1_764_000_000_000
CORRUPT_AT = "journal corrupt at decisions seq 2: checksum mismatch"


# --- a journal with a corrupt middle record (as tests/unit/test_journal.py makes one) ------------------


def write_corrupt_journal(data_dir: Path) -> None:
    """One followed whale (sighting, decision, intent, outcome: seq 1–4), then decision seq 2 forged on disk."""
    q = WhaleQueue()
    _, whale = q.add(PublicTrade(trade_id="d3-t1", market="KXD3-26-T1", taker_side="yes", yes_price=5000,
                                 no_price=5000, count=300 * COUNT_ONE, ts_ms=T0), T0)
    plan = OrderPlan(client_order_id=client_order_id_for(whale.whale_id, "v1"), whale_id=whale.whale_id,
                     market=whale.market, outcome="yes", side="bid", price=5100, count=5 * COUNT_ONE)
    with Journal(data_dir) as j:
        j.record_whale_seen(whale, T0)
        j.record_decision(Decision(action="follow", reason="d3 follow", whale_id=whale.whale_id, market=whale.market,
                                   final=True, outcome=whale.side, trade_ids=whale.trade_ids, whale_ts_ms=whale.ts_ms,
                                   plan=plan, client_order_id=plan.client_order_id, decided_ms=T0 + 1))
        j.record_intent(plan, T0 + 2)
        j.record_outcome(plan.client_order_id, "accepted", T0 + 3, order_id="o-d3")
        assert j.load().last_seq == 4
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    try:
        conn.execute("UPDATE decisions SET body = replace(body, 'd3 follow', 'd3 forged') WHERE seq = 2")
        conn.commit()
    finally:
        conn.close()


def events(rig: SystemRig, event: str, actor: str | None = None) -> list[dict]:
    contents = read_events(rig.data_dir / "supervisor.jsonl")
    return [e for e in contents.events if e["event"] == event and (actor is None or e["actor"] == actor)]


def test_d3_corrupt_journal_goes_to_error_at_once_with_its_location(make_rig):
    rig = make_rig()
    write_corrupt_journal(rig.data_dir)
    rig.start_exchange()
    rig.start_system(wait_ready=False)
    rig.wait_state("ERROR", 30)
    sup = rig.sup()
    assert sup["state_reason"].startswith("whale_executor failed permanently") and CORRUPT_AT in sup["state_reason"]
    assert sup["gate_open"] is False
    executor = sup["children"]["whale_executor"]
    assert (executor["status"], executor["generation"], executor["restarts"]) == ("failed", 1, 0)
    assert CORRUPT_AT in executor["last_failure"]

    # ERROR holds (the rig's cool-down is 10 minutes): ticks go by and the executor is not started again.
    handled = rig.actor_stats("state_keeper")["handled"]
    wait_for(lambda: rig.actor_stats("state_keeper")["handled"] > handled + 20, 10, message="20 more ticks")
    sup = rig.sup()
    assert sup["state"] == "ERROR" and sup["children"]["whale_executor"]["generation"] == 1
    assert sup["total_restarts"] == 0
    rig.whale_trade(rig.tickers[0])  # a whale while in ERROR is not followed
    assert rig.our_orders() == []

    # The postmortem file: the failure with its location and traceback, no restart, ERROR with the reason.
    [failed] = events(rig, "actor_failed", "whale_executor")
    assert failed["extra"]["permanent"] is True and CORRUPT_AT in failed["reason"]
    assert "JournalCorrupt" in failed["traceback"]
    assert events(rig, "restart_refused", "whale_executor")
    # No restart ran (a restart scheduled by a liveness check that saw the dead executor before its report
    # is taken back by the report: only actual respawns are counted).
    assert events(rig, "restart") == [] and len(events(rig, "actor_spawned", "whale_executor")) == 1
    [error] = [e for e in events(rig, "state") if e["state_after"] == "ERROR"]
    assert CORRUPT_AT in error["reason"]
    assert rig.stop_system() == 0
    assert rig.our_orders() == []


def test_d3_recovery_tries_the_journal_again_and_trades_once_it_is_fixed(make_rig):
    rig = make_rig(supervisor={"error_cooldown_ns": 2 * NS})
    write_corrupt_journal(rig.data_dir)
    rig.start_exchange()
    rig.start_system(wait_ready=False)
    rig.wait_state("ERROR", 30)
    # The operator moves the corrupt journal aside during the cool-down; recovery starts a new executor.
    for suffix in ("", "-wal", "-shm"):
        path = rig.data_dir / (JOURNAL_FILE + suffix)
        if path.exists():
            path.rename(path.with_name(path.name + ".corrupt"))
    rig.wait_state("READY", 30)
    executor = rig.sup()["children"]["whale_executor"]
    assert executor["generation"] == 2 and executor["restarts"] == 0
    rig.whale_trade(rig.tickers[0])
    wait_for(lambda: [o for o in rig.our_orders() if o[2] == "executed"], 15, message="a whale followed")
    assert rig.stop_system() == 0


def test_d3_journal_still_corrupt_after_each_cool_down_escalates_to_shutdown(make_rig):
    rig = make_rig(supervisor={"error_cooldown_ns": NS // 2, "max_errors": 3, "error_window_ns": 600 * NS})
    write_corrupt_journal(rig.data_dir)
    rig.start_exchange()
    rig.start_system(wait_ready=False)
    system = rig.system
    assert system is not None
    # ERROR, and after each cool-down one more try (no restart loop in between); the fourth ERROR is too many.
    assert system.exited.wait(30), "the system did not escalate to SHUTDOWN"
    assert system.exit_code == EXIT_ESCALATED
    errors = [e for e in events(rig, "state") if e["state_after"] == "ERROR"]
    assert len(errors) == 4 and all(CORRUPT_AT in e["reason"] for e in errors)
    failed = events(rig, "actor_failed", "whale_executor")
    assert [e["generation"] for e in failed] == [1, 2, 3, 4] and all(e["extra"]["permanent"] for e in failed)
    assert events(rig, "restart") == []  # each try was a recovery from ERROR, not a restart
    [escalation] = events(rig, "escalation")
    assert "more than 3 ERRORs" in escalation["reason"] and CORRUPT_AT in escalation["reason"]
    assert rig.our_orders() == []
    assert rig.stop_system() == EXIT_ESCALATED


# --- the journal's disk fills up while trading --------------------------------------------------------------


def fill_the_journal_disk(rig: SystemRig) -> None:
    """From now on the executor's journal may not grow by a single page: SQLite answers "database or disk is
    full" (SQLITE_FULL, what a full disk gives) on the first write that needs one."""
    executor = rig.sup()["refs"]["whale_executor"]._actor_weakref()  # the running instance (pykka keeps a weakref)
    journal = executor.journal
    with journal._lock:  # the journal's own lock: no write of the executor is in progress meanwhile
        pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
        journal._conn.execute(f"PRAGMA max_page_count = {pages}")


def executor_idle(rig: SystemRig) -> bool:
    try:
        return rig.executor()["mailbox_depth"] == 0
    except pykka.ActorDeadError:  # stopped by the supervisor after the failure
        return True


def test_f22_journal_write_failure_means_error_at_once_and_cancels_resting_orders(make_rig):
    rig = make_rig(markets=6)
    rig.start_exchange()
    rig.start_system()
    ticker = rig.tickers[0]
    rig.whale_trade(ticker)  # one whale followed while the journal works
    wait_for(lambda: [o for o in rig.our_orders() if o[2] == "executed"], 15, message="a whale followed")
    resting = rig.place_resting(rig.tickers[1], "f22-resting", 1000, 1 * COUNT_ONE)

    fill_the_journal_disk(rig)
    # Whales keep coming (each one is journaled before anything is sent) until a write needs a new page.
    sent = 0
    while rig.state() != "ERROR":
        assert sent < 200, "the journal never filled up"
        seen = rig.actor_stats("whale_tracker")["trades_seen"]
        rig.whale_trade(rig.tickers[2 + sent % 4], contracts=200 + sent)
        sent += 1
        wait_for(lambda s=seen: rig.state() == "ERROR" or rig.actor_stats("whale_tracker")["trades_seen"] > s, 10,
                 message="the whale trade seen")
        wait_for(lambda: rig.state() == "ERROR" or executor_idle(rig), 10, message="executor idle")
    orders_at_error = {o[0] for o in rig.our_orders()}

    sup = rig.sup()
    assert sup["state_reason"].startswith("journal: ") and "disk is full" in sup["state_reason"]
    assert sup["gate_open"] is False
    # Our resting order (not even one of the executor's) is canceled at the exchange.
    wait_for(lambda: [o for o in rig.our_orders() if o[2] == "resting"] == [], 10, message="resting orders canceled")
    assert [o[2] for o in rig.our_orders() if o[0] == resting] == ["canceled"]
    # The executor with the dead journal was stopped (a restart reopens the journal) and waits for the
    # recovery from ERROR (10 minutes in this rig): no restart loop, no new instance meanwhile.
    wait_for(lambda: rig.sup()["children"]["whale_executor"]["status"] == "stopped", 10, message="executor stopped")

    # More whales after the failure: no new order reaches the exchange.
    seen = rig.actor_stats("whale_tracker")["trades_seen"]
    for i, t in enumerate(rig.tickers[2:]):
        rig.whale_trade(t, contracts=300 + i)
    wait_for(lambda: rig.actor_stats("whale_tracker")["trades_seen"] >= seen + 4, 10, message="later whales seen")
    handled = rig.actor_stats("state_keeper")["handled"]
    wait_for(lambda: rig.actor_stats("state_keeper")["handled"] > handled + 20, 10, message="20 more ticks")
    assert {o[0] for o in rig.our_orders()} == orders_at_error
    assert not [o for o in rig.our_orders() if o[2] == "resting"]
    sup = rig.sup()
    assert sup["state"] == "ERROR" and sup["children"]["whale_executor"]["generation"] == 1
    # Every order we sent has its intent in the journal (written before the send), none after the failure.
    intents = {row[0] for row in rig.journal_rows("SELECT client_order_id FROM order_intents")}
    assert {o[1] for o in rig.our_orders() if o[1] != "f22-resting"} <= intents

    [down] = events(rig, "trading_client_down", "whale_executor")
    assert down["extra"]["fatal"] is True and down["reason"].startswith("journal: ")
    [error] = [e for e in events(rig, "state") if e["state_after"] == "ERROR"]
    assert error["state_before"] in ("READY", "ACTING") and error["reason"].startswith("journal: ")
    assert events(rig, "restart") == []
    assert rig.stop_system() == 0
