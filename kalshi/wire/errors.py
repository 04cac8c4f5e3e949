"""The one error type for undecodable wire data."""

from __future__ import annotations

from ..units import safe_repr


class WireError(ValueError):
    """A frame or body that is not valid Kalshi JSON of the expected shape.

    ``reason`` is a short, escaped description; ``sample`` a truncated, escaped prefix of the input,
    safe to log.
    """

    def __init__(self, reason: str, sample: object = None) -> None:
        self.reason = reason
        self.sample = None if sample is None else safe_repr(sample, 120)
        super().__init__(reason if sample is None else f"{reason}: {self.sample}")
