"""Kalshi's token-bucket rate limits for the local exchange (protocol §2.14, since 2026-04-23).

Each user has a read bucket (GETs) and a write bucket (orders, amends, cancels, order groups).
Buckets refill continuously at the tier's per-second budget; the read bucket holds one second of
budget, the write bucket two seconds (one second on Basic). A request costs the tokens the engine
names (``Engine.request_cost``: 10 by default, 2 for a single-order GET or a V2 cancel, ...).
Over the limit Kalshi answers 429 ``{"error":"too many requests"}`` with no Retry-After and no
X-RateLimit-* headers; the server does the same.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TIERS", "TierLimits", "TokenBucket", "RateLimiter", "TOO_MANY_REQUESTS_BODY"]

TOO_MANY_REQUESTS_BODY = {"error": "too many requests"}


@dataclass(frozen=True, slots=True)
class TierLimits:
    read_rate: int  # tokens per second
    write_rate: int
    read_capacity: int  # tokens the bucket holds when full
    write_capacity: int


def _tier(read: int, write: int, write_seconds: int = 2) -> TierLimits:
    return TierLimits(read, write, read, write * write_seconds)


# Per-second budgets from Kalshi's tier table (Expert and Prestige added by July 2026).
TIERS: dict[str, TierLimits] = {
    "basic": _tier(200, 100, write_seconds=1),
    "advanced": _tier(300, 300),
    "expert": _tier(600, 600),
    "premier": _tier(1000, 1000),
    "paragon": _tier(2000, 2000),
    "prime": _tier(4000, 4000),
    "prestige": _tier(6000, 8000),
}


class TokenBucket:
    """A continuously refilled bucket. Time is passed in (seconds, monotonic) so tests can drive it."""

    __slots__ = ("rate", "capacity", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("token bucket rate and capacity must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.updated = now

    def try_take(self, cost: float, now: float) -> bool:
        """Take ``cost`` tokens if the bucket holds them; a refused request takes nothing."""
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now
        if cost <= self.tokens:
            self.tokens -= cost
            return True
        return False


class RateLimiter:
    """Read and write buckets per user for one tier; ``enabled=False`` lets everything through."""

    def __init__(self, tier: str = "basic", enabled: bool = True) -> None:
        if tier not in TIERS:
            raise ValueError(f"unknown rate-limit tier {tier!r}; known: {', '.join(TIERS)}")
        self.tier = tier
        self.limits = TIERS[tier]
        self.enabled = enabled
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self.refused = 0  # requests answered 429 by the buckets (not by an injected 429 flood)

    def allow(self, user: str, bucket: str, cost: int, now: float) -> bool:
        """True if ``user`` may spend ``cost`` tokens from its ``bucket`` ("read" or "write") now."""
        if not self.enabled:
            return True
        if bucket not in ("read", "write"):
            raise ValueError(f"unknown rate-limit bucket {bucket!r}")
        key = (user, bucket)
        b = self._buckets.get(key)
        if b is None:
            lim = self.limits
            if bucket == "read":
                b = TokenBucket(lim.read_rate, lim.read_capacity, now)
            else:
                b = TokenBucket(lim.write_rate, lim.write_capacity, now)
            self._buckets[key] = b
        if b.try_take(cost, now):
            return True
        self.refused += 1
        return False

    def limits_body(self) -> dict:
        """The body of ``GET /account/limits`` for this tier."""
        lim = self.limits
        return {
            "usage_tier": self.tier,
            "read": {"refill_rate": lim.read_rate, "bucket_capacity": lim.read_capacity},
            "write": {"refill_rate": lim.write_rate, "bucket_capacity": lim.write_capacity},
            "grants": [],
        }
