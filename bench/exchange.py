"""How many WebSocket messages per second the local exchange pushes to one client.

The client subscribes to orderbook_delta for every market plus trade, with the firehose flow running,
and counts frames for a few seconds (after a warm-up). Prints a table and one JSON line.

    /work/venv/bin/python bench/exchange.py [--seconds 5] [--markets 8] [--flow firehose] [--rate N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import websocket  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from kalshi.auth import Credentials  # noqa: E402
from kalshi.exchange import LocalExchange  # noqa: E402

KEY_ID = "bench0000-0000-4000-8000-000000000000"


def _serve(pipe, markets: int, flow: str, rate: int | None, public_pem: bytes) -> None:
    """Child process: run the exchange until told to stop, then report its counters."""
    flow_cfg: object = flow
    if rate is not None:  # raise the flow's rate to find the server's ceiling rather than the flow's
        from kalshi.exchange.flow import FlowConfig

        flow_cfg = dataclasses.replace(getattr(FlowConfig, flow)(), messages_per_s=rate)
    ex = LocalExchange(markets=markets, flow=flow_cfg, api_keys={KEY_ID: public_pem}, rate_limits=False,
                       ws_queue_limit=1_000_000).start()
    try:
        pipe.send((ex.ws_url, list(ex.call(lambda e: e.market_tickers()))))
        pipe.recv()  # "measure"
        cpu0, wall0 = time.process_time(), time.monotonic()
        pipe.recv()  # "stop"
        stats = ex.stats()
        stats["cpu_share"] = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    finally:
        ex.stop()
    pipe.send(stats)


def run(seconds: float, markets: int, flow: str, warmup: float, rate: int | None = None) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    creds = Credentials.from_pem_text(KEY_ID, private_pem.decode())
    # the exchange runs in its own process so the client does not share its GIL
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, markets, flow, rate, public_pem), name="bench-exchange")
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("exchange process did not start")
        ws_url, tickers = parent.recv()
        headers = creds.sign_headers("GET", "/trade-api/ws/v2")
        ws = websocket.create_connection(ws_url, header=[f"{k}: {v}" for k, v in headers.items()], timeout=10,
                                         skip_utf8_validation=True)
        try:
            ws.send(json.dumps({"id": 1, "cmd": "subscribe",
                                "params": {"channels": ["orderbook_delta", "trade"], "market_tickers": tickers}}))
            end_warm = time.monotonic() + warmup
            while time.monotonic() < end_warm:
                ws.recv()
            types: Counter[str] = Counter()
            last_seq: dict[int, int] = {}
            gaps = 0
            n = 0
            parent.send("measure")
            start = time.monotonic()
            end = start + seconds
            while True:
                msg = json.loads(ws.recv())
                n += 1
                types[msg.get("type", "?")] += 1
                sid, seq = msg.get("sid"), msg.get("seq")
                if seq is not None:
                    if sid in last_seq and seq != last_seq[sid] + 1:
                        gaps += 1
                    last_seq[sid] = seq
                if n % 256 == 0 and time.monotonic() >= end:
                    break
            elapsed = time.monotonic() - start
        finally:
            ws.close()
        parent.send("stop")
        stats = parent.recv() if parent.poll(30) else {}
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    return {
        "bench": "exchange_ws_fanout",
        "flow": flow,
        "flow_messages_per_s": rate,
        "markets": len(tickers),
        "seconds": round(elapsed, 3),
        "messages": n,
        "msgs_per_s": round(n / elapsed),
        "by_type": dict(types),
        "seq_gaps": gaps,
        "server_overflows": stats.get("overflows", 0),
        "engine_errors": stats.get("engine_errors", 0),
        "exchange_cpu_share": round(stats.get("cpu_share", 0.0), 3),
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--markets", type=int, default=8)
    p.add_argument("--flow", default="firehose", choices=("calm", "firehose"))
    p.add_argument("--rate", type=int, default=None,
                   help="override the flow's public messages/s (to find the ceiling)")
    args = p.parse_args(argv)
    r = run(args.seconds, args.markets, args.flow, args.warmup, args.rate)
    rows = [("flow", r["flow"]), ("flow msgs/s override", r["flow_messages_per_s"]), ("markets", r["markets"]), ("measured s", r["seconds"]), ("messages", r["messages"]),
            ("messages/s", r["msgs_per_s"]), ("seq gaps", r["seq_gaps"]), ("server overflows", r["server_overflows"]),
            ("engine errors", r["engine_errors"]), ("exchange CPU (core share)", r["exchange_cpu_share"])]
    rows += [(f"  {t}", c) for t, c in sorted(r["by_type"].items())]
    width = max(len(k) for k, _ in rows)
    print("local exchange: WS messages/s to one client (orderbook_delta all markets + trade)")
    for k, v in rows:
        print(f"{k:<{width}}  {'-' if v is None else v:>12}")
    print(json.dumps(r, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
