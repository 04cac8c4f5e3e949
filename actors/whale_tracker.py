"""The whale tracker: public trades in, the ranked whale queue out (the seed's WhaleTracker).

``TradesPrinted`` batches (live or backfilled) go through ``whale_rules.WhaleQueue.add`` one trade at a time;
trade ids are deduplicated by the queue for as long as they are inside the window, so a backfill after a
reconnect never makes a second whale (F04); repeats of a qualifying whale's trades go to the executor as
one ``WhaleSightings`` per batch, to be journaled as duplicates. Bad trades (inconsistent prices, missing ids) are counted and
dropped. On any change the tracker tells ONE ``WhaleQueueUpdated`` per batch (conflated) to the whale
executor and the broadcaster. Ticks (``ticks = true`` in actor_config.toml) prune whales older than the
window and, at most every ``stats_interval_s``, send the queue again so the statistics stay current.
A final ``WhaleDecisionMade`` from the executor takes the whale out of the queue (the seed's "removal on
terminal decision"); later prints of its sweep do not bring it back.

Backpressure (F15): a ``WhaleQueueUpdated`` is a full snapshot of the queue, so for the executor the latest
one wins. When the executor's mailbox holds ``executor_backlog`` messages or more, the tracker keeps only the
newest update for it (each one replaced counts in ``queue_updates_conflated``) and sends it as soon as that
mailbox is below the bound again — checked on the next publish and on every Tick. The broadcaster gets every
update (it conflates on its own). ``WhaleSightings`` are never held or dropped; a held update goes out just
before them, so the executor journals a whale's first sighting before its repeats.
What this means: a whale that enters and leaves the queue while the executor stays backlogged is never seen
(nor journaled) by it. That happens only if the executor stays behind for as long as the whale takes to go:
pruned after ``whale_window_minutes`` (too old to follow anyway), evicted as the oldest of a full queue
(``whale_queue_size``), or its sweep moved out of the price band. ``executor_backlog`` = 0 sends every update.

Settings (actors/settings.py): whale_queue_size, whale_window_minutes, whale_min_size_cents,
price_band_min/max_cents, enable_whale_detection (off: trades are counted and ignored).
Config keys: ``stats_interval_s`` (1.0), ``executor_backlog`` (50 messages; 0 = off).
"""

from __future__ import annotations

import logging
from typing import Any

from kalshi.units import UnitError
from messages.control import Tick
from messages.execution import WhaleSightings
from messages.market import TradesPrinted
from messages.whale import WhaleDecisionMade, WhaleQueueUpdated

from ._util import config_int, config_seconds_ns
from .base import SupervisedActor, handles, mailbox_depth
from .context import context_of
from .whale_rules import PublicTrade, WhaleQueue

__all__ = ["WhaleTracker"]

log = logging.getLogger(__name__)

EXECUTOR = "whale_executor"
DEFAULT_EXECUTOR_BACKLOG = 50
MAX_SIGHTINGS = 100  # per batch: a backfill storm must not turn into a storm of journal writes


class WhaleTracker(SupervisedActor):
    def setup(self) -> None:
        ctx = context_of(self.config)
        self.ctx = ctx
        settings = ctx.settings
        self.enabled = bool(settings.enable_whale_detection)
        self.queue = WhaleQueue.from_settings(settings)
        self.stats_interval_ns = config_seconds_ns(self.config, "stats_interval_s", 1.0)
        self.executor_backlog = config_int(self.config, "executor_backlog", DEFAULT_EXECUTOR_BACKLOG, minimum=0)
        self._held: WhaleQueueUpdated | None = None  # the newest update the executor has not been told yet
        self.queue_updates_conflated = 0
        self.bad_trades = 0
        self.ignored_trades = 0
        self.updates_sent = 0
        self.sightings_dropped = 0
        self._stats_dirty = False
        self._last_sent_ns = 0

    @handles(TradesPrinted)
    def on_trades(self, msg: TradesPrinted) -> None:
        if not self.enabled:
            self.ignored_trades += len(msg.trades)
            return
        now_ms = self.ctx.wall_ms()
        before = len(self.queue)
        changed = False
        sightings = []
        for printed in msg.trades:
            try:
                trade = PublicTrade.from_printed(printed)
            except (UnitError, TypeError, AttributeError) as exc:
                self.bad_trades += 1
                if self.bad_trades & (self.bad_trades - 1) == 0:  # 1st, 2nd, 4th ...: rate-limited log
                    log.warning("%s: dropped a bad trade (%d so far): %s", self.name, self.bad_trades, exc)
                continue
            outcome, whale = self.queue.add(trade, now_ms)
            if outcome in ("new", "grown"):
                changed = True
            elif outcome == "duplicate" and whale is not None:
                if len(sightings) < MAX_SIGHTINGS:
                    sightings.append((whale, trade.trade_id))
                else:
                    self.sightings_dropped += 1
        if sightings:
            self._send_held()  # the queue the sightings refer to reaches the executor first
            self.peers.tell(EXECUTOR, WhaleSightings(sightings=tuple(sightings), ts_ms=now_ms))
        self._stats_dirty = True
        if changed or len(self.queue) != before:  # a sweep moved out of the band leaves the queue too
            self._publish(now_ms)

    @handles(WhaleDecisionMade)
    def on_decision(self, msg: WhaleDecisionMade) -> None:
        if msg.decision.final and self.queue.remove(msg.decision.whale_id):
            self._publish(self.ctx.wall_ms())

    @handles(Tick)
    def on_tick(self, msg: Tick) -> None:
        super().on_tick(msg)
        now_ms = self.ctx.wall_ms()
        removed = self.queue.prune(now_ms)
        if removed or (self._stats_dirty and self.ctx.mono_ns() - self._last_sent_ns >= self.stats_interval_ns):
            self._publish(now_ms)
        elif self._held is not None and not self._executor_backlogged():
            self._send_held()

    def _publish(self, now_ms: int) -> None:
        update = WhaleQueueUpdated(queue=self.queue.snapshot(), stats=self.queue.stats(), ts_ms=now_ms)
        self.peers.tell("broadcaster", update)
        if self._held is not None:
            self.queue_updates_conflated += 1  # replaced by this newer snapshot of the queue
        self._held = update
        if not self._executor_backlogged():
            self._send_held()
        self.updates_sent += 1
        self._stats_dirty = False
        self._last_sent_ns = self.ctx.mono_ns()

    def _executor_backlogged(self) -> bool:
        if not self.executor_backlog:
            return False
        ref = self.peers.get(EXECUTOR)
        return ref is not None and mailbox_depth(ref) >= self.executor_backlog

    def _send_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self.peers.tell(EXECUTOR, held)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        queue = getattr(self, "queue", None)
        if queue is not None:
            q = queue.stats()
            stats.update(
                trades_seen=q.trades_seen,
                duplicates=q.duplicates,
                queue_size=q.queue_size,
                discards=dict(queue.discards),
                tracked_trades=queue.tracked_trades,  # the queue's memory: trade ids kept for dedupe
                tracked_sweeps=queue.tracked_sweeps,
                bad_trades=self.bad_trades,
                updates_sent=self.updates_sent,
                queue_updates_conflated=self.queue_updates_conflated,
                queue_update_held=self._held is not None,
            )
        return stats
