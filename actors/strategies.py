"""Trading strategies of the whale executor: what to do with a whale queue and with a trading cycle.

A strategy is pure: it gets a frozen ``whale_rules.Context`` and times, and returns decisions; the executor
journals them and sends the order plans. Strategies (settings.strategy):

- ``hold``: every whale is evaluated once and recorded as ``observed`` (with what the follower would have
  done); nothing is ever sent.
- ``whale_follower``: the seed's follow-the-whale rules (``whale_rules.process_queue``).
- ``paper_test``: ignores whales; every ``cycle_seconds`` it buys 1 contract of YES, IOC at the best ask, on
  the most liquid watched market — a small periodic order that exercises the order path end to end.
- ``rl_model``: refused with a clear message (no trained model exists).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Iterable, Protocol

from kalshi.units import COUNT_ONE, PRICE_ONE, format_price
from messages.execution import OBSERVED
from messages.whale import FOLLOW, Decision, OrderPlan, Whale

from .whale_rules import Context, TokenBucket, client_order_id_for, decide, process_queue

__all__ = ["Strategy", "StrategyError", "Hold", "WhaleFollower", "PaperTest", "make_strategy", "STRATEGY_NAMES"]

STRATEGY_NAMES = ("hold", "whale_follower", "paper_test")


class StrategyError(ValueError):
    """An unknown or unavailable strategy."""


class Strategy(Protocol):
    name: str
    cycle_seconds: int | None  # None: no trading cycle
    follows_whales: bool  # does it need the books of queued whales' markets?

    def on_queue(
        self, queue: Iterable[Whale], ctx: Context, now_ms: int, bucket: TokenBucket, bucket_now_ms: int
    ) -> tuple[tuple[Decision, ...], Context]: ...

    def on_cycle(self, ctx: Context, now_ms: int, bucket: TokenBucket, bucket_now_ms: int) -> tuple[Decision, ...]: ...


class WhaleFollower:
    name = "whale_follower"
    cycle_seconds = None
    follows_whales = True

    def on_queue(self, queue, ctx, now_ms, bucket, bucket_now_ms):
        return process_queue(queue, ctx, now_ms, bucket, bucket_now_ms)

    def on_cycle(self, ctx, now_ms, bucket, bucket_now_ms):
        return ()


class Hold:
    """Observe only: one ``observed`` decision per whale saying what the follower would have done."""

    name = "hold"
    cycle_seconds = None
    follows_whales = True

    def on_queue(self, queue, ctx, now_ms, bucket, bucket_now_ms):
        decisions = []
        for whale in sorted(queue, key=lambda w: (-w.whale_size, w.ts_ms, w.whale_id)):
            # The gate and tokens are assumed open: the question is what the rules say of the whale itself.
            would = decide(whale, replace(ctx, gate_open=True, tokens_available=1, unknown_outcome_orders=0), now_ms)
            if would is None or (would.action != FOLLOW and not would.final):
                continue  # already observed, or a passing condition (no book yet): look again later
            what = "follow" if would.action == FOLLOW else would.action
            decisions.append(
                Decision(
                    action=OBSERVED,
                    reason=f"hold strategy: would {what}: {would.reason}",
                    whale_id=whale.whale_id,
                    market=whale.market,
                    final=True,
                    outcome=whale.side,
                    trade_ids=whale.trade_ids,
                    whale_ts_ms=whale.ts_ms,
                    decided_ms=now_ms,
                )
            )
            ctx = replace(
                ctx,
                evaluated_whale_ids=ctx.evaluated_whale_ids | {whale.whale_id},
                evaluated_trade_ids=ctx.evaluated_trade_ids | frozenset(whale.trade_ids),
                evaluated_sweeps=ctx.evaluated_sweeps | {whale.sweep_key},
            )
        return tuple(decisions), ctx

    def on_cycle(self, ctx, now_ms, bucket, bucket_now_ms):
        return ()


class PaperTest:
    """1 contract of YES, IOC at the best ask, on the most liquid valid watched book, every cycle."""

    name = "paper_test"
    follows_whales = False

    def __init__(self, cycle_seconds: int, strategy_version: str = "v1") -> None:
        if cycle_seconds <= 0:
            raise StrategyError("paper_test: cycle_seconds must be positive")
        self.cycle_seconds = cycle_seconds
        self.strategy_version = strategy_version

    def on_queue(self, queue, ctx, now_ms, bucket, bucket_now_ms):
        return (), ctx

    def on_cycle(self, ctx, now_ms, bucket, bucket_now_ms):
        if not ctx.gate_open or ctx.unknown_outcome_orders or ctx.kill_switch:
            return ()
        best = None
        for market, book in sorted(ctx.books.items()):
            if not book.valid or market in ctx.inflight_markets or market in ctx.resting_order_markets:
                continue
            ask = book.best_yes_ask()
            if ask is None:
                continue
            liquidity = book.total_size("yes") + book.total_size("no") if hasattr(book, "total_size") else ask[1]
            if best is None or liquidity > best[0]:
                best = (liquidity, market, ask[0])
        if best is None or not bucket.try_take(bucket_now_ms):
            return ()
        _, market, price = best
        if not 0 < price < PRICE_ONE:
            return ()
        cycle = now_ms // (self.cycle_seconds * 1000)
        # A pseudo whale id per (market, cycle): the journal's intent and dedup machinery apply unchanged.
        pseudo = "c-" + hashlib.sha256(f"{market}|{cycle}".encode()).hexdigest()[:16]
        plan = OrderPlan(
            client_order_id=client_order_id_for(pseudo, self.strategy_version),
            whale_id=pseudo,
            market=market,
            outcome="yes",
            side="bid",
            price=price,
            count=COUNT_ONE,
            time_in_force="immediate_or_cancel",
        )
        return (
            Decision(
                action=FOLLOW,
                reason=f"paper_test cycle {cycle}: buy 1 YES at the best ask {format_price(price)}",
                whale_id=pseudo,
                market=market,
                final=True,
                outcome="yes",
                side="bid",
                price=price,
                count=plan.count,
                client_order_id=plan.client_order_id,
                plan=plan,
                decided_ms=now_ms,
            ),
        )


def make_strategy(name: str, settings=None, strategy_version: str = "v1") -> Strategy:
    if name == "whale_follower":
        return WhaleFollower()
    if name == "hold":
        return Hold()
    if name == "paper_test":
        return PaperTest(getattr(settings, "cycle_seconds", 30) if settings is not None else 30, strategy_version)
    if name == "rl_model":
        raise StrategyError(
            "strategy rl_model needs a trained model and none exists yet; use hold, whale_follower or paper_test"
        )
    raise StrategyError(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
