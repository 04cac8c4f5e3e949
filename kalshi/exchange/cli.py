"""``python main.py exchange ...``: run the local Kalshi-compatible exchange in the foreground.

Prints one line with the REST base URL and the WebSocket URL once listening, then serves until
SIGINT/SIGTERM, which stop it cleanly (state saved) with exit status 0. Binds 127.0.0.1 unless told.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from kalshi.exchange.ratelimit import TIERS
from kalshi.exchange.server import LocalExchange
from kalshi.units import UnitError, parse_money

__all__ = ["main", "build_parser"]

log = logging.getLogger("kalshi.exchange.cli")


def _api_key(text: str) -> tuple[str, bytes]:
    key_id, sep, path = text.partition("=")
    if not sep or not key_id or not path:
        raise argparse.ArgumentTypeError("expected KEY_ID=PUBLIC_KEY_PEM_FILE")
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read public key file {path!r}: {exc.strerror}") from None
    if b"PRIVATE KEY" in pem:
        raise argparse.ArgumentTypeError(f"{path!r} holds a private key; give the exchange the PUBLIC key")
    return key_id, pem


def _dollars(text: str) -> int:
    try:
        value = parse_money(text, "start-balance")
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("port must be an integer") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("port must be in 0..65535")
    return port


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def build_parser(prog: str = "main.py exchange") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run the local Kalshi-compatible exchange.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8765, help="port (0 = pick a free one; default 8765)")
    p.add_argument("--seed", type=int, default=1, help="RNG seed (ids, markets, flow)")
    p.add_argument("--markets", type=_positive, default=8, help="number of simultaneously open markets")
    p.add_argument("--state", metavar="FILE", help="load state from FILE if present; save on stop and periodically")
    p.add_argument("--api-key", dest="api_keys", action="append", type=_api_key, default=[],
                   metavar="KEY_ID=PUBLIC_KEY_PEM_FILE", help="register an API key (repeatable)")
    p.add_argument("--start-balance", type=_dollars, default=10_000 * 10_000, metavar="DOLLARS",
                   help="cash of each new account in dollars (default 10000)")
    p.add_argument("--flow", choices=("calm", "firehose", "off"), default="calm", help="synthetic order flow")
    p.add_argument("--no-rate-limits", dest="rate_limits", action="store_false", help="disable the token buckets")
    p.add_argument("--tier", choices=sorted(TIERS), default="basic", help="rate-limit tier (default basic)")
    p.add_argument("--ws-max-markets", type=_positive, default=None, metavar="N",
                   help="markets per WS subscription before error 26 (default: no limit)")
    p.add_argument("--ws-commands-per-s", type=_positive, default=None, metavar="N",
                   help="WS commands per second per connection before error 27 (default: no limit)")
    p.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ex = LocalExchange(
            host=args.host, port=args.port, seed=args.seed, markets=args.markets, state_file=args.state,
            api_keys=dict(args.api_keys), start_balance=args.start_balance, flow=args.flow,
            rate_limits=args.rate_limits, tier=args.tier, ws_max_markets_per_sub=args.ws_max_markets,
            ws_commands_per_s=args.ws_commands_per_s,
        )
        try:
            ex.start()
        except (OSError, ValueError) as exc:
            print(f"exchange: cannot start: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            print(f"local Kalshi exchange: REST {ex.rest_url} WS {ex.ws_url}", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            ex.stop()
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
