"""Fixtures for running the whale executor against the real LocalExchange (B3's integration tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.context import SystemContext
from actors.whale_executor import WhaleExecutor
from kalshi.auth import Credentials, generate_key_pair
from kalshi.exchange import LocalExchange
from kalshi.rest import KalshiRest
from kalshi.units import COUNT_ONE, MONEY_ONE
from messages.control import RequestStats, Tick, TradingClientReady, TradingGateChanged
from messages.state import AccountViewUpdated, BookViewsUpdated
from messages.whale import QueueStats, WhaleQueueUpdated
from tests.actors.helpers_whale import Recorders, account, book, settings
from tests.helpers import wait_for

KEY_ID = "b3-whale-test-key"
MM_USER = "flow-mm-b3"


@pytest.fixture(scope="session")
def b3_keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


def start_exchange(keys, **kw) -> LocalExchange:
    kw.setdefault("flow", "off")
    kw.setdefault("rate_limits", True)
    return LocalExchange(api_keys={KEY_ID: keys[1]}, **kw).start()


def credentials(keys) -> Credentials:
    return Credentials.from_pem_text(KEY_ID, keys[0])


def rest_for(ex: LocalExchange, keys, total_timeout: float = 3.0) -> KalshiRest:
    return KalshiRest(ex.rest_url, credentials(keys), total_timeout=total_timeout, read_retries=2, backoff_cap=0.5)


def seed_liquidity(ex: LocalExchange, ticker: str, yes_ask: int = 5500, contracts: int = 100) -> None:
    """A maker's NO bid at 1 − yes_ask (an ask on the YES book): buying YES up to ``yes_ask`` fills."""

    def place(e):
        e.ensure_flow_account(MM_USER, 10_000_000 * MONEY_ONE)
        e.place(MM_USER, ticker, False, yes_ask, contracts * COUNT_ONE)

    ex.call(place)


def our_orders(ex: LocalExchange) -> list:
    user = ex.user_id(KEY_ID)
    return ex.call(lambda e: [(o.order_id, o.cid, o.status, o.filled) for o in e.orders.values() if o.user == user])


def queue_update(*whales) -> WhaleQueueUpdated:
    stats = QueueStats(trades_seen=len(whales), trades_discarded=0, duplicates=0, discard_rate_bp=0,
                       queue_size=len(whales), window_minutes=5, min_size=100 * MONEY_ONE)
    return WhaleQueueUpdated(queue=tuple(whales), stats=stats, ts_ms=0)


class LiveRig:
    """A WhaleExecutor on the real venue path (ExchangeVenue over KalshiRest) with recording peers."""

    def __init__(self, ex: LocalExchange, keys, data_dir: Path, **flags) -> None:
        self.ex = ex
        self.keys = keys
        self.data_dir = data_dir
        self.flags = flags
        self.rec = Recorders()
        self.ref = None

    def start(self, wait_ready: bool = True, **opts):
        ctx = SystemContext(
            settings=settings(**self.flags),
            rest_url=self.ex.rest_url,
            ws_url=self.ex.ws_url,
            credentials=credentials(self.keys),
            data_dir=self.data_dir,
            market_tickers=(),
            execution="exchange",
            rest_factory=lambda: rest_for(self.ex, self.keys),
        )
        opts.setdefault("absent_grace_s", 0.3)
        opts.setdefault("resolve_backoff_s", 0.05)
        opts.setdefault("resolve_backoff_max_s", 1.0)
        self.ref = WhaleExecutor.start("whale_executor", 1, self.rec.refs["supervisor"], self.rec.peers("whale_executor"),
                                       {"context": ctx, **opts})
        if wait_ready:
            wait_for(lambda: self.rec.got("supervisor", TradingClientReady), 15, message="TradingClientReady")
        return self.ref

    def tick(self) -> None:
        self.ref.tell(Tick(now_mono_ns=0, now_wall_ms=0))

    def ticking(self, predicate, timeout: float = 15.0, message: str = "condition"):
        """Wait for ``predicate`` while ticking the executor (it retries and resolves on Ticks)."""

        def step():
            self.tick()
            return predicate()

        return wait_for(step, timeout, interval=0.02, message=message)

    def open_market(self, ticker: str, *whales, yes_ask: int = 5500, contracts: int = 100) -> None:
        self.ref.tell(TradingGateChanged(open=True, reason="test"))
        self.ref.tell(AccountViewUpdated(view=account()))
        self.ref.tell(BookViewsUpdated(views=(book(ticker, yes=(), no=((10_000 - yes_ask, contracts * COUNT_ONE),)),)))
        self.ref.tell(queue_update(*whales))

    def stats(self) -> dict:
        return self.ref.ask(RequestStats(), timeout=10)

    def stop(self) -> None:
        if self.ref is not None:
            self.ref.stop(timeout=15)
            self.ref = None

    def close(self) -> None:
        self.stop()
        self.rec.stop()


def tickers(ex: LocalExchange) -> tuple[str, ...]:
    return tuple(ex.call(lambda e: e.active_tickers()))


def private_key_file(tmp_path: Path, keys) -> Path:
    path = tmp_path / "key.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(keys[0])
    return path
