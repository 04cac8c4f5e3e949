"""Trader V3 entry point: wiring only (configuration, logging, signals, start, wait, exit code)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "Trader V3 — follow-the-whale paper trading for Kalshi.\n"
        "The actor system is not wired into main.py yet; see README.md for what exists."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
