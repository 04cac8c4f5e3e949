"""Trader V3 entry point: configuration, logging, signals, start, wait, exit code. Wiring only.

    python main.py                        local mode: built-in exchange, no credentials, live table
    python main.py --env demo             Kalshi demo (KALSHI_API_KEY_ID + KALSHI_PRIVATE_KEY_PATH)
    python main.py exchange ...           run the local exchange alone
    python main.py postmortem [LOG]       timeline and summary of a run from the supervisor log
    python main.py cleanup [--all]        cancel our orphaned resting orders

Exit codes: 0 clean stop; 1 could not start; 2 configuration error or refused (live trading without
the opt-in); 70 the supervisor escalated (repeated ERROR); 71 the supervisor itself failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "actor_config.toml"

EXIT_OK = 0
EXIT_STARTUP = 1
EXIT_CONFIG = 2

log = logging.getLogger("trader")

_EPILOG = """\
modes:
  local (default)   the built-in Kalshi-compatible exchange runs as a child process on 127.0.0.1;
                    a key pair is generated once in <data-dir>/local-exchange/. Nothing to configure.
  --env demo        Kalshi's demo exchange; needs KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH
                    (or KALSHI_PRIVATE_KEY_CONTENT). Orders go to the demo exchange.
  --env prod        Kalshi production data with paper execution (fills walk the live book).
  --env prod --execution live
                    real orders. Needs V3_ALLOW_LIVE_TRADING=yes-real-money in the environment AND
                    a typed confirmation: the masked key id followed by " LIVE", at the prompt or
                    with --confirm-live "<masked id> LIVE".

subcommands:
  exchange ...      run the local exchange alone (python main.py exchange --help)
  postmortem [LOG]  readable timeline + summary of the supervisor log (default: latest in the data dir)
  cleanup [--all]   cancel our resting orders that are not in an order group (--all: every resting
                    order). Local mode starts the exchange on its saved state for this (or uses a
                    running one given by KALSHI_API_URL); demo/prod use your credentials.

settings come from actor_config.toml, then .env and the environment, then these flags;
python main.py --help-config lists every setting.
exit codes: 0 clean stop, 1 could not start, 2 configuration error or refused, 70 escalated, 71 supervisor failed.
"""


# --- argument parsing -----------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
    """Flags accepted before or after a subcommand (SUPPRESS keeps a subparser from resetting them)."""
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--config", metavar="PATH", default=d, help="actor_config.toml to use (default: the repo's)")
    p.add_argument("--data-dir", metavar="DIR", default=d, help="journal, logs, local exchange keys and state")
    p.add_argument("--env", metavar="ENV", default=d, help="local (default), demo or prod")
    p.add_argument("--log-level", metavar="LEVEL", default=d, help="DEBUG, INFO, WARNING or ERROR")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py", description="Trader V3: follow-the-whale trading on Kalshi, as a Pykka actor system.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p, suppress=False)
    p.add_argument("--strategy", metavar="NAME", help="hold, whale_follower (default) or paper_test")
    p.add_argument("--execution", metavar="KIND", help="exchange (local/demo), paper (prod default) or live")
    p.add_argument("--confirm-live", metavar="TEXT", help='non-interactive live confirmation: "<masked key id> LIVE"')
    p.add_argument("--run-for", type=_positive_float, metavar="SECONDS", help="stop cleanly after SECONDS")
    p.add_argument("--plain", action="store_true", help="plain log lines instead of the live table")
    p.add_argument("--port", metavar="PORT", help="status API port (0 = any free port; default 8005)")
    p.add_argument("--help-config", action="store_true", help="list every setting with its variable and default")
    sub = p.add_subparsers(dest="command", metavar="{exchange,postmortem,cleanup}")
    sub.add_parser("exchange", help="run the local exchange alone (see: main.py exchange --help)", add_help=False)
    pm = sub.add_parser("postmortem", help="timeline and summary from a supervisor log")
    pm.add_argument("log", nargs="?", help="supervisor log (default: the latest in the data dir)")
    _add_common(pm, suppress=True)
    cl = sub.add_parser("cleanup", help="cancel our orphaned resting orders")
    cl.add_argument("--all", action="store_true", help="cancel every resting order, not only orphaned ones")
    _add_common(cl, suppress=True)
    return p


# --- configuration and logging --------------------------------------------------------------------


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "data_dir": getattr(args, "data_dir", None),
        "environment": getattr(args, "env", None),
        "log_level": getattr(args, "log_level", None),
        "strategy": getattr(args, "strategy", None),
        "execution": getattr(args, "execution", None),
        "status_port": getattr(args, "port", None),
    }
    return {k: str(v) for k, v in pairs.items() if v is not None}


def _config_path(args: argparse.Namespace) -> Path:
    given = getattr(args, "config", None)
    return Path(given) if given else DEFAULT_CONFIG


def _load(args: argparse.Namespace):
    from actors.config import load_config
    from actors.settings import load_settings

    path = _config_path(args)
    settings = load_settings(config_path=path, flags=_flags(args))
    return settings, load_config(path)


def _setup_logging(level: str, log_file: Path | None) -> None:
    from kalshi.auth import SecretFilter

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # 0600 from the first byte
        os.chmod(log_file, 0o600)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))


def _url_refusal(settings: Any) -> str | None:
    """A configured URL carrying a user name, password or query (where tokens hide) is refused before anything
    logs the settings."""
    from urllib.parse import urlsplit

    for variable, url in (("KALSHI_API_URL", settings.api_url), ("KALSHI_WS_URL", settings.ws_url)):
        try:
            parts = urlsplit(url) if url else None
            userinfo = parts is not None and (parts.username is not None or parts.password is not None)
        except ValueError:
            return f"setting {variable}: not a valid URL"
        if userinfo:
            return f"setting {variable}: the URL must not contain credentials (user name or password)"
        if parts is not None and (parts.query or parts.fragment):
            return f"setting {variable}: the URL must not contain a query or fragment"
    return None


def _rest_client(rest_url: str, credentials: Any):
    """A KalshiRest, or None after saying why the URL is unusable (e.g. a query string; the text never
    shows the URL)."""
    from kalshi.rest import KalshiRest

    try:
        return KalshiRest(rest_url, credentials)
    except ValueError as exc:
        _error(f"configuration error: REST URL: {exc}")
        return None


def _error(text: str) -> None:
    print(f"main.py: {text}", file=sys.stderr, flush=True)


def _shown(value: object, limit: int = 100) -> str:
    """Exchange-supplied text for the terminal: control characters escaped, length bounded (S10)."""
    from kalshi.auth import sanitize_log_text

    return sanitize_log_text(str(value), limit)


# --- live-trading guard ---------------------------------------------------------------------------


def _live_refusal(args: argparse.Namespace, settings: Any | None) -> str | None:
    """Why live execution is refused before anything starts, or None when it is not requested/allowed."""
    from actors.settings import LIVE_OPT_IN_ENV, LIVE_OPT_IN_VALUE

    how = (
        f"live trading needs all of: --env prod, --execution live on the command line, "
        f"{LIVE_OPT_IN_ENV}={LIVE_OPT_IN_VALUE} in the environment, and the typed confirmation "
        f"(--confirm-live \"<masked key id> LIVE\" or the interactive prompt)"
    )
    flagged = (getattr(args, "execution", None) or "").strip().lower() == "live"
    configured = settings is not None and settings.effective_execution == "live"
    if not flagged and not configured:
        return None
    if configured and not flagged:
        return f"refused: V3_EXECUTION=live in the configuration is not enough; {how}"
    if os.environ.get(LIVE_OPT_IN_ENV) != LIVE_OPT_IN_VALUE:
        return f"refused: {LIVE_OPT_IN_ENV} is not set to {LIVE_OPT_IN_VALUE}; {how}"
    return None


def _confirm_live(args: argparse.Namespace, masked_key_id: str) -> str | None:
    """None when the typed confirmation matches, else the refusal text."""
    expected = f"{masked_key_id} LIVE"
    given = args.confirm_live
    if given is None:
        if not sys.stdin.isatty():
            return f'refused: live trading needs the confirmation; pass --confirm-live "{expected}"'
        try:
            given = input(f'Real money on Kalshi production. Type "{expected}" to continue: ')
        except EOFError:
            given = ""
    # The masked id ends in "…"; accept "..." too, since an ellipsis is hard to type.
    if given.strip().replace("...", "…") != expected:
        return f'refused: the confirmation did not match; type exactly "{expected}"'
    return None


# --- run ------------------------------------------------------------------------------------------


class _Stop:
    """Set by SIGINT/SIGTERM; the main loop and the start-up steps check it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def __call__(self, signum: int, _frame: Any) -> None:
        if not self.event.is_set():
            self.reason = f"signal {signal.Signals(signum).name}"
            self.event.set()
            return
        if signum == signal.SIGINT:
            # A second Ctrl-C while stopping: the user gave up waiting. The journal is crash-safe and the
            # child exchange gets SIGTERM from the kernel when we are gone (PR_SET_PDEATHSIG).
            os.write(2, b"main.py: second interrupt: exiting without waiting for the actors\n")
            os._exit(130)


def _credentials(settings: Any):
    from kalshi.auth import AuthError, Credentials

    if settings.private_key_path and settings.private_key_content:  # as Credentials.from_env: never guess
        raise AuthError("set only one of KALSHI_PRIVATE_KEY_PATH and KALSHI_PRIVATE_KEY_CONTENT")
    if settings.private_key_path:
        return Credentials.from_pem_file(settings.api_key_id, os.path.expanduser(settings.private_key_path))
    return Credentials.from_pem_text(settings.api_key_id, settings.private_key_content)


def _endpoints(settings: Any) -> tuple[str, str]:
    from actors.settings import KALSHI_HOSTS

    hosts = KALSHI_HOSTS[settings.environment]
    return settings.api_url or hosts["default_rest"], settings.ws_url or hosts["default_ws"]


def _run(args: argparse.Namespace, stop: _Stop) -> int:
    from actors.config import ConfigError as ActorConfigError
    from actors.local_mode import LocalExchangeError, LocalExchangeProcess, ensure_local_keys
    from actors.settings import ConfigError
    from kalshi.auth import AuthError

    refusal = _live_refusal(args, None)
    if refusal:
        _error(refusal)
        return EXIT_CONFIG
    try:
        settings, actor_config = _load(args)
    except (ConfigError, ActorConfigError) as exc:
        _error(f"configuration error: {exc}")
        return EXIT_CONFIG
    refusal = _live_refusal(args, settings)
    if refusal:
        _error(refusal)
        return EXIT_CONFIG
    refusal = _url_refusal(settings)
    if refusal:
        _error(f"configuration error: {refusal}")
        return EXIT_CONFIG

    plain = args.plain or not sys.stdout.isatty()
    data_dir = settings.data_path
    _setup_logging(settings.log_level, None if plain else data_dir / "trader.log")
    log.info("starting: %r", settings)

    exchange: LocalExchangeProcess | None = None
    try:
        if settings.environment == "local":
            if settings.has_credentials:
                log.info("local mode uses its own key pair; the configured Kalshi credentials are not used")
            keys = ensure_local_keys(data_dir)
            exchange = LocalExchangeProcess(keys, flow="calm").start()
            credentials = keys.credentials()
            rest_url, ws_url = exchange.rest_url, exchange.ws_url
            if plain:
                print(f"local exchange: REST {rest_url} WS {ws_url}", flush=True)
        else:
            credentials = _credentials(settings)
            rest_url, ws_url = _endpoints(settings)
            if settings.effective_execution == "live":
                refusal = _confirm_live(args, credentials.key_id_masked)
                if refusal:
                    _error(refusal)
                    return EXIT_CONFIG
        if stop.event.is_set():
            return EXIT_OK
        return _run_system(args, settings, actor_config, credentials, rest_url, ws_url, plain, stop)
    except (AuthError, ConfigError, ActorConfigError) as exc:
        _error(f"configuration error: {exc}")
        return EXIT_CONFIG
    except LocalExchangeError as exc:
        _error(f"cannot start: {exc}")
        return EXIT_STARTUP
    finally:
        if exchange is not None:
            code = exchange.stop()
            log.info("local exchange stopped (status %s)", code)


def _run_system(args, settings, actor_config, credentials, rest_url, ws_url, plain: bool, stop: _Stop) -> int:
    from actors.context import SystemContext
    from actors.system import StartupError, System, build_factories, effective_config, select_markets
    from kalshi.rest import KalshiApiError

    rest = _rest_client(rest_url, credentials)
    if rest is None:
        return EXIT_CONFIG
    try:
        with rest:
            tickers = select_markets(settings, rest)
    except (KalshiApiError, StartupError) as exc:
        _error(f"cannot start: market selection failed: {exc}")
        return EXIT_STARTUP
    log.info("markets (%s mode): %s", settings.rl_mode, ", ".join(tickers))
    context = SystemContext(
        settings=settings, rest_url=rest_url, ws_url=ws_url, credentials=credentials, data_dir=settings.data_path,
        market_tickers=tickers, environment=settings.environment, execution=settings.effective_execution,
    )
    config = effective_config(actor_config, trading_enabled=settings.enable_trading_client and credentials is not None)
    factories = build_factories(config, context)
    system = System(config, factories, data_dir=settings.data_path)
    try:
        system.start()
    except StartupError as exc:
        _error(f"cannot start: {exc}")
        return EXIT_STARTUP
    reason = "stopped"
    loop_failed = False
    try:
        reason = _wait(args, system, plain, stop, {"environment": settings.environment,
                                                    "execution": settings.effective_execution,
                                                    "strategy": settings.strategy})
    except Exception as exc:  # a bug in the display loop must still shut the system down in order
        log.exception("main loop failed")
        reason = f"main loop failed: {type(exc).__name__}: {exc}"
        loop_failed = True
    finally:
        stats = system.supervisor_stats(1.0) or {}
        code = system.stop(reason)
    if loop_failed and code == EXIT_OK:
        code = EXIT_STARTUP
    if code != EXIT_OK:
        why = system.stop_error or (stats.get("state_reason") if stats.get("state") in ("ERROR", "SHUTDOWN") else None)
        _error(f"stopped with exit code {code}: {why or reason}")
    else:
        print(f"stopped: {reason}; exit code {code}", flush=True)
    return code


def _wait(args, system, plain: bool, stop: _Stop, extra: dict[str, Any]) -> str:
    """Show status until a signal, --run-for or the supervisor's own exit; returns the stop reason."""
    from actors.live_table import PlainReporter, feed_rates, render_status

    deadline = time.monotonic() + args.run_for if args.run_for else None

    def stop_reason() -> str | None:
        if stop.event.is_set():
            return stop.reason
        if system.exited.is_set():
            return f"supervisor exited with code {system.exit_code}"
        if deadline is not None and time.monotonic() >= deadline:
            return f"--run-for {args.run_for:g}s elapsed"
        return None

    if plain:
        reporter = PlainReporter()
        while (reason := stop_reason()) is None:
            status = {**extra, **system.status(0.5)}
            status.setdefault("uptime_s", system.uptime_s())
            for line in reporter.lines(status, time.monotonic()):
                print(line, flush=True)
            stop.event.wait(0.5)
        return reason

    from rich.console import Console
    from rich.live import Live

    previous: dict[str, Any] | None = None
    previous_at = time.monotonic()
    status = {**extra, **system.status(0.5)}
    with Live(render_status(status), console=Console(), refresh_per_second=4, screen=True) as live:
        while (reason := stop_reason()) is None:
            now = time.monotonic()
            status = {**extra, **system.status(0.3)}
            status.setdefault("uptime_s", system.uptime_s())
            live.update(render_status(status, feed_rates(status, previous, now - previous_at)))
            previous, previous_at = status, now
            stop.event.wait(0.3)  # with the ask: fresh data 2-3 times a second (Live redraws 4/s)
    return reason


# --- subcommands ----------------------------------------------------------------------------------


def _postmortem(args: argparse.Namespace) -> int:
    from actors.config import ConfigError as ActorConfigError
    from actors.postmortem import find_latest_log, postmortem
    from actors.settings import ConfigError

    path = args.log
    if path is None:
        try:
            settings, actor_config = _load(args)
            data_dir, log_file = settings.data_path, actor_config.supervisor.log_file
        except (ConfigError, ActorConfigError) as exc:  # a broken config must not stop a postmortem
            _error(f"configuration error ({exc}); looking in --data-dir or ./data")
            data_dir, log_file = Path(getattr(args, "data_dir", None) or "data"), "supervisor.jsonl"
        found = find_latest_log(data_dir, log_file)
        if found is None:
            _error(f"no supervisor log in {data_dir}; pass its path: main.py postmortem LOG")
            return EXIT_STARTUP
        path = found
    try:
        print(postmortem(path))
    except OSError as exc:
        _error(f"cannot read {path}: {exc.strerror or exc}")
        return EXIT_STARTUP
    return EXIT_OK


def _cleanup(args: argparse.Namespace) -> int:
    from actors.config import ConfigError as ActorConfigError
    from actors.local_mode import LocalExchangeError, LocalExchangeProcess, ensure_local_keys
    from actors.settings import ConfigError
    from kalshi.auth import AuthError
    from kalshi.rest import KalshiApiError

    try:
        settings, _ = _load(args)
    except (ConfigError, ActorConfigError) as exc:
        _error(f"configuration error: {exc}")
        return EXIT_CONFIG
    refusal = _url_refusal(settings)
    if refusal:
        _error(f"configuration error: {refusal}")
        return EXIT_CONFIG
    _setup_logging(settings.log_level, None)
    exchange: LocalExchangeProcess | None = None
    try:
        if settings.environment == "local":
            keys = ensure_local_keys(settings.data_path)
            credentials = keys.credentials()
            if settings.api_url:
                rest_url = settings.api_url  # an exchange already running (python main.py exchange ...)
            else:
                exchange = LocalExchangeProcess(keys, flow="off").start()
                rest_url = exchange.rest_url
        else:
            credentials = _credentials(settings)
            rest_url, _ = _endpoints(settings)
        print(f"cleanup on {settings.environment} ({rest_url}): "
              f"{'every resting order' if args.all else 'resting orders not in an order group'}")
        failures = 0
        rest = _rest_client(rest_url, credentials)
        if rest is None:
            return EXIT_CONFIG
        with rest:
            resting = list(rest.iter_orders(status="resting", limit=200))
            targets = [o for o in resting if args.all or not o.order_group_id]
            for order in targets:
                # Ids and tickers come from the exchange: shown escaped and bounded (S10).
                what = f"{_shown(order.order_id)} {_shown(order.ticker)}"
                try:
                    rest.cancel_order(order.order_id, order.ticker)
                    print(f"canceled {what} {_shown(order.outcome_side)} remaining {order.remaining_count / 100:g}")
                except (KalshiApiError, ValueError) as exc:  # ValueError: an id that cannot be a URL segment
                    failures += 1
                    print(f"could not cancel {what}: {exc}")
        print(f"{len(targets) - failures} canceled, {failures} failed, {len(resting) - len(targets)} kept")
        return EXIT_OK if failures == 0 else EXIT_STARTUP
    except (AuthError, ConfigError) as exc:
        _error(f"configuration error: {exc}")
        return EXIT_CONFIG
    except (LocalExchangeError, KalshiApiError) as exc:
        _error(f"cleanup failed: {exc}")
        return EXIT_STARTUP
    finally:
        if exchange is not None:
            exchange.stop()


# --- entry ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:  # leave logging as found (main() is also called in-process by tests)
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
                handler.close()
        for handler in saved[0]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved[1])


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "exchange":
        from kalshi.exchange.cli import main as exchange_main

        return exchange_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.help_config:
        from actors.settings import describe_settings

        print(describe_settings())
        return EXIT_OK
    if args.command == "postmortem":
        return _postmortem(args)
    if args.command == "cleanup":
        return _cleanup(args)
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _exit(code: int, grace_s: float = 10.0) -> None:
    """Exit with ``code``; if a thread that cannot be stopped (a hung actor) would keep the process
    alive, say which and exit anyway, so the process supervisor sees the failure instead of a hang."""
    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if stuck:
        _error(f"threads still running after shutdown: {', '.join(stuck)}; exiting anyway")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code if code != EXIT_OK else 71)
    sys.exit(code)


if __name__ == "__main__":
    try:
        _exit(main())
    except BrokenPipeError:  # output piped into a pager/head that closed early
        _exit(EXIT_OK)
