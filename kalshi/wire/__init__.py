"""Kalshi JSON on the wire → typed immutable values in integer units.

- ``frames``: WebSocket frames (the feed hot path).
- ``bodies``: REST response bodies.
Both raise ``WireError`` for anything that does not parse; callers count and report it.
"""

from .errors import WireError

__all__ = ["WireError"]
