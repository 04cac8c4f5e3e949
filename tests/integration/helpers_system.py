"""The whole actor system (System from actors/system.py, every real actor, in-process) against an in-process
LocalExchange, for the fault scenarios of reliability.md §7.2/§7.5 (tests/integration/test_system_faults.py).

``SystemRig`` owns one exchange (port 0 at first; ``restart_exchange`` brings a new one up on the same port)
and one System at a time on a fixed data dir. Whales are made deterministic by hand: the synthetic flow is
off and a second account (``WHALE_USER``, a flow account on the engine) takes liquidity with ``whale_trade``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import Counter
from pathlib import Path
from types import MappingProxyType
from typing import Any

from actors.config import load_config
from actors.context import SystemContext
from actors.settings import load_settings
from actors.system import System, build_factories
from kalshi.auth import Credentials, generate_key_pair
from kalshi.exchange import LocalExchange
from kalshi.rest import KalshiRest
from kalshi.units import COUNT_ONE, MONEY_ONE, PRICE_ONE
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
KEY_ID = "s1-system-key"  # our account
OTHER_KEY_ID = "s1-other-key"  # the counterparty (fills our resting orders over REST)
WHALE_USER = "s1-whale"  # a flow account on the engine: whale trades without REST or rate limits
MAKER_USER = "s1-maker"
NS = 1_000_000_000

# Short timeouts and back-offs so faults resolve within seconds; whales small enough to make by hand.
BASE_ENV = {
    "ENVIRONMENT": "local",
    "RL_MODE": "config",
    "V3_PORT": "0",
    "V3_LOG_LEVEL": "INFO",
    "V3_CYCLE_SECONDS": "1",
    "WHALE_MIN_SIZE_CENTS": "5000",  # $50
    "WHALE_MAX_AGE_SECONDS": "30",
}
WS_OPTIONS = MappingProxyType({"idle_timeout": 3.0, "connect_timeout": 2.0, "backoff_initial": 0.1,
                               "backoff_max": 0.5, "healthy_after_s": 1.0, "recv_poll_s": 0.05})


def key_pairs() -> dict[str, tuple[bytes, bytes]]:
    return {KEY_ID: generate_key_pair(), OTHER_KEY_ID: generate_key_pair()}


class SystemRig:
    def __init__(self, keys: dict[str, tuple[bytes, bytes]], tmp_path: Path, *, markets: int = 4,
                 env: dict[str, str] | None = None, supervisor: dict[str, Any] | None = None,
                 executor: dict[str, Any] | None = None, actor_settings: dict[str, dict[str, Any]] | None = None,
                 classes: dict[str, type] | None = None) -> None:
        self.keys = keys
        self.tmp = tmp_path
        self.data_dir = tmp_path / "data"
        self.state_file = tmp_path / "exchange-state.json"
        self.markets = markets
        self.env = {**BASE_ENV, **(env or {})}
        self.supervisor_overrides = dict(supervisor or {})
        self.executor_overrides = {"absent_grace_s": 0.3, "rate_backoff_s": 0.2, "rate_backoff_max_s": 2.0,
                                   **(executor or {})}
        # Per-actor settings on top of actor_config.toml's, and actor classes replacing the registry's.
        self.actor_settings = {name: dict(values) for name, values in (actor_settings or {}).items()}
        self.actor_settings["whale_executor"] = {**self.executor_overrides,
                                                 **self.actor_settings.get("whale_executor", {})}
        self.classes = dict(classes or {})
        self.ex: LocalExchange | None = None
        self.system: System | None = None
        self.tickers: tuple[str, ...] = ()
        self._rests: list[KalshiRest] = []

    # --- exchange ------------------------------------------------------------------------------------

    def start_exchange(self, *, port: int = 0, state: bool = True, liquidity: int = 1000, **kw: Any) -> LocalExchange:
        """Liquidity (YES offered at 0.50 on every market) is placed before anything subscribes, so the first
        snapshots carry it: a whale and the book it traded against never race each other."""
        kw.setdefault("flow", "off")
        kw.setdefault("rate_limits", True)
        kw.setdefault("ping_interval_s", 1.0)
        self.ex = LocalExchange(
            port=port, markets=self.markets, state_file=self.state_file if state else None,
            api_keys={k: pair[1] for k, pair in self.keys.items()}, **kw,
        ).start()
        if not self.tickers:
            self.tickers = tuple(self.ex.call(lambda e: e.active_tickers()))
        if liquidity:
            for ticker in self.tickers:
                self.liquidity(ticker, contracts=liquidity)
        return self.ex

    def stop_exchange(self) -> None:
        if self.ex is not None:
            self.ex.stop()

    def restart_exchange(self, *, with_state: bool) -> LocalExchange:
        """Stop the exchange (its state is saved) and start a new one on the same port, with or without it.
        An empty one gets fresh liquidity; one with state keeps the books it had."""
        assert self.ex is not None
        port = self.ex.port
        self.ex.stop()
        if not with_state:
            self.state_file.unlink(missing_ok=True)
        return self.start_exchange(port=port, state=with_state, liquidity=0 if with_state else 1000)

    # --- accounts and trades ---------------------------------------------------------------------------

    def credentials(self, key_id: str = KEY_ID) -> Credentials:
        return Credentials.from_pem_text(key_id, self.keys[key_id][0])

    def rest(self, key_id: str = KEY_ID) -> KalshiRest:
        assert self.ex is not None
        r = KalshiRest(self.ex.rest_url, self.credentials(key_id), total_timeout=3.0, read_retries=1, backoff_cap=0.3)
        self._rests.append(r)
        return r

    def user(self, key_id: str = KEY_ID) -> str:
        assert self.ex is not None
        return self.ex.user_id(key_id)

    def liquidity(self, ticker: str, yes_ask: int = 5000, contracts: int = 1000) -> None:
        """A maker's NO bid at 1 − yes_ask, i.e. YES offered at ``yes_ask``."""

        def place(e: Any) -> None:
            e.ensure_flow_account(MAKER_USER, 10_000_000 * MONEY_ONE)
            e.place(MAKER_USER, ticker, False, PRICE_ONE - yes_ask, contracts * COUNT_ONE)

        self.ex.call(place)  # type: ignore[union-attr]

    def whale_trade(self, ticker: str, yes_price: int = 5000, contracts: int = 200) -> None:
        """The whale buys YES at ``yes_price`` (taking the maker's offer): a public trade of contracts × price."""

        self.ex.call(lambda e: self.whale_trade_on(e, ticker, yes_price, contracts))  # type: ignore[union-attr]

    @staticmethod
    def whale_trade_on(e: Any, ticker: str, yes_price: int = 5000, contracts: int = 200) -> None:
        """``whale_trade`` for use inside ``ex.call`` (many trades in one call)."""
        e.ensure_flow_account(WHALE_USER, 10_000_000 * MONEY_ONE)
        e.place(WHALE_USER, ticker, True, yes_price, contracts * COUNT_ONE, "immediate_or_cancel")

    def exchange_429s(self) -> int:
        """Requests the exchange's own buckets answered 429 (an int read of the loop thread's counter)."""
        return int(self.ex.server.limiter.refused)  # type: ignore[union-attr]

    def wait_quiet(self, timeout: float = 20.0) -> None:
        """Until the executor has nothing in flight and its inbox is empty, twice in a row."""

        def quiet() -> bool:
            stats = self.executor()
            return not stats["open_orders"] and stats["mailbox_depth"] == 0 and not stats["queue"]

        wait_for(lambda: quiet() and quiet(), timeout, interval=0.1, message="executor quiet")

    def place_resting(self, ticker: str, client_order_id: str, price: int, count: int) -> str:
        """A GTC YES bid of ours placed over REST (not by the executor); returns its order id once the running
        system's state keeper knows it as resting."""
        with self.rest() as r:
            order_id = r.create_order(ticker, "bid", count, price, "good_till_canceled", client_order_id).order_id
        wait_for(lambda: self.actor_stats("state_keeper")["resting_orders"] >= 1, 10, message="resting order known")
        return order_id

    def our_orders(self) -> list[tuple[str, str | None, str, int]]:
        """(order_id, client_order_id, status, filled) of our account's orders at the exchange."""
        user = self.user()
        return self.ex.call(  # type: ignore[union-attr]
            lambda e: [(o.order_id, o.cid, o.status, o.filled) for o in e.orders.values() if o.user == user])

    def duplicate_client_ids(self) -> dict[str, int]:
        counts = Counter(cid for _, cid, _, _ in self.our_orders() if cid)
        return {cid: n for cid, n in counts.items() if n > 1}

    def position(self, ticker: str) -> int:
        with self.rest() as r:
            return sum(p.position for p in r.iter_positions() if p.ticker == ticker)

    # --- the system ----------------------------------------------------------------------------------

    def settings(self, **env: str) -> Any:
        merged = {**self.env, "V3_DATA_DIR": str(self.data_dir), "RL_MARKET_TICKERS": ",".join(self.tickers), **env}
        return load_settings(config_path=None, environ=merged, dotenv_path=None)

    def actor_config(self) -> Any:
        config = load_config(REPO / "actor_config.toml")
        sup = dataclasses.replace(config.supervisor, **{
            "backoff_initial_ns": NS // 20, "backoff_max_ns": NS // 2, "ping_interval_ns": NS,
            "error_cooldown_ns": 600 * NS, "tick_interval_ns": NS // 20, "report_interval_ns": NS // 5,
            **self.supervisor_overrides,
        })
        children = tuple(
            dataclasses.replace(spec, settings={**spec.settings, **self.actor_settings[spec.name]})
            if spec.name in self.actor_settings else spec
            for spec in config.children
        )
        return dataclasses.replace(config, supervisor=sup, children=children)

    def start_system(self, wait_ready: bool = True, **env: str) -> System:
        assert self.ex is not None and self.system is None
        ex = self.ex
        ctx = SystemContext(
            settings=self.settings(**env), rest_url=ex.rest_url, ws_url=ex.ws_url, credentials=self.credentials(),
            data_dir=self.data_dir, market_tickers=self.tickers, environment="local", execution="exchange",
            rest_factory=lambda: KalshiRest(ex.rest_url, self.credentials(), total_timeout=3.0, read_retries=1,
                                            backoff_cap=0.3),
            ws_options=WS_OPTIONS,
        )
        config = self.actor_config()
        self.system = System(config, build_factories(config, ctx, classes=self.classes or None),
                             data_dir=self.data_dir).start()
        if wait_ready:
            self.wait_state("READY", 30)
        return self.system

    def stop_system(self, reason: str = "test over") -> int | None:
        system, self.system = self.system, None
        return system.stop(reason, timeout_s=30) if system is not None else None

    def crash_system(self) -> None:
        """Stop like a crash as far as the exchange can tell: no ordered shutdown (which closes the gate and
        cancels resting orders). Ticks stop first, so the supervisor restarts nothing; the executor is stopped
        first (a feed going down closes the gate, and a live executor would then cancel), then every other child,
        then the supervisor finds them gone."""
        system, self.system = self.system, None
        assert system is not None and system.ticker is not None
        refs = dict(system.supervisor_stats(5.0)["refs"])
        system.ticker.stop()
        executor = refs.pop("whale_executor")
        for ref in [executor, *reversed(list(refs.values()))]:
            if ref is not None:
                ref.stop(block=True, timeout=15)
        system.stop("after the crash", timeout_s=30)

    def state(self) -> str | None:
        stats = self.system.supervisor_stats(2.0) if self.system else None
        return (stats or {}).get("state")

    def sup(self) -> dict[str, Any]:
        assert self.system is not None
        stats = self.system.supervisor_stats(5.0)
        assert stats is not None, "the supervisor did not answer"
        return stats

    def wait_state(self, state: str, timeout: float = 20.0) -> None:
        wait_for(lambda: self.state() == state, timeout, interval=0.05,
                 message=f"system state {state} (now {self.state()})")

    def actor_stats(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        from messages.control import RequestStats

        ref = self.sup()["refs"][name]
        return ref.ask(RequestStats(), timeout=timeout)

    def executor(self) -> dict[str, Any]:
        return self.actor_stats("whale_executor")

    def journal_rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.data_dir / 'journal.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def supervisor_log(self) -> str:
        return (self.data_dir / "supervisor.jsonl").read_text(encoding="utf-8")

    def close(self) -> None:
        try:
            self.stop_system()
        finally:
            for r in self._rests:
                r.close()
            self.stop_exchange()
