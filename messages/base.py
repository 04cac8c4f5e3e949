"""The ``Message`` base class and the ``message`` decorator every message class uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Base of every actor message. Carries no fields."""


def message(cls: type[T]) -> type[T]:
    """Declare a message class: frozen, slotted, keyword-only."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)
