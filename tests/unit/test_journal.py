"""The SQLite execution journal: storage settings, ordering, recovery, corruption, failures."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat

import pytest

from actors.journal import JOURNAL_FILE, Journal, JournalCorrupt, JournalError, wal_uncommitted_tail
from actors.whale_rules import PublicTrade, WhaleQueue, client_order_id_for
from kalshi.units import COUNT_ONE
from messages.whale import Decision, OrderPlan

T0 = 1_764_000_000_000


def whale(tid="t1", market="KXA-26-T1", ts=T0):
    q = WhaleQueue()
    _, w = q.add(
        PublicTrade(trade_id=tid, market=market, taker_side="yes", yes_price=5000, no_price=5000,
                    count=300 * COUNT_ONE, ts_ms=ts),
        ts,
    )
    return w


def plan_for(w, price=5100):
    return OrderPlan(
        client_order_id=client_order_id_for(w.whale_id, "v1"), whale_id=w.whale_id, market=w.market,
        outcome="yes", side="bid", price=price, count=5 * COUNT_ONE,
    )


def decision(w, action="follow", final=True, plan=None):
    return Decision(
        action=action, reason=f"test {action}", whale_id=w.whale_id, market=w.market, final=final, outcome=w.side,
        trade_ids=w.trade_ids, whale_ts_ms=w.ts_ms, plan=plan,
        client_order_id=plan.client_order_id if plan else "", decided_ms=T0 + 1,
    )


def follow(j: Journal, w, status: str | None = "accepted", order_id: str | None = "o-1"):
    p = plan_for(w)
    j.record_whale_seen(w, T0)
    j.record_decision(decision(w, plan=p))
    j.record_intent(p, T0 + 2)
    if status:
        j.record_outcome(p.client_order_id, status, T0 + 3, order_id=order_id)
    return p


def test_pragmas_and_file_modes(tmp_path):
    with Journal(tmp_path) as j:
        assert j.pragmas() == ("wal", 2)
        follow(j, whale())
        for name in (JOURNAL_FILE, JOURNAL_FILE + "-wal", JOURNAL_FILE + "-shm"):
            path = tmp_path / name
            assert path.exists(), name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_intent_is_committed_when_record_intent_returns(tmp_path):
    """The order may be sent right after record_intent: an independent reader (and a crash copy)
    must already see it."""
    j = Journal(tmp_path)
    w = whale()
    p = plan_for(w)
    j.record_decision(decision(w, plan=p))
    j.record_intent(p, T0 + 2)
    other = sqlite3.connect(tmp_path / JOURNAL_FILE)
    try:
        assert other.execute("SELECT client_order_id FROM order_intents").fetchall() == [(p.client_order_id,)]
    finally:
        other.close()
    # "kill -9" now: copy the files as they are on disk, without closing the journal
    crash = tmp_path / "crash"
    crash.mkdir()
    for name in (JOURNAL_FILE, JOURNAL_FILE + "-wal"):
        shutil.copy(tmp_path / name, crash / name)
    j.close()
    with Journal(crash) as recovered:
        view = recovered.load()
    assert [x.client_order_id for x in view.pending_intents] == [p.client_order_id]
    assert view.pending_intents[0].plan == p and view.pending_intents[0].last_status is None
    assert w.whale_id in view.evaluated_whale_ids and w.whale_id in view.followed_whale_ids


def test_recovery_view(tmp_path):
    w1, w2, w3, w4, w5 = (whale(f"t{i}", market=f"KX{i}-1-A") for i in range(1, 6))
    with Journal(tmp_path) as j:
        follow(j, w1, "accepted", "o-1")
        p2 = follow(j, w2, "unknown", None)
        p3 = follow(j, w3, None)
        follow(j, w4, "rejected", None)
        j.record_decision(decision(w5, "rate_limited", final=False))
        j.record_decision(decision(w5, "skipped_age", final=True))
        assert j.record_fill("f-1", {"order_id": "o-1", "count": 500})
        assert not j.record_fill("f-1", {"order_id": "o-1", "count": 500})  # a duplicate fill changes nothing
        view = j.load()
        assert view.evaluated_whale_ids == {w.whale_id for w in (w1, w2, w3, w4, w5)}
        assert view.evaluated_trade_ids == {"t1", "t2", "t3", "t4", "t5"}
        assert view.evaluated_sweeps == {(w.market, "yes", T0) for w in (w1, w2, w3, w4, w5)}
        assert view.followed_whale_ids == {w.whale_id for w in (w1, w2, w3, w4)}
        assert [(p.client_order_id, p.last_status) for p in view.pending_intents] == [
            (p2.client_order_id, "unknown"), (p3.client_order_id, None)]
        assert view.unknown_outcomes == 2  # never answered counts: it may have been sent
        assert view.known_orders == ((plan_for(w1).client_order_id, "o-1"),)
        assert view.fill_ids == {"f-1"}
        assert view.intent_times_ms == (T0 + 2,) * 4
        # the unknown outcome is resolved by reading orders back: the intent closes
        j.record_outcome(p2.client_order_id, "resolved", T0 + 9, order_id="o-2")
        view = j.load()
        assert [p.client_order_id for p in view.pending_intents] == [p3.client_order_id]
        assert dict(view.known_orders)[p2.client_order_id] == "o-2"


def test_duplicate_sighting_is_journaled(tmp_path):
    q = WhaleQueue()
    t = PublicTrade(trade_id="t1", market="KXA-26-T1", taker_side="yes", yes_price=5000, no_price=5000,
                    count=300 * COUNT_ONE, ts_ms=T0)
    _, w = q.add(t, T0)
    outcome, same = q.add(t, T0 + 5)  # again, e.g. from a backfill after a reconnect
    assert outcome == "duplicate" and same == w
    with Journal(tmp_path) as j:
        j.record_whale_seen(w, T0)
        j.record_whale_seen(same, T0 + 5, event="duplicate", trade_id=t.trade_id)
        with pytest.raises(ValueError):
            j.record_whale_seen(w, T0, event="other")
        rows = j._conn.execute("SELECT body FROM whales_seen ORDER BY seq").fetchall()
    assert ['"event":"seen"' in rows[0][0], '"event":"duplicate"' in rows[1][0]] == [True, True]
    assert '"trade_id":"t1"' in rows[1][0]


def test_rate_limited_alone_does_not_mark_evaluated(tmp_path):
    w = whale()
    with Journal(tmp_path) as j:
        j.record_decision(decision(w, "rate_limited", final=False))
        j.record_decision(decision(w, "skipped_gate", final=False))
        view = j.load()
    assert view.evaluated_whale_ids == frozenset() and view.evaluated_sweeps == frozenset()


def test_same_intent_twice_is_idempotent_but_a_different_one_is_refused(tmp_path):
    w = whale()
    p = plan_for(w)
    with Journal(tmp_path) as j:
        seq = j.record_intent(p, T0)
        assert j.record_intent(p, T0 + 50) == seq  # a retry after restart: same intent
        with pytest.raises(JournalError, match="different intent"):
            j.record_intent(plan_for(w, price=5200), T0 + 60)
        with pytest.raises(ValueError):
            j.record_outcome("tv3-unknown", "accepted", T0, order_id="x")
        with pytest.raises(ValueError):
            j.record_outcome(p.client_order_id, "maybe", T0)
        assert j.load().last_seq == 1


def test_counts_and_recent_decisions(tmp_path):
    with Journal(tmp_path) as j:
        for i, action in enumerate(["follow", "skipped_age", "skipped_age", "rate_limited"]):
            w = whale(f"t{i}", ts=T0 + i)
            j.record_decision(decision(w, action, final=action != "rate_limited"))
        assert j.counts_by_action() == {"follow": 1, "rate_limited": 1, "skipped_age": 2}
        recent = j.recent_decisions(2)
        assert [d["action"] for d in recent] == ["rate_limited", "skipped_age"]
        assert recent[0]["reason"] == "test rate_limited"


def test_replay_is_deterministic(tmp_path):
    with Journal(tmp_path) as j:
        follow(j, whale("a", market="KXA-1-A"))
        follow(j, whale("b", market="KXB-1-A"), "unknown", None)
        j.record_fill("f-9", {"order_id": "o-1"})
        first = j.load()
        second = j.load()
    assert first == second and first.state_hash == second.state_hash
    with Journal(tmp_path) as j:
        third = j.load()
        assert third.state_hash == first.state_hash
        j.record_fill("f-10", {"order_id": "o-1"})
        assert j.load().state_hash != first.state_hash


def test_appends_continue_the_sequence_after_reopen(tmp_path):
    with Journal(tmp_path) as j:
        follow(j, whale("a"))
    with Journal(tmp_path) as j:
        assert j.record_fill("f-1", {}) and j.load().last_seq == 5


def _tamper(tmp_path, sql, params=()):
    conn = sqlite3.connect(tmp_path / JOURNAL_FILE)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def test_corrupt_middle_record_is_refused_with_its_location(tmp_path):
    with Journal(tmp_path) as j:
        follow(j, whale())
    _tamper(tmp_path, "UPDATE decisions SET body = replace(body, 'test follow', 'test forged') WHERE seq = 2")
    with Journal(tmp_path) as j, pytest.raises(JournalCorrupt) as err:
        j.load()
    assert (err.value.table, err.value.seq) == ("decisions", 2)
    assert "checksum" in str(err.value)


def test_seq_gap_is_refused(tmp_path):
    with Journal(tmp_path) as j:
        follow(j, whale())
    _tamper(tmp_path, "DELETE FROM decisions WHERE seq = 2")
    with Journal(tmp_path) as j, pytest.raises(JournalCorrupt) as err:
        j.load()
    assert (err.value.table, err.value.seq) == ("order_intents", 3)
    assert "gap" in str(err.value)


def test_unreadable_body_with_a_matching_checksum_is_refused(tmp_path):
    from actors.journal import _checksum

    with Journal(tmp_path) as j:
        follow(j, whale())
    _tamper(tmp_path, "UPDATE order_intents SET body = ?, sum = ? WHERE seq = 3", ("{not json", _checksum(3, "order_intents", "{not json")))
    with Journal(tmp_path) as j, pytest.raises(JournalCorrupt, match="order_intents seq 3: unreadable"):
        j.load()


def test_garbage_file_is_refused(tmp_path):
    (tmp_path / JOURNAL_FILE).write_bytes(b"this is not a database" * 200)
    with pytest.raises(JournalCorrupt) as refused:
        Journal(tmp_path)
    assert refused.value.permanent  # a restart cannot fix the file: the supervisor goes to ERROR at once (D3)


def test_torn_tail_loses_only_the_unfinished_transaction(tmp_path):
    """A crash mid-write leaves a partial WAL frame at the end: SQLite drops that transaction whole,
    the earlier records replay and the sequence stays contiguous."""
    j = Journal(tmp_path)
    follow(j, whale("a", market="KXA-1-A"))
    j.record_fill("f-1", {"pad": "x" * 3000})  # the last transaction, spanning a frame
    crash = tmp_path / "crash"
    crash.mkdir()
    shutil.copy(tmp_path / JOURNAL_FILE, crash / JOURNAL_FILE)
    wal = (tmp_path / (JOURNAL_FILE + "-wal")).read_bytes()
    (crash / (JOURNAL_FILE + "-wal")).write_bytes(wal[:-100])  # torn mid-frame
    j.close()
    with Journal(crash) as recovered:
        view = recovered.load()
    assert view.last_seq == 4 and view.fill_ids == frozenset()
    assert view.known_orders  # the accepted order before the torn write survived
    assert view.torn_tail_bytes > 3000 - 100  # D2: reported, not silent (the fill's frames, minus the cut)


def test_wal_tail_measure(tmp_path):
    """D2: what wal_uncommitted_tail counts — nothing for a clean WAL, the frames after the last commit."""
    assert wal_uncommitted_tail(tmp_path / "absent-wal") == 0
    j = Journal(tmp_path)
    try:
        follow(j, whale("a", market="KXA-1-A"))
        wal_path = tmp_path / (JOURNAL_FILE + "-wal")
        wal = wal_path.read_bytes()
        assert wal_uncommitted_tail(wal_path) == 0  # every frame so far belongs to a committed transaction
        page = int.from_bytes(wal[8:12], "big")
        frame = 24 + page
        last = len(wal) - frame  # the last frame (a commit frame): turn it into a non-commit frame
        uncommitted = wal[:last + 4] + b"\0\0\0\0" + wal[last + 8:]
        cut = tmp_path / "cut-wal"
        cut.write_bytes(uncommitted)
        assert wal_uncommitted_tail(cut) >= frame
        cut.write_bytes(wal + b"\x00" * 10)  # a few bytes of a next frame: too short to be ours, still a tail
        assert wal_uncommitted_tail(cut) == 10
        cut.write_bytes(wal[:20])
        assert wal_uncommitted_tail(cut) == 0  # not even a header: nothing to say
    finally:
        j.close()


def _fill_the_disk(j: Journal) -> None:
    pages = j._conn.execute("PRAGMA page_count").fetchone()[0]
    j._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full


def test_write_failure_raises_and_stops_the_journal(tmp_path):
    j = Journal(tmp_path)
    try:
        follow(j, whale())
        _fill_the_disk(j)
        with pytest.raises(JournalError, match="write failed"):
            j.record_fill("f-big", {"pad": "x" * 20_000})
        assert j.failed
        with pytest.raises(JournalError):  # and stays failed: the caller must stop trading
            j.record_fill("f-small", {})
    finally:
        j.close()


def test_a_second_writer_is_refused(tmp_path):
    with Journal(tmp_path) as a:
        with pytest.raises(JournalError, match="another writer"):
            Journal(tmp_path)
        a.record_fill("f-1", {})
    with Journal(tmp_path) as b:  # closed: the next writer may open it
        assert b.load().fill_ids == {"f-1"}
    assert stat.S_IMODE((tmp_path / (JOURNAL_FILE + ".lock")).stat().st_mode) == 0o600


def test_unwritable_location_raises(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(JournalError):
        Journal(not_a_dir)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_dir_raises(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(JournalError):
            Journal(ro)
    finally:
        ro.chmod(0o700)


# --- batches: one transaction per evaluation ------------------------------------------------


def _committed(tmp_path, table):
    """What an independent reader (another connection) sees: only committed records."""
    other = sqlite3.connect(tmp_path / JOURNAL_FILE)
    try:
        return [r[0] for r in other.execute(f"SELECT seq FROM {table} ORDER BY seq")]
    finally:
        other.close()


def test_a_batch_is_one_transaction_committed_at_its_end(tmp_path):
    w1, w2 = whale("a"), whale("b", market="KXB-26-T1")
    with Journal(tmp_path) as j:
        with j.batch():
            assert j.record_whale_seen(w1, T0) == 1
            j.record_whale_seen(w2, T0)
            j.record_decision(decision(w1, "skipped_age"))
            assert _committed(tmp_path, "whales_seen") == []  # nothing durable before the end
        assert _committed(tmp_path, "whales_seen") == [1, 2] and _committed(tmp_path, "decisions") == [3]
        assert j.load().last_seq == 3 and w1.whale_id in j.load().evaluated_whale_ids


def test_an_error_in_a_batch_rolls_it_back_and_the_journal_goes_on(tmp_path):
    w = whale()
    with Journal(tmp_path) as j:
        j.record_fill("f-0", {})
        with pytest.raises(RuntimeError), j.batch():
            j.record_whale_seen(w, T0)
            j.record_decision(decision(w, "skipped_age"))
            raise RuntimeError("the caller failed mid-evaluation")
        assert j.failed is None and j.load().last_seq == 1
        with j.batch():
            assert j.record_whale_seen(w, T0) == 2  # no gap: the rolled-back seqs are reused
        assert j.load().last_seq == 2


def test_record_intent_in_a_batch_is_durable_when_it_returns(tmp_path):
    w = whale()
    p = plan_for(w)
    with Journal(tmp_path) as j:
        with pytest.raises(RuntimeError), j.batch():
            j.record_whale_seen(w, T0)
            j.record_decision(decision(w, plan=p))
            j.record_intent(p, T0 + 2)
            # The order may be sent now: seen, decision and intent are on disk.
            assert (_committed(tmp_path, "whales_seen"), _committed(tmp_path, "decisions"),
                    _committed(tmp_path, "order_intents")) == ([1], [2], [3])
            j.record_fill("f-1", {})
            raise RuntimeError("crash after the send")
        view = j.load()
        assert view.last_seq == 3 and [x.client_order_id for x in view.pending_intents] == [p.client_order_id]


def test_a_uniqueness_refusal_inside_a_batch_keeps_the_batch(tmp_path):
    w = whale()
    with Journal(tmp_path) as j:
        j.record_fill("f-1", {})
        with j.batch():
            j.record_whale_seen(w, T0)
            assert not j.record_fill("f-1", {})  # a duplicate fill: refused, nothing else undone
            j.record_decision(decision(w, "skipped_age"))
        assert j.load().last_seq == 3 and _committed(tmp_path, "decisions") == [3]


def test_a_write_failure_in_a_batch_fails_the_journal(tmp_path):
    j = Journal(tmp_path)
    try:
        follow(j, whale())
        _fill_the_disk(j)
        with pytest.raises(JournalError, match="write failed"), j.batch():
            j.record_fill("f-big", {"pad": "x" * 20_000})
        assert j.failed
        with pytest.raises(JournalError), j.batch():
            pass
    finally:
        j.close()


def test_the_recovery_view_lists_evaluated_whales_with_their_times(tmp_path):
    w1, w2 = whale("a", ts=T0), whale("b", market="KXB-26-T1", ts=T0 + 7)
    with Journal(tmp_path) as j:
        follow(j, w1)
        j.record_decision(decision(w2, "rate_limited", final=False))
        j.record_decision(decision(w2, "skipped_age"))
        lone = OrderPlan(client_order_id="tv3-lone", whale_id="w-lone", market="KXC-1-A", outcome="yes", side="bid",
                         price=5000, count=COUNT_ONE)
        j.record_intent(lone, T0 + 99)  # an intent without its decision (an older journal): its own time
        view = j.load()
    assert [(e.whale_id, e.trade_ids, e.sweep, e.ts_ms) for e in view.evaluated] == [
        (w1.whale_id, ("a",), (w1.market, "yes", T0), T0),
        (w2.whale_id, ("b",), (w2.market, "yes", T0 + 7), T0 + 7),
        ("w-lone", (), None, T0 + 99),
    ]


def test_load_returns_the_paper_fills_in_journal_order(tmp_path):
    def fill(n, source="paper"):
        return {"order_id": "paper-1", "client_order_id": "c-1", "market": "KXA-1-A", "outcome": "yes",
                "yes_price": 5000 + n, "count": 100, "fee": 10, "ts_ms": T0 + n, "source": source}

    with Journal(tmp_path) as j:
        assert j.load().paper_fills == ()
        j.record_fill("pf-b", fill(1))
        follow(j, whale("a", market="KXA-1-A"))
        j.record_fill("f-ws", fill(2, source="ws"))  # an exchange fill: not part of the paper account
        j.record_fill("pf-a", fill(3))
        assert not j.record_fill("pf-b", fill(9))  # a fill id journaled before: no second copy
        with_paper = j.load()
    assert [f["fill_id"] for f in with_paper.paper_fills] == ["pf-b", "pf-a"]  # seq order, not id order
    assert with_paper.paper_fills[0] == {**fill(1), "fill_id": "pf-b"}
    assert with_paper.fill_ids == {"pf-b", "f-ws", "pf-a"}
    with Journal(tmp_path) as j:
        assert j.load() == with_paper  # replayed the same after a reopen
