"""Immutable messages exchanged by the actors, one module per domain.

Every message is a frozen, slotted, keyword-only dataclass deriving from ``Message`` with fields of
immutable types only (str, int, bool, Enum, tuple, frozenset, None, nested messages, and the frozen
wire structs of ``kalshi.wire``). Events are named in the past tense, commands in the imperative.
Money, prices and counts are integers in the units of ``kalshi.units``.
"""

from .base import Message, message

__all__ = ["Message", "message"]
