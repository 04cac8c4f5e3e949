"""Kalshi-shaped JSON bodies (era C) built from the engine's model.

Key sets follow the demo captures in shared/kalshi-wire where one exists (orders, fills, create and
cancel responses, balance, orderbook, errors) and kalshi-protocol.md §2/§4 otherwise. Fields Kalshi
omits when empty on the wire (order ``expiration_time``, ``order_group_id``) are emitted only when set.
"""

from __future__ import annotations

from kalshi.units import COUNT_ONE, PRICE_ONE, format_count, format_money, format_price

from .engine_model import Market, Order, Position, rfc3339

SETTLEMENT_TIMER_KEY = "settlement_timer_seconds"
LATEST_EXPIRATION_MS = 7 * 24 * 3600 * 1000


def _money(units: int) -> str:
    return format_money(units, 6)


def _price_ranges(m: Market) -> list[dict]:
    return [
        {"start": format_price(s), "end": format_price(e), "step": format_price(st)} for s, e, st in m.grid.ranges
    ]


def top_of_book(m: Market) -> tuple[int, int, int, int]:
    """(best yes bid, its size, best no bid, its size); 0 for an empty side."""
    yes, no = m.book.yes, m.book.no
    yb = yes.prices[-1] if yes.prices else 0
    nb = no.prices[-1] if no.prices else 0
    return yb, (yes.totals[yb] if yb else 0), nb, (no.totals[nb] if nb else 0)


def market_json(m: Market, series: dict, settlement_timer_s: int, now_ms: int) -> dict:
    yb, ybs, nb, nbs = top_of_book(m)
    determined = m.result in ("yes", "no")
    return {
        "ticker": m.ticker,
        "event_ticker": m.event_ticker,
        "market_type": "binary",
        "title": m.title,
        "subtitle": "",
        "yes_sub_title": m.yes_sub_title,
        "no_sub_title": m.no_sub_title,
        "created_time": rfc3339(m.created_ms),
        "updated_time": rfc3339(m.updated_ms),
        "open_time": rfc3339(m.open_ms),
        "close_time": rfc3339(m.close_ms),
        "expected_expiration_time": rfc3339(m.determine_ms),
        "expiration_time": rfc3339(m.close_ms + LATEST_EXPIRATION_MS),
        "latest_expiration_time": rfc3339(m.close_ms + LATEST_EXPIRATION_MS),
        SETTLEMENT_TIMER_KEY: settlement_timer_s,
        "status": m.status,
        "yes_bid_dollars": format_price(yb),
        "yes_bid_size_fp": format_count(ybs),
        "yes_ask_dollars": format_price(PRICE_ONE - nb) if nb else format_price(PRICE_ONE),
        "yes_ask_size_fp": format_count(nbs),
        "no_bid_dollars": format_price(nb),
        "no_ask_dollars": format_price(PRICE_ONE - yb) if yb else format_price(PRICE_ONE),
        "last_price_dollars": format_price(m.last_price),
        "previous_yes_bid_dollars": format_price(m.prev_yes_bid),
        "previous_yes_ask_dollars": format_price(m.prev_yes_ask),
        "previous_price_dollars": format_price(m.prev_price),
        "volume_fp": format_count(m.volume),
        "volume_24h_fp": format_count(m.volume_24h(now_ms)),
        "open_interest_fp": format_count(m.open_interest),
        "notional_value_dollars": "1.0000",
        "result": m.result,
        "can_close_early": True,
        "early_close_condition": None,
        "expiration_value": "",
        "settlement_value_dollars": (format_price(PRICE_ONE if m.result == "yes" else 0) if determined else None),
        "settlement_ts": rfc3339(m.settled_ms) if m.settled_ms else None,
        "settlement_bounds_type": "default",
        "settlement_floor_dollars": None,
        "occurrence_datetime": None,
        "fee_waiver_expiration_time": None,
        "strike_type": "greater",
        "floor_strike": m.floor_strike,
        "cap_strike": None,
        "functional_strike": None,
        "custom_strike": None,
        "rules_primary": f"If the simulated index for {m.event_ticker} is above {m.floor_strike}, then the market resolves to Yes.",
        "rules_secondary": "",
        "price_level_structure": m.structure,
        "price_ranges": _price_ranges(m),
        "mve_collection_ticker": None,
        "mve_selected_legs": None,
        "primary_participant_key": None,
        "is_provisional": False,
        "exchange_index": 0,
    }


def lifecycle_created_msg(m: Market, settlement_timer_s: int) -> dict:
    return {
        "market_ticker": m.ticker,
        "event_type": "created",
        "exchange_index": 0,
        "open_ts": m.open_ms // 1000,
        "close_ts": m.close_ms // 1000,
        "price_level_structure": m.structure,
        "price_ranges": _price_ranges(m),
        "additional_metadata": {
            "name": m.title,
            "title": m.title,
            "yes_sub_title": m.yes_sub_title,
            "no_sub_title": m.no_sub_title,
            "rules_primary": f"If the simulated index for {m.event_ticker} is above {m.floor_strike}, then the market resolves to Yes.",
            "rules_secondary": "",
            "can_close_early": True,
            "event_ticker": m.event_ticker,
            "expected_expiration_ts": m.determine_ms // 1000,
            "strike_type": "greater",
            "floor_strike": m.floor_strike,
        },
    }


def _legacy_dir(is_bid: bool) -> tuple[str, str, str, str]:
    """(side, action, outcome_side, book_side): a V2 ask is reported as sell YES (protocol §2.8)."""
    return ("yes", "buy", "yes", "bid") if is_bid else ("yes", "sell", "no", "ask")


def order_json(o: Order) -> dict:
    side, action, outcome, book = _legacy_dir(o.is_bid)
    body = {
        "action": action,
        "book_side": book,
        "client_order_id": o.cid or "",
        "created_time": rfc3339(o.created_ms),
        "fill_count_fp": format_count(o.filled),
        "initial_count_fp": format_count(o.initial),
        "last_update_time": rfc3339(o.updated_ms),
        "maker_fees_dollars": _money(o.maker_fees),
        "maker_fill_cost_dollars": _money(o.maker_cost),
        "no_price_dollars": format_price(PRICE_ONE - o.price),
        "order_id": o.order_id,
        "outcome_side": outcome,
        "remaining_count_fp": format_count(o.remaining),
        "self_trade_prevention_type": o.stp,
        "side": side,
        "status": o.status,
        "subaccount_number": 0,
        "taker_fees_dollars": _money(o.taker_fees),
        "taker_fill_cost_dollars": _money(o.taker_cost),
        "ticker": o.ticker,
        "type": "limit",
        "user_id": o.user,
        "yes_price_dollars": format_price(o.price),
    }
    if o.exp_ms is not None:
        body["expiration_time"] = rfc3339(o.exp_ms)
    if o.group is not None:
        body["order_group_id"] = o.group
    if o.cancel_on_pause:
        body["cancel_order_on_pause"] = True
    return body


def user_order_msg(o: Order) -> dict:
    side, _action, outcome, book = _legacy_dir(o.is_bid)
    msg = {
        "order_id": o.order_id,
        "user_id": o.user,
        "ticker": o.ticker,
        "exchange_index": 0,
        "status": o.status,
        "side": side,
        "is_yes": o.is_bid,
        "outcome_side": outcome,
        "book_side": book,
        "yes_price_dollars": format_price(o.price),
        "fill_count_fp": format_count(o.filled),
        "remaining_count_fp": format_count(o.remaining),
        "initial_count_fp": format_count(o.initial),
        "taker_fill_cost_dollars": _money(o.taker_cost),
        "maker_fill_cost_dollars": _money(o.maker_cost),
        "taker_fees_dollars": _money(o.taker_fees),
        "maker_fees_dollars": _money(o.maker_fees),
        "client_order_id": o.cid or "",
        "order_group_id": o.group,
        "self_trade_prevention_type": o.stp,
        "created_time": rfc3339(o.created_ms),
        "created_ts_ms": o.created_ms,
        "last_update_time": rfc3339(o.updated_ms),
        "last_updated_ts_ms": o.updated_ms,
        "last_update_reason": o.reason or None,  # a new order has had no update: null, never ""
        "expiration_time": rfc3339(o.exp_ms) if o.exp_ms is not None else None,
        "expiration_ts_ms": o.exp_ms,
        "subaccount_number": 0,
    }
    return msg


def average_price(o: Order) -> int:
    """Average YES execution price of an order's fills, rounded half up to $0.0001."""
    return (2 * o.fill_notional + o.filled) // (2 * o.filled)


def create_response(o: Order, ts_ms: int) -> dict:
    body = {
        "client_order_id": o.cid or "",
        "fill_count": format_count(o.filled),
        "order_id": o.order_id,
        "remaining_count": format_count(o.remaining),
        "ts_ms": ts_ms,
    }
    if o.cid is None:
        del body["client_order_id"]
    if o.filled:
        fees = o.taker_fees + o.maker_fees
        body["average_fill_price"] = format_price(average_price(o))
        # Fee per contract, 4 dp like the capture ("0.0175").
        body["average_fee_paid"] = format_price((2 * fees * COUNT_ONE + o.filled) // (2 * o.filled))
    return body


# fill record: (seq, trade_id, order_id, ticker, is_bid, count, yes_price, is_taker, fee, ts_ms)


def fill_json(f: list) -> dict:
    _seq, trade_id, order_id, ticker, is_bid, count, price, is_taker, fee, ts_ms = f
    side, action, outcome, book = _legacy_dir(is_bid)
    return {
        "action": action,
        "book_side": book,
        "count_fp": format_count(count),
        "created_time": rfc3339(ts_ms),
        "fee_cost": _money(fee),
        "fill_id": trade_id,
        "is_taker": is_taker,
        "market_ticker": ticker,
        "no_price_dollars": format_price(PRICE_ONE - price),
        "order_id": order_id,
        "outcome_side": outcome,
        "side": side,
        "subaccount_number": 0,
        "ticker": ticker,
        "trade_id": trade_id,
        "ts": ts_ms // 1000,
        "yes_price_dollars": format_price(price),
    }


def fill_msg(o: Order, trade_id: str, count: int, price: int, is_taker: bool, fee: int, post_q: int, ts_ms: int) -> dict:
    side, action, outcome, book = _legacy_dir(o.is_bid)
    return {
        "trade_id": trade_id,
        "order_id": o.order_id,
        "client_order_id": o.cid or "",
        "market_ticker": o.ticker,
        "exchange_index": 0,
        "is_taker": is_taker,
        "side": side,
        "action": action,
        "purchased_side": outcome,
        "outcome_side": outcome,
        "book_side": book,
        "yes_price_dollars": format_price(price),
        "count_fp": format_count(count),
        "fee_cost": _money(fee),
        "post_position_fp": format_count(post_q),
        "subaccount": 0,
        "ts": ts_ms // 1000,
        "ts_ms": ts_ms,
    }


def position_json(p: Position) -> dict:
    return {
        "ticker": p.ticker,
        "exchange_index": 0,
        "position_fp": format_count(p.q),
        "total_traded_dollars": _money(p.traded),
        "market_exposure_dollars": _money(p.exposure),
        "realized_pnl_dollars": _money(p.realized),
        "fees_paid_dollars": _money(p.fees),
        "last_updated_ts": rfc3339(p.updated_ms),
    }


def market_position_msg(user: str, p: Position) -> dict:
    return {
        "user_id": user,
        "market_ticker": p.ticker,
        "position_fp": format_count(p.q),
        "position_cost_dollars": _money(p.exposure),
        "realized_pnl_dollars": _money(p.realized),
        "fees_paid_dollars": _money(p.fees),
        "position_fee_cost_dollars": _money(p.fees),
        "volume_fp": format_count(p.volume),
        "subaccount": 0,
    }


# trade record: (seq, trade_id, ticker, count, yes_price, taker_is_bid, ts_ms)


def trade_json(t: tuple) -> dict:
    _seq, trade_id, ticker, count, price, taker_is_bid, ts_ms = t
    outcome = "yes" if taker_is_bid else "no"
    return {
        "count_fp": format_count(count),
        "created_time": rfc3339(ts_ms),
        "is_block_trade": False,
        "no_price_dollars": format_price(PRICE_ONE - price),
        "taker_book_side": "bid" if taker_is_bid else "ask",
        "taker_outcome_side": outcome,
        "taker_side": outcome,
        "ticker": ticker,
        "trade_id": trade_id,
        "yes_price_dollars": format_price(price),
    }


def trade_msg(t: tuple) -> dict:
    _seq, trade_id, ticker, count, price, taker_is_bid, ts_ms = t
    outcome = "yes" if taker_is_bid else "no"
    return {
        "trade_id": trade_id,
        "market_ticker": ticker,
        "yes_price_dollars": format_price(price),
        "no_price_dollars": format_price(PRICE_ONE - price),
        "count_fp": format_count(count),
        "taker_side": outcome,
        "taker_outcome_side": outcome,
        "taker_book_side": "bid" if taker_is_bid else "ask",
        "is_block_trade": False,
        "ts": ts_ms // 1000,
        "ts_ms": ts_ms,
    }


def ticker_msg(m: Market, now_ms: int) -> dict:
    yb, ybs, nb, nbs = top_of_book(m)
    return {
        "market_ticker": m.ticker,
        "market_id": m.market_id,
        "price_dollars": format_price(m.last_price),
        "yes_bid_dollars": format_price(yb),
        "yes_ask_dollars": format_price(PRICE_ONE - nb) if nb else format_price(PRICE_ONE),
        "yes_bid_size_fp": format_count(ybs),
        "yes_ask_size_fp": format_count(nbs),
        "last_trade_size_fp": format_count(m.last_trade_size),
        "volume_fp": format_count(m.volume),
        "open_interest_fp": format_count(m.open_interest),
        "dollar_volume": m.dollar_volume // 10_000,
        "dollar_open_interest": (m.open_interest * m.last_price) // (COUNT_ONE * 10_000),
        "ts": now_ms // 1000,
        "ts_ms": now_ms,
        "time": rfc3339(now_ms),
    }


def snapshot_msg(m: Market, use_yes_price: bool) -> dict:
    msg: dict = {"market_ticker": m.ticker, "market_id": m.market_id}
    yes = m.book.yes.depth()
    no = m.book.no.depth()
    if yes:
        msg["yes_dollars_fp"] = [[format_price(p), format_count(c)] for p, c in yes]
    if no:
        if use_yes_price:
            msg["no_dollars_fp"] = [[format_price(PRICE_ONE - p), format_count(c)] for p, c in reversed(no)]
        else:
            msg["no_dollars_fp"] = [[format_price(p), format_count(c)] for p, c in no]
    return msg


def orderbook_json(m: Market, depth: int) -> dict:
    return {
        "orderbook_fp": {
            "no_dollars": [[format_price(p), format_count(c)] for p, c in m.book.no.depth(depth)],
            "yes_dollars": [[format_price(p), format_count(c)] for p, c in m.book.yes.depth(depth)],
        }
    }
