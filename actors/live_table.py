"""Terminal output from the status snapshot: the live table (rich) and plain lines (``--plain``).

Both read the broadcaster's JSON-ready status dict (``messages.status.GetStatus``) and nothing else, so
they are pure functions of it (plus the previous snapshot, for rates). Every field is optional: a
section whose data is missing shows "—" rather than failing, because the table is also drawn from the
supervisor's reduced status while the broadcaster is down. Money arrives as dollar strings (never
floats); an int money value is taken to be in $0.0001 units (``kalshi.units``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kalshi.units import UnitError, format_money, notional, parse_money, parse_price, parse_signed_count, price_complement

from ._util import BoundedIdSet

__all__ = ["render_status", "feed_rates", "compute_pnl", "PlainReporter", "format_duration"]

MAX_ROWS = 8  # rows per list section; the table must fit a terminal
DASH = "—"


# --- small formatting helpers ---------------------------------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    if isinstance(value, Mapping):
        return list(value.values())
    return value if isinstance(value, (list, tuple)) else ()


def _first(d: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = d.get(key)
        if value is not None:
            return value
    return None


def _text(value: Any, limit: int = 60) -> str:
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).replace("\n", " ")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _money(value: Any) -> str:
    """Dollar strings as given ("12.3400" → "$12.3400"); ints are $0.0001 units; floats are refused."""
    if value is None:
        return DASH
    if isinstance(value, bool) or isinstance(value, float):
        return "?"
    if isinstance(value, int):
        return ("-$" if value < 0 else "$") + format_money(abs(value), 4)
    text = str(value).strip()
    if text.startswith("-"):
        return "-$" + text[1:]
    return text if text.startswith("$") else "$" + text


def format_duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return DASH
    s = int(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:d}:{secs:02d}"


def _age_ms(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        return DASH
    return f"{value / 1000:.1f}s" if value < 60_000 else format_duration(value / 1000)


def _yes_no(value: Any, good: str = "green", bad: str = "red") -> Text:
    if value is None:
        return Text(DASH)
    return Text("yes", style=good) if value else Text("no", style=bad)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                  expand=False, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    return table


# --- rates ----------------------------------------------------------------------------------------


def feed_rates(current: Mapping[str, Any], previous: Mapping[str, Any] | None, elapsed_s: float) -> dict[str, float]:
    """Messages per second per feed from two snapshots ``elapsed_s`` apart (when the feed gives no rate)."""
    if not previous or elapsed_s <= 0:
        return {}
    rates: dict[str, float] = {}
    before = _map(previous.get("feeds"))
    for name, feed in _map(current.get("feeds")).items():
        now_count = _map(feed).get("messages")
        then_count = _map(before.get(name)).get("messages")
        if isinstance(now_count, int) and isinstance(then_count, int) and now_count >= then_count:
            rates[name] = (now_count - then_count) / elapsed_s
    return rates


# --- P&L ----------------------------------------------------------------------------------------


def compute_pnl(status: Mapping[str, Any]) -> dict[str, Any]:
    """Realized and unrealized P&L after fees, exact, from the positions and books of the snapshot.

    realized = Σ realized_pnl − Σ fees_paid; unrealized = what the open positions would fetch at the
    best bid of their side (YES: best YES bid; NO: 1 − best YES ask) − their cost. A position whose book
    has no usable price is counted in ``unpriced`` and left out of the unrealized sum. An explicit
    ``pnl`` section in the snapshot wins. Values are money units (ints) or None when unknown.
    """
    explicit = _map(status.get("pnl"))
    if explicit:
        return dict(explicit)
    books = {_first(_map(b), "market_ticker", "ticker"): _map(b) for b in _seq(status.get("books"))}
    realized = fees = unrealized = 0
    priced = unpriced = bad = 0
    positions = [_map(p) for p in _seq(status.get("positions"))]
    for p in positions:
        try:
            count = parse_signed_count(_first(p, "position"), "position")
            cost = parse_money(_first(p, "cost_dollars", "market_exposure", "cost") or "0", "cost")
            realized += parse_money(_first(p, "realized_pnl_dollars", "realized_pnl") or "0", "realized_pnl")
            fees += parse_money(_first(p, "fees_paid_dollars", "fees_paid") or "0", "fees_paid")
        except UnitError:
            bad += 1
            continue
        if count == 0:
            continue
        book = books.get(_first(p, "market_ticker", "ticker", "market"), {})
        try:
            if not book.get("valid"):
                raise UnitError("book", None, "no valid book")
            if count > 0:
                exit_price = parse_price(book.get("best_yes_bid"), "best_yes_bid")
            else:
                exit_price = price_complement(parse_price(book.get("best_yes_ask"), "best_yes_ask"))
        except UnitError:
            unpriced += 1
            continue
        unrealized += notional(abs(count), exit_price) - cost
        priced += 1
    if not positions:
        return {"realized": None, "unrealized": None, "fees": None, "unpriced": 0, "bad": 0}
    return {
        "realized": None if bad == len(positions) else realized - fees,
        "unrealized": unrealized if priced else None,
        "fees": fees,
        "unpriced": unpriced,
        "bad": bad,
    }


# --- sections -------------------------------------------------------------------------------------


def _header(status: Mapping[str, Any]) -> RenderableType:
    state = _text(status.get("state"), 30)
    degraded = status.get("degraded")
    gate = status.get("trading_gate")
    if isinstance(gate, Mapping):
        gate = gate.get("open")
    line = Text()
    line.append("state ", style="bold")
    style = {"READY": "green", "ACTING": "cyan", "ERROR": "bold red", "SHUTDOWN": "red"}.get(state.upper(), "yellow")
    line.append(state.upper(), style=style)
    if degraded:
        line.append("  DEGRADED", style="bold yellow")
    line.append("   gate ", style="bold")
    line.append(DASH if gate is None else ("open" if gate else "closed"), style="green" if gate else "red")
    line.append("   uptime ", style="bold")
    line.append(format_duration(status.get("uptime_s")))
    for key, label in (("environment", "env"), ("execution", "execution"), ("strategy", "strategy")):
        if status.get(key):
            line.append(f"   {label} ", style="bold")
            line.append(_text(status.get(key), 20))
    reason = status.get("state_reason")
    if reason:
        line.append(f"\n{_text(reason, 120)}", style="dim")
    if status.get("source") == "supervisor":
        line.append("\nbroadcaster not answering: showing the supervisor's view", style="yellow")
    return Panel(line, title="Trader V3", title_align="left", box=box.ROUNDED)


def _actors(status: Mapping[str, Any]) -> Table:
    table = _table("Actors", "actor", "alive", "gen", "restarts", "mailbox", "last error")
    actors = _map(status.get("actors"))
    for name in sorted(actors):
        a = _map(actors[name])
        table.add_row(
            _text(name, 24), _yes_no(a.get("alive")), _text(a.get("generation")), _text(a.get("restarts")),
            _text(a.get("mailbox_depth")), _text(_first(a, "last_error", "last_failure"), 50),
        )
    if not actors:
        table.add_row(DASH, DASH, DASH, DASH, DASH, DASH)
    return table


def _feeds(status: Mapping[str, Any], rates: Mapping[str, float]) -> Table:
    table = _table("Feeds", "feed", "connected", "msgs/s", "messages", "gaps", "reconnects", "last msg")
    feeds = _map(status.get("feeds"))
    for name in sorted(feeds):
        f = _map(feeds[name])
        rate = _first(f, "messages_per_s", "msgs_per_s")
        if rate is None:
            rate = rates.get(name)
        table.add_row(
            _text(name, 20), _yes_no(f.get("connected")),
            f"{rate:.0f}" if isinstance(rate, (int, float)) and not isinstance(rate, bool) else DASH,
            _text(f.get("messages")), _text(f.get("gaps")), _text(f.get("reconnects")),
            _age_ms(f.get("last_message_age_ms")),
        )
    if not feeds:
        table.add_row(DASH, DASH, DASH, DASH, DASH, DASH, DASH)
    return table


def _books(status: Mapping[str, Any]) -> Table:
    books = [_map(b) for b in _seq(status.get("books"))]
    valid = sum(1 for b in books if b.get("valid"))
    markets = _seq(status.get("markets"))
    count = len(markets) if markets else len(books)
    table = _table(f"Markets: {count} tracked, {valid} books valid", "market", "valid", "yes bid", "yes ask")
    for b in books[:MAX_ROWS]:
        table.add_row(
            _text(_first(b, "market_ticker", "ticker", "market"), 32), _yes_no(b.get("valid")),
            _text(_first(b, "best_yes_bid", "yes_bid")), _text(_first(b, "best_yes_ask", "yes_ask")),
        )
    if len(books) > MAX_ROWS:
        table.add_row(f"… {len(books) - MAX_ROWS} more", "", "", "")
    if not books:
        table.add_row(DASH, DASH, DASH, DASH)
    return table


def _whales(status: Mapping[str, Any]) -> Table:
    whales = _map(status.get("whales"))
    stats = _map(whales.get("stats")) or whales
    queue = [_map(w) for w in _seq(whales.get("queue"))]
    size = _first(stats, "queue_size")
    title = (
        f"Whale queue: {_text(size if size is not None else len(queue))} queued, "
        f"{_text(stats.get('trades_seen'))} trades seen, {_text(stats.get('trades_discarded'))} discarded"
    )
    table = _table(title, "market", "side", "price", "count", "size", "age")
    for w in queue[:MAX_ROWS]:
        age = w.get("age_seconds")
        table.add_row(
            _text(_first(w, "market_ticker", "market"), 32), _text(w.get("side")),
            _money(_first(w, "price_dollars", "price")), _text(w.get("count")),
            _money(_first(w, "whale_size_dollars", "whale_size")),
            f"{age:.0f}s" if isinstance(age, (int, float)) and not isinstance(age, bool) else DASH,
        )
    if not queue:
        table.add_row(DASH, DASH, DASH, DASH, DASH, DASH)
    return table


def _decisions(status: Mapping[str, Any]) -> Table:
    counts = _map(status.get("decisions"))
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"
    table = _table(f"Decisions: {summary}", "action", "market", "side", "reason")
    recent = [_map(d) for d in _seq(status.get("recent_decisions"))]
    for d in _newest_first(recent)[:MAX_ROWS]:
        action = _text(d.get("action"), 24)
        style = "green" if action in ("follow", "followed") else ("red" if action == "failed" else "")
        table.add_row(
            Text(action, style=style), _text(_first(d, "market", "market_ticker"), 32),
            _text(_first(d, "outcome", "side"), 4), _text(d.get("reason"), 70),
        )
    if not recent:
        table.add_row(DASH, DASH, DASH, DASH)
    return table


def _newest_first(items: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    times = [_decision_time(d) for d in items]
    if all(t is not None for t in times) and items:
        return [d for _, _, d in sorted(((t, i, d) for i, (t, d) in enumerate(zip(times, items))),
                                        key=lambda x: (x[0], x[1]), reverse=True)]
    return list(items)


def _decision_time(d: Mapping[str, Any]) -> int | None:
    value = _first(d, "decided_ms", "ts_ms", "at_ms", "timestamp_ms")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _outcome_price(order: Mapping[str, Any]) -> str:
    """What one contract of the order's outcome costs: the YES price, or its complement for NO."""
    yes = _first(order, "yes_price_dollars", "price", "yes_price")
    if order.get("outcome_side") == "no" and isinstance(yes, str):
        try:
            return _money(format_money(price_complement(parse_price(yes, "yes_price")), 4))
        except UnitError:
            return "?"
    return _money(yes)


def _account(status: Mapping[str, Any]) -> tuple[RenderableType, Table, Table]:
    pnl = compute_pnl(status)
    orders = _map(status.get("orders"))
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(no_wrap=True)
    summary.add_row("balance", _money(_first(status, "balance", "balance_dollars")))
    summary.add_row("portfolio value", _money(_first(status, "portfolio_value", "portfolio_value_dollars")))
    summary.add_row("realized P&L after fees", _money(_first(pnl, "realized", "realized_dollars")))
    unpriced = pnl.get("unpriced")
    summary.add_row("unrealized P&L", _money(_first(pnl, "unrealized", "unrealized_dollars"))
                    + (f" ({unpriced} position(s) without a price)" if unpriced else ""))
    summary.add_row("fees paid", _money(_first(pnl, "fees", "fees_dollars")))
    summary.add_row("orders", " ".join(f"{k} {_text(orders.get(k))}" for k in
                                       ("submitted", "accepted", "filled", "rejected", "unknown")))

    positions = _table("Positions", "market", "position", "cost", "realized", "fees")
    rows = [_map(p) for p in _seq(status.get("positions"))]
    for p in rows[:MAX_ROWS]:
        positions.add_row(
            _text(_first(p, "market_ticker", "ticker", "market"), 32), _text(_first(p, "position", "count")),
            _money(_first(p, "cost_dollars", "market_exposure", "cost")),
            _money(_first(p, "realized_pnl_dollars", "realized_pnl")),
            _money(_first(p, "fees_paid_dollars", "fees_paid", "fees")),
        )
    if not rows:
        positions.add_row(DASH, DASH, DASH, DASH, DASH)

    open_orders = _table("Open orders", "market", "buys", "price", "remaining", "status")
    rows = [_map(o) for o in _seq(status.get("open_orders"))]
    for o in rows[:MAX_ROWS]:
        open_orders.add_row(
            _text(_first(o, "market_ticker", "ticker", "market"), 32),
            _text(_first(o, "outcome_side", "side", "book_side"), 4), _outcome_price(o),
            _text(_first(o, "remaining_count", "remaining", "count")), _text(o.get("status")),
        )
    if not rows:
        open_orders.add_row(DASH, DASH, DASH, DASH, DASH)
    return Group(Text("Account", style="bold"), summary), positions, open_orders


def render_status(status: Mapping[str, Any], rates: Mapping[str, float] | None = None) -> RenderableType:
    """The whole live table for one status snapshot (``rates``: msgs/s per feed, see ``feed_rates``)."""
    status = _map(status)
    account, positions, open_orders = _account(status)
    # Two columns so the whole table fits a normal terminal height.
    grid = Table.grid(padding=(1, 4))
    grid.add_column()
    grid.add_column()
    grid.add_row(_actors(status), _feeds(status, rates or {}))
    grid.add_row(_whales(status), _decisions(status))
    grid.add_row(account, positions)
    grid.add_row(open_orders, _books(status))  # books last: the longest and least news
    return Group(_header(status), grid)


# --- plain output ---------------------------------------------------------------------------------


class PlainReporter:
    """Plain log lines for ``--plain`` / a non-TTY stdout: one per state change, decision and order-counter
    change, and a summary every ``summary_every_s`` seconds. Feed it successive snapshots."""

    def __init__(self, summary_every_s: float = 5.0, remember: int = 2000) -> None:
        self.summary_every_s = summary_every_s
        self._last_state: tuple[Any, Any, Any] | None = None
        self._seen: BoundedIdSet[tuple[Any, ...]] = BoundedIdSet(remember)
        self._orders: dict[str, Any] | None = None
        self._last_summary_s: float | None = None

    def lines(self, status: Mapping[str, Any], now_s: float) -> list[str]:
        status = _map(status)
        out: list[str] = []
        gate = status.get("trading_gate")
        if isinstance(gate, Mapping):
            gate = gate.get("open")
        state = (status.get("state"), bool(status.get("degraded")), gate)
        if state != self._last_state and state[0] is not None:
            self._last_state = state
            out.append(
                f"state {_text(state[0], 30)} degraded={'yes' if state[1] else 'no'} "
                f"gate={DASH if gate is None else ('open' if gate else 'closed')}"
                + (f" ({_text(status.get('state_reason'), 100)})" if status.get("state_reason") else "")
            )
        recent = [_map(d) for d in _seq(status.get("recent_decisions"))]
        fresh = [d for d in recent if self._seen.add(self._decision_key(d))]
        for d in reversed(_newest_first(fresh)):
            out.append(
                f"decision {_text(d.get('action'), 24)} {_text(_first(d, 'market', 'market_ticker'), 40)} "
                f"{_text(_first(d, 'outcome', 'side'), 4)} whale={_text(d.get('whale_id'), 60)}: {_text(d.get('reason'), 120)}"
            )
        orders = {k: v for k, v in _map(status.get("orders")).items() if isinstance(v, (int, str))}
        if orders and orders != self._orders:
            if self._orders is not None or any(v not in (0, "0") for v in orders.values()):
                out.append("orders " + " ".join(f"{k}={v}" for k, v in sorted(orders.items())))
            self._orders = orders
        if self._last_summary_s is None or now_s - self._last_summary_s >= self.summary_every_s:
            self._last_summary_s = now_s
            out.append(self.summary(status))
        return out

    @staticmethod
    def _decision_key(d: Mapping[str, Any]) -> tuple[Any, ...]:
        return (d.get("whale_id"), d.get("action"), d.get("reason"), _decision_time(d))

    @staticmethod
    def summary(status: Mapping[str, Any]) -> str:
        whales = _map(status.get("whales"))
        stats = _map(whales.get("stats")) or whales
        feeds = _map(status.get("feeds"))
        connected = sum(1 for f in feeds.values() if _map(f).get("connected"))
        decisions = _map(status.get("decisions"))
        total = sum(v for v in decisions.values() if isinstance(v, int) and not isinstance(v, bool))
        books = _seq(status.get("books"))
        return (
            f"summary state={_text(status.get('state'), 30)} uptime={format_duration(status.get('uptime_s'))} "
            f"feeds={connected}/{len(feeds)} books={len(books)} "
            f"whales_queued={_text(_first(stats, 'queue_size'))} trades_seen={_text(stats.get('trades_seen'))} "
            f"decisions={total} balance={_money(_first(status, 'balance', 'balance_dollars'))} "
            f"positions={len(_seq(status.get('positions')))} {PlainReporter.pnl_text(compute_pnl(status))}"
        )

    @staticmethod
    def pnl_text(pnl: Mapping[str, Any]) -> str:
        """``pnl realized=… unrealized=…`` after fees; positions without a usable book price are counted."""
        text = f"pnl realized={_money(pnl.get('realized'))} unrealized={_money(pnl.get('unrealized'))}"
        unpriced = pnl.get("unpriced")
        return text + (f" (unpriced {unpriced})" if unpriced else "")
