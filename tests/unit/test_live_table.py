"""The live table and the plain lines, rendered from status dicts with rich's recording console."""

from __future__ import annotations

import re

from rich.console import Console

from actors.live_table import PlainReporter, compute_pnl, feed_rates, format_duration, render_status
from actors.system import supervisor_status


def full_status() -> dict:
    """A status snapshot with every section filled, in the broadcaster's JSON-ready shape."""
    return {
        "state": "READY",
        "state_reason": "requirements met",
        "degraded": True,
        "trading_gate": {"open": True, "reason": "requirements met"},
        "uptime_s": 3725.4,
        "environment": "local",
        "execution": "exchange",
        "strategy": "whale_follower",
        "actors": {
            "state_keeper": {"alive": True, "generation": 1, "restarts": 0, "mailbox_depth": 3, "last_error": None},
            "whale_tracker": {"alive": False, "generation": 3, "restarts": 2, "mailbox_depth": 0,
                              "last_error": "handler: RuntimeError: boom"},
        },
        "feeds": {
            "orderbook_feed": {"connected": True, "messages": 12_345, "gaps": 2, "reconnects": 1,
                               "last_message_age_ms": 250},
            "trades_feed": {"connected": False, "messages": 77, "gaps": 0, "reconnects": 4,
                            "last_message_age_ms": 90_000, "messages_per_s": 12.0},
        },
        "markets": ["KXSIMA-E00001-T44", "KXSIMM-E00002-T88"],
        "books": [
            {"market_ticker": "KXSIMA-E00001-T44", "valid": True, "best_yes_bid": "0.4400", "best_yes_ask": "0.4600"},
            {"market_ticker": "KXSIMM-E00002-T88", "valid": False, "best_yes_bid": None, "best_yes_ask": None},
        ],
        "whales": {
            "trades_seen": 1500, "trades_discarded": 1450, "queue_size": 1,
            "queue": [{"whale_id": "W1", "market_ticker": "KXSIMA-E00001-T44", "side": "no", "price_dollars": "0.5600",
                       "count": "300.00", "whale_size_dollars": "300.0000", "age_seconds": 45.2}],
        },
        "decisions": {"follow": 2, "skipped_age": 5},
        "recent_decisions": [  # the broadcaster's order: newest first
            {"action": "follow", "market_ticker": "KXSIMA-E00001-T44", "outcome": "no", "whale_id": "W1",
             "reason": "following at 0.5700", "decided_ms": 2000},
            {"action": "skipped_age", "market_ticker": "KXSIMM-E00002-T88", "outcome": "yes", "whale_id": "W0",
             "reason": "whale is 130s old", "decided_ms": 1000},
        ],
        "orders": {"submitted": 2, "accepted": 2, "filled": 1, "rejected": 0, "unknown": 0},
        "balance": "9987.6500",
        "portfolio_value": "12.3400",
        "positions": [
            # 5 NO contracts bought for $2.85; NO is bid at 1 - 0.46 = 0.54 → worth $2.70
            {"market_ticker": "KXSIMA-E00001-T44", "position": "-5.00", "side": "no", "cost_dollars": "2.8500",
             "realized_pnl_dollars": "-1.0000", "fees_paid_dollars": "0.1400", "source": "rest"},
            # 3 YES contracts, no valid book: not priced
            {"market_ticker": "KXSIMM-E00002-T88", "position": "3.00", "side": "yes", "cost_dollars": "0.9000",
             "realized_pnl_dollars": "0.0000", "fees_paid_dollars": "0.0600", "source": "rest"},
        ],
        "open_orders": [{"order_id": "o1", "market_ticker": "KXSIMM-E00002-T88", "status": "resting",
                         "book_side": "ask", "outcome_side": "no", "yes_price_dollars": "0.6900",
                         "fill_count": "0.00", "remaining_count": "5.00", "initial_count": "5.00"}],
    }


def render(status: dict, **kwargs) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(render_status(status, **kwargs))
    return console.export_text()


def test_every_section_is_rendered():
    text = render(full_status(), rates={"orderbook_feed": 321.4})
    # header
    assert "READY" in text and "DEGRADED" in text and "gate open" in text and "uptime 1:02:05" in text
    assert "strategy whale_follower" in text and "requirements met" in text
    # actors
    assert "state_keeper" in text and "whale_tracker" in text and "handler: RuntimeError: boom" in text
    assert re.search(r"whale_tracker\s+no\s+3\s+2\s+0\s+handler: RuntimeError: boom", text)
    # feeds: rate given by the caller, by the feed, the age of the last message
    assert re.search(r"orderbook_feed\s+yes\s+321\s+12345\s+2\s+1\s+0\.2s", text)
    assert re.search(r"trades_feed\s+no\s+12\s+77\s+0\s+4\s+1:30", text)
    # markets and books
    assert "Markets: 2 tracked, 1 books valid" in text and "0.4400" in text
    # whales
    assert "Whale queue: 1 queued, 1500 trades seen, 1450 discarded" in text
    assert "$0.5600" in text and "$300.0000" in text and "45s" in text
    # decisions: counts and the latest, newest first
    assert "Decisions: follow 2, skipped_age 5" in text
    assert text.index("following at 0.5700") < text.index("whale is 130s old")
    # account: realized = -1.00 - (0.14 + 0.06) fees; unrealized = 2.70 - 2.85 on the priced position
    assert "$9987.6500" in text and "$12.3400" in text
    assert re.search(r"realized P&L after fees\s+-\$1\.2000", text)
    assert re.search(r"unrealized P&L\s+-\$0\.1500 \(1 position\(s\) without a price\)", text)
    assert re.search(r"fees paid\s+\$0\.2000", text)
    assert "submitted 2 accepted 2 filled 1 rejected 0 unknown 0" in text
    assert re.search(r"KXSIMA-E00001-T44\s+-5\.00\s+\$2\.8500\s+-\$1\.0000\s+\$0\.1400", text)
    # the open NO order shows what a NO contract costs: 1 - 0.69
    assert re.search(r"KXSIMM-E00002-T88\s+no\s+\$0\.3100\s+5\.00\s+resting", text)


def test_pnl_is_exact_and_explicit_pnl_wins():
    status = full_status()
    pnl = compute_pnl(status)
    assert pnl == {"realized": -12_000, "unrealized": -1_500, "fees": 2_000, "unpriced": 1, "bad": 0}
    status["books"][1] = {"market_ticker": "KXSIMM-E00002-T88", "valid": True, "best_yes_bid": "0.3300",
                          "best_yes_ask": "0.3500"}
    assert compute_pnl(status)["unrealized"] == -1_500 + (9_900 - 9_000)  # 3 × 0.33 − 0.90
    status["positions"][0]["position"] = "1e3"  # garbage is counted, never guessed
    assert compute_pnl(status)["bad"] == 1
    assert compute_pnl({"pnl": {"realized": "1.0000"}, "positions": []}) == {"realized": "1.0000"}
    assert compute_pnl({})["realized"] is None


def test_empty_status_renders_placeholders():
    text = render({})
    for title in ("Actors", "Feeds", "Markets: 0 tracked", "Whale queue", "Decisions: none yet", "Positions",
                  "Open orders", "balance"):
        assert title in text
    assert "—" in text


def test_supervisor_fallback_is_shown():
    stats = {"state": "ERROR", "state_reason": "restart intensity exceeded", "degraded": True, "gate_open": False,
             "children": {"broadcaster": {"status": "waiting_restart", "generation": 2, "restarts": 1,
                                          "last_failure": "handler: boom", "alive": False}}}
    text = render(supervisor_status(stats))
    assert "ERROR" in text and "gate closed" in text and "restart intensity exceeded" in text
    assert "broadcaster not answering" in text and "handler: boom" in text


def test_hostile_and_wrong_typed_values_do_not_break_the_table():
    status = full_status()
    status["actors"]["evil"] = {"alive": True, "last_error": "\x1b[2J\x07 clear screen" + "x" * 500}
    status["balance"] = 12.5  # a float is never shown as money
    status["feeds"] = ["not", "a", "mapping"]
    status["recent_decisions"] = "nonsense"
    text = render(status)
    assert "\x1b" not in text and "\x07" not in text
    assert "balance" in text and "?" in text


def test_int_money_is_in_ten_thousandths_of_a_dollar():
    status = {"balance": 123_456_700}
    assert "$12345.6700" in render(status)


def test_feed_rates_from_two_snapshots():
    before = {"feeds": {"a": {"messages": 100}, "b": {"messages": 50}}}
    after = {"feeds": {"a": {"messages": 400}, "b": {"messages": 10}, "c": {"messages": 5}}}
    assert feed_rates(after, before, 2.0) == {"a": 150.0}  # b went backwards (restart): no rate
    assert feed_rates(after, None, 2.0) == {}
    assert format_duration(59) == "0:59" and format_duration(3600) == "1:00:00" and format_duration(None) == "—"


def test_plain_reporter_lines():
    reporter = PlainReporter(summary_every_s=5.0)
    status = full_status()
    first = reporter.lines(status, now_s=100.0)
    assert first[0].startswith("state READY degraded=yes gate=open")
    decisions = [line for line in first if line.startswith("decision ")]
    # oldest first, each once
    assert decisions[0].startswith("decision skipped_age KXSIMM-E00002-T88 yes whale=W0")
    assert decisions[1].startswith("decision follow KXSIMA-E00001-T44 no whale=W1: following at 0.5700")
    assert any(line.startswith("orders accepted=2 filled=1") for line in first)
    assert first[-1].startswith("summary state=READY uptime=1:02:05 feeds=1/2 books=2 whales_queued=1")
    # the account's figures, exact: positions and P&L after fees (one position has no usable book price)
    assert first[-1].endswith("balance=$9987.6500 positions=2 pnl realized=-$1.2000 unrealized=-$0.1500 (unpriced 1)")
    assert PlainReporter.summary({"state": "STARTUP"}).endswith("balance=— positions=0 pnl realized=— unrealized=—")

    # the same snapshot again: nothing new, and no summary before 5 s
    assert reporter.lines(status, now_s=101.0) == []

    status["recent_decisions"] = status["recent_decisions"] + [
        {"action": "failed", "market": "KXSIMA-E00001-T44", "whale_id": "W2", "reason": "rejected", "decided_ms": 3000}
    ]
    status["orders"] = {**status["orders"], "rejected": 1}
    status["state"] = "ACTING"
    lines = reporter.lines(status, now_s=106.0)
    assert lines[0].startswith("state ACTING")
    assert [line for line in lines if line.startswith("decision ")] == [
        "decision failed KXSIMA-E00001-T44 — whale=W2: rejected"
    ]
    assert any("rejected=1" in line for line in lines if line.startswith("orders "))
    assert lines[-1].startswith("summary state=ACTING")


def test_plain_reporter_is_quiet_about_all_zero_orders():
    reporter = PlainReporter()
    lines = reporter.lines({"state": "STARTUP", "orders": {"submitted": 0, "accepted": 0}}, now_s=0.0)
    assert not any(line.startswith("orders ") for line in lines)
