"""The local Kalshi-compatible exchange: engine (Kalshi semantics, no I/O) + server (transport).

``LocalExchange`` starts it in-process for tests; ``python main.py exchange`` (cli.py) runs it standalone.
The engine module is imported only when an exchange starts, so importing this package stays cheap.
"""

from __future__ import annotations

from kalshi.exchange.faults import FaultInjector
from kalshi.exchange.ratelimit import TIERS, RateLimiter
from kalshi.exchange.server import LocalExchange, user_id_for_key

__all__ = ["LocalExchange", "FaultInjector", "RateLimiter", "TIERS", "user_id_for_key"]
