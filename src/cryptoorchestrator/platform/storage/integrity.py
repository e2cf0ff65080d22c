"""Integrity check of the books: ``cryptoorch db check`` and the admin health route.

The rules, each a finding ``kind`` (the row that breaks one is quarantined in
``integrity_findings`` with the reason; it is never changed, except positions by ``repair``):

``position_mismatch`` / ``position_missing``
    A bot's position in a symbol equals its fills replayed in id order through the bot
    runtime's own :class:`~cryptoorchestrator.platform.bots.ledger.Ledger` (amount net of fees
    paid in the base asset, cost basis, realised P&L and fees in quote), starting from the
    bot's starting balance; margin books (signed) for bots whose strategy shorts.  Values are
    compared at the money columns' 18 decimal places.  A position without fills must be flat.
``balance_locked_mismatch``
    A paper account's ``locked`` amount of an asset equals what its resting orders lock: the
    remaining cost (``(amount - filled) x price``) of open buys in the quote asset, the
    remaining amount of open sells in the base asset.
``balance_mismatch``
    A paper account's ``free + locked`` of each asset equals its deposits plus its fills
    (buys add the amount to the base asset and take ``price x amount`` from the quote asset,
    sells the reverse) minus the fees charged in that asset.  Deposits are not stored as
    amounts: the rule is checked on accounts funded by bots (``deposit_key="bot<id>"``, each
    leaving a ``~bot<id>`` marker row), whose deposit is the bot's ``starting_balance`` in its
    quote asset.  Accounts funded by hand (``PaperBroker.fund`` without a key, or ``reset``)
    cannot be checked this way and only get the ``locked`` rule.
``order_fills_mismatch``
    A filled or canceled order's fills sum to its ``filled`` amount (a canceled order may have
    filled in part); a rejected or denied order has neither fills nor a filled amount.
``order_status_unknown`` / ``order_illegal_state``
    An order's status is a state of the order state machine
    (:mod:`cryptoorchestrator.platform.model.orders`); ``0 <= filled <= amount``.
``orphan_row``
    Every foreign key points at an existing row.
``trade_outside_market_data``
    A bot's trade lies inside the stored candles of its exchange, symbol and the bot's
    timeframe (from the first candle's open to the last candle's close), when the store holds
    that dataset.  A store that is behind the live bots reports their recent trades:
    download the missing candles (``cryptoorch data download``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import StorageError
from cryptoorchestrator.platform.model.enums import OrderStatus
from cryptoorchestrator.platform.notify.system import enqueue_integrity_findings
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import (
    Base,
    Bot,
    IntegrityFinding,
    Order,
    PaperBalance,
    Position,
    Trade,
)
from cryptoorchestrator.platform.storage.types import MONEY_SCALE, utcnow

_ZERO = Decimal(0)
_EXACT = Context(prec=80)
_PLACES = Decimal(1).scaleb(-MONEY_SCALE)
_DEFAULT_STARTING_BALANCE = Decimal(10_000)
_MARKER = "~"
#: Paper orders that rest on the book and lock funds (the paper broker's open statuses).
_RESTING = (OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value)


@dataclass(frozen=True)
class Finding:
    """One row that breaks one rule."""

    kind: str
    table: str
    row_id: str
    reason: str


@dataclass
class CheckReport:
    """What a check found, recorded, resolved and repaired."""

    findings: list[Finding] = field(default_factory=list)
    recorded: int = 0
    resolved: int = 0
    repaired: list[str] = field(default_factory=list)
    checked_at: datetime = field(default_factory=utcnow)

    @property
    def ok(self) -> bool:
        """Whether nothing was found."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``cryptoorch db check --json``)."""
        counts: dict[str, int] = defaultdict(int)
        for f in self.findings:
            counts[f.kind] += 1
        return {
            "ok": self.ok,
            "checked_at": self.checked_at.isoformat(),
            "counts": dict(sorted(counts.items())),
            "findings": [asdict(f) for f in self.findings],
            "recorded": self.recorded,
            "resolved": self.resolved,
            "repaired": self.repaired,
        }


def _q(value: Decimal) -> Decimal:
    return value.quantize(_PLACES, rounding=ROUND_HALF_UP, context=_EXACT)


def _split(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote.split(":")[0]


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True)
class _Rebuilt:
    amount: Decimal
    average_price: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    fills: int


def rebuild_positions(session: Session) -> dict[tuple[int, str], _Rebuilt]:
    """Replay every bot's fills through the runtime's ledger: (bot, symbol) -> position."""
    from cryptoorchestrator.platform.bots.ledger import Ledger, stored_fill

    bots = {b.id: b for b in session.scalars(select(Bot))}
    books: dict[tuple[int, str], tuple[Any, int]] = {}
    trades = session.scalars(
        select(Trade).where(Trade.bot_id.is_not(None)).order_by(Trade.bot_id, Trade.id)
    )
    for t in trades:
        assert t.bot_id is not None
        key = (t.bot_id, t.symbol)
        if key not in books:
            bot = bots.get(t.bot_id)
            start = (bot.starting_balance if bot else None) or _DEFAULT_STARTING_BALANCE
            shorts = bool(((bot.params if bot else None) or {}).get("short", False))
            books[key] = (Ledger(cash=start, margin=shorts), 0)
        book, n = books[key]
        base, quote = _split(t.symbol)
        book.apply(
            stored_fill(t),
            base,
            quote,
        )
        books[key] = (book, n + 1)
    return {
        key: _Rebuilt(b.amount, b.average_price, b.realized_pnl, b.fees_paid, n)
        for key, (b, n) in books.items()
    }


_FLAT = _Rebuilt(_ZERO, _ZERO, _ZERO, _ZERO, 0)
_POSITION_FIELDS = ("amount", "average_price", "realized_pnl", "fees_paid")


def _position_findings(session: Session, rebuilt: dict[tuple[int, str], _Rebuilt]) -> list[Finding]:
    out: list[Finding] = []
    stored = {(p.bot_id, p.symbol): p for p in session.scalars(select(Position))}
    for key in sorted(set(stored) | set(rebuilt)):
        pos, want = stored.get(key), rebuilt.get(key, _FLAT)
        if pos is None:
            if want.fills:
                out.append(
                    Finding(
                        "position_missing",
                        "positions",
                        f"bot {key[0]} {key[1]}",
                        f"{want.fills} fills but no position row (rebuilt amount {want.amount})",
                    )
                )
            continue
        diffs = [
            f"{name} {getattr(pos, name)} != {getattr(want, name)} from fills"
            for name in _POSITION_FIELDS
            if _q(getattr(pos, name)) != _q(getattr(want, name))
        ]
        if diffs:
            out.append(
                Finding(
                    "position_mismatch",
                    "positions",
                    str(pos.id),
                    f"bot {key[0]} {key[1]} ({want.fills} fills): " + "; ".join(diffs),
                )
            )
    return out


def repair_positions(session: Session) -> list[str]:
    """Rebuild every position that differs from its fills; return what changed, in words."""
    rebuilt = rebuild_positions(session)
    stored = {(p.bot_id, p.symbol): p for p in session.scalars(select(Position))}
    changes: list[str] = []
    for key in sorted(set(stored) | set(rebuilt)):
        pos, want = stored.get(key), rebuilt.get(key, _FLAT)
        if pos is None:
            if not want.fills:
                continue
            pos = Position(bot_id=key[0], symbol=key[1])
            session.add(pos)
            before = "none"
        else:
            if all(_q(getattr(pos, n)) == _q(getattr(want, n)) for n in _POSITION_FIELDS):
                continue
            before = ", ".join(f"{n} {getattr(pos, n)}" for n in _POSITION_FIELDS)
        for name in _POSITION_FIELDS:
            setattr(pos, name, getattr(want, name))
        after = ", ".join(f"{n} {getattr(want, n)}" for n in _POSITION_FIELDS)
        changes.append(f"position bot {key[0]} {key[1]}: {before} -> {after} ({want.fills} fills)")
    session.flush()
    return changes


# ------------------------------------------------------------------------ paper balances


def _balance_findings(session: Session) -> list[Finding]:
    out: list[Finding] = []
    rows: dict[int, dict[str, PaperBalance]] = defaultdict(dict)
    for r in session.scalars(select(PaperBalance).order_by(PaperBalance.id)):
        rows[r.account_id][r.asset] = r
    bots = {b.id: b for b in session.scalars(select(Bot))}
    for account, assets in sorted(rows.items()):
        exchange = f"paper:{account}"
        locked: dict[str, Decimal] = defaultdict(lambda: _ZERO)
        totals: dict[str, Decimal] = defaultdict(lambda: _ZERO)
        orders = session.scalars(select(Order).where(Order.exchange == exchange))
        for o in orders:
            base, quote = _split(o.symbol)
            if o.status in _RESTING:
                left = o.amount - o.filled
                if o.side == "buy":
                    locked[quote] += left * (o.price or _ZERO)
                else:
                    locked[base] += left
        fills = session.execute(
            select(Trade).join(Order, Trade.order_id == Order.id).where(Order.exchange == exchange)
        ).scalars()
        for t in fills:
            base, quote = _split(t.symbol)
            sign = 1 if t.side == "buy" else -1
            totals[base] += sign * t.amount
            totals[quote] -= sign * t.price * t.amount
            if t.fee and t.fee_currency:
                totals[t.fee_currency] -= t.fee
        for asset in sorted(set(locked) | {a for a in assets if not a.startswith(_MARKER)}):
            row = assets.get(asset)
            have = row.locked if row is not None else _ZERO
            if _q(have) != _q(locked[asset]):
                out.append(
                    Finding(
                        "balance_locked_mismatch",
                        "paper_balances",
                        str(row.id) if row is not None else f"account {account} {asset}",
                        f"account {account} {asset}: locked {have}, resting orders lock "
                        f"{locked[asset]}",
                    )
                )
        deposits = _deposits(assets, bots)
        if deposits is None:
            continue
        for asset in sorted(set(totals) | set(deposits) | {a for a in assets if a[:1] != "~"}):
            row = assets.get(asset)
            have = (row.free + row.locked) if row is not None else _ZERO
            want = deposits.get(asset, _ZERO) + totals[asset]
            if _q(have) != _q(want):
                out.append(
                    Finding(
                        "balance_mismatch",
                        "paper_balances",
                        str(row.id) if row is not None else f"account {account} {asset}",
                        f"account {account} {asset}: free + locked {have}, deposits "
                        f"{deposits.get(asset, _ZERO)} + fills - fees = {want}",
                    )
                )
    return out


def _deposits(assets: dict[str, PaperBalance], bots: dict[int, Bot]) -> dict[str, Decimal] | None:
    """The account's deposits by asset, from its bots' markers; None: not known."""
    markers = [a for a in assets if a.startswith(_MARKER)]
    if not markers:
        return None
    out: dict[str, Decimal] = defaultdict(lambda: _ZERO)
    for marker in markers:
        key = marker[len(_MARKER) :]
        if not key.startswith("bot") or not key[3:].isdigit():
            return None
        bot = bots.get(int(key[3:]))
        if bot is None or bot.starting_balance is None:
            return None
        out[_split(bot.trading_pair)[1]] += bot.starting_balance
    return out


# --------------------------------------------------------------------------------- orders


def known_order_statuses() -> frozenset[str]:
    """The stored values of every state of the order state machine."""
    from cryptoorchestrator.platform.model import orders as lifecycle

    states: set[Any] = set()
    for event, sources in lifecycle.TRANSITIONS.items():
        states.add(event.status)
        states.update(sources)
    return frozenset(str(getattr(s, "value", s)) for s in states)


def _order_findings(session: Session) -> list[Finding]:
    known = known_order_statuses()
    sums: dict[int, tuple[Decimal, int]] = {}
    for t in session.execute(select(Trade.order_id, Trade.amount)):
        s, n = sums.get(t.order_id, (_ZERO, 0))
        sums[t.order_id] = (s + t.amount, n + 1)
    out: list[Finding] = []
    for o in session.scalars(select(Order).order_by(Order.id)):
        rid = str(o.id)
        if o.status not in known:
            out.append(
                Finding(
                    "order_status_unknown",
                    "orders",
                    rid,
                    f"status {o.status!r} is not one of {', '.join(sorted(known))}",
                )
            )
            continue
        if o.filled < 0 or o.filled > o.amount:
            out.append(
                Finding(
                    "order_illegal_state",
                    "orders",
                    rid,
                    f"filled {o.filled} outside 0..amount {o.amount}",
                )
            )
        total, n = sums.get(o.id, (_ZERO, 0))
        if o.status in (OrderStatus.FILLED.value, OrderStatus.CANCELED.value):
            if _q(total) != _q(o.filled):
                out.append(
                    Finding(
                        "order_fills_mismatch",
                        "orders",
                        rid,
                        f"{o.status} with filled {o.filled} but {n} fills sum to {total}",
                    )
                )
        elif o.status in (OrderStatus.REJECTED.value, OrderStatus.DENIED.value) and (n or o.filled):
            out.append(
                Finding(
                    "order_fills_mismatch",
                    "orders",
                    rid,
                    f"{o.status} order with filled {o.filled} and {n} fills",
                )
            )
    return out


# ---------------------------------------------------------------------------- foreign keys


def _orphan_findings(session: Session) -> list[Finding]:
    out: list[Finding] = []
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_key_constraints:
            if len(fk.columns) != 1:
                continue
            col = next(iter(fk.columns))
            element = fk.elements[0]
            parent_col = element.column
            pk = list(table.primary_key.columns)
            if not pk:
                continue
            query = select(*pk, col).where(col.is_not(None), ~exists().where(parent_col == col))
            for row in session.execute(query):
                out.append(
                    Finding(
                        "orphan_row",
                        table.name,
                        str(row[0]) if len(pk) == 1 else str(tuple(row[: len(pk)])),
                        f"{col.name} {row[-1]} points at no {parent_col.table.name} row",
                    )
                )
    return out


# ------------------------------------------------------------------------- market data


def _market_data_findings(session: Session, data_dir: Path | None) -> list[Finding]:
    if data_dir is None or not Path(data_dir).is_dir():
        return []
    from cryptoorchestrator.platform.data.store import OhlcvStore
    from cryptoorchestrator.platform.errors import CryptoOrchError
    from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms

    store = OhlcvStore(data_dir)
    spans: dict[tuple[str, str, str], tuple[int, int] | None] = {}
    out: list[Finding] = []
    query = (
        select(Trade.id, Trade.symbol, Trade.timestamp, Order.exchange, Bot.timeframe)
        .join(Order, Trade.order_id == Order.id)
        .join(Bot, Trade.bot_id == Bot.id)
        .order_by(Trade.id)
    )
    for t in session.execute(query):
        key = (t.exchange, t.symbol, t.timeframe)
        if key not in spans:
            try:
                info = store.info(*key)
                span = None
                if info is not None and info.first is not None and info.last is not None:
                    span = (info.first, info.last + timeframe_to_ms(t.timeframe))
            except CryptoOrchError:  # not a store key (a paper exchange's name, say)
                span = None
            spans[key] = span
        span = spans[key]
        if span is None:
            continue
        ms = int(t.timestamp.timestamp() * 1000)
        if not span[0] <= ms < span[1]:
            out.append(
                Finding(
                    "trade_outside_market_data",
                    "trades",
                    str(t.id),
                    f"{t.exchange} {t.symbol} at {t.timestamp.isoformat()} is outside the "
                    f"stored {t.timeframe} candles",
                )
            )
    return out


# -------------------------------------------------------------------------------- checks


def find_problems(session: Session, data_dir: Path | None = None) -> list[Finding]:
    """Apply every rule of the module docstring; return the findings (reads only)."""
    findings: list[Finding] = []
    findings += _position_findings(session, rebuild_positions(session))
    findings += _balance_findings(session)
    findings += _order_findings(session)
    findings += _orphan_findings(session)
    findings += _market_data_findings(session, data_dir)
    return findings


def _record(
    session: Session, findings: Iterable[Finding], repaired: set[tuple[str, str]]
) -> tuple[int, int]:
    """Quarantine new findings; resolve open ones no longer found. Return (new, resolved)."""
    now = utcnow()
    found = {(f.kind, f.table, f.row_id): f for f in findings}
    open_rows = session.scalars(
        select(IntegrityFinding).where(IntegrityFinding.resolved_at.is_(None))
    ).all()
    seen = set()
    resolved = 0
    for row in open_rows:
        key = (row.kind, row.table_name, row.row_id)
        if key in found:
            seen.add(key)
            continue
        row.resolved_at = now
        row.resolution = (
            "repaired: rebuilt from fills"
            if (row.table_name, row.row_id) in repaired
            else "no longer found by a later check"
        )
        resolved += 1
    new = 0
    for key, f in found.items():
        if key in seen:
            continue
        resolution = None
        resolved_at = None
        if (f.table, f.row_id) in repaired:
            resolved_at, resolution = now, "repaired: rebuilt from fills"
            resolved += 1
        session.add(
            IntegrityFinding(
                kind=f.kind,
                table_name=f.table,
                row_id=f.row_id[:64],
                reason=f.reason,
                found_at=now,
                resolved_at=resolved_at,
                resolution=resolution,
            )
        )
        new += 1
    session.flush()
    enqueue_integrity_findings(session, [f for k, f in found.items() if k not in seen])
    return new, resolved


def _read_one_snapshot(session: Session) -> None:
    """Make every read of the check see one snapshot, while bots go on writing.

    The rules compare tables (positions with trades, balances with fills) that bots change
    together in one transaction; statements that each saw a different moment would report
    differences that never existed.  PostgreSQL: ``REPEATABLE READ``.  SQLite: an explicit
    ``BEGIN`` (the driver otherwise runs each read in a transaction of its own); WAL keeps the
    snapshot of the first read.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.connection().exec_driver_sql("BEGIN")


def run_check(settings: Settings, *, repair: bool = False, record: bool = True) -> CheckReport:
    """Check the settings' database; quarantine findings; with ``repair``, rebuild positions.

    Findings are recorded in ``integrity_findings`` (``record``), one open row per broken row
    and rule; an open finding a later check no longer sees is marked resolved.  ``repair``
    changes nothing but positions (rebuilt from fills, see :func:`repair_positions`): their
    findings are recorded resolved, and the report lists every change.  Everything else is
    only reported, never fixed.

    Raises
    ------
    StorageError
        The database is not at the code's schema head (run ``cryptoorch db upgrade``).
    """
    from cryptoorchestrator.platform.storage import db

    current, head = db.current_revision(settings), db.head_revision()
    if current != head:
        raise StorageError(
            f"the database is at schema revision {current}, not {head}: run "
            "`cryptoorch db upgrade` first"
        )
    report = CheckReport()
    with db.session_scope(settings) as session:
        _read_one_snapshot(session)
        findings = find_problems(session, Path(settings.data_dir))
        repaired: set[tuple[str, str]] = set()
        if repair:
            report.repaired = repair_positions(session)
            if report.repaired:
                repaired = {
                    (f.table, f.row_id)
                    for f in findings
                    if f.kind in ("position_mismatch", "position_missing")
                }
        report.findings = findings
        if record:
            report.recorded, report.resolved = _record(session, findings, repaired)
    return report


def integrity_health(settings: Settings, *, run: bool = False) -> dict[str, Any]:
    """The admin health route's body: the quarantine's open findings, by kind.

    Cheap by default (one query over ``integrity_findings``, as of the last check); with
    ``run`` it runs the whole check first (:func:`run_check`, recording findings), which
    reads every order, fill and position: for an explicit admin request, not a probe.

    Returns ``{"status": "ok" | "findings", "open_findings": n, "counts": {kind: n},
    "last_found_at": ISO time | None, "checked_at": ISO time | None}`` (``checked_at`` only
    when ``run``).
    """
    from sqlalchemy import func

    from cryptoorchestrator.platform.storage import db

    checked_at = run_check(settings).checked_at.isoformat() if run else None
    with db.session_scope(settings) as session:
        rows = session.execute(
            select(IntegrityFinding.kind, func.count(), func.max(IntegrityFinding.found_at))
            .where(IntegrityFinding.resolved_at.is_(None))
            .group_by(IntegrityFinding.kind)
        ).all()
    counts = {kind: int(n) for kind, n, _ in sorted(rows)}
    last = max((at for _, _, at in rows if at is not None), default=None)
    return {
        "status": "findings" if counts else "ok",
        "open_findings": sum(counts.values()),
        "counts": counts,
        "last_found_at": last.isoformat() if last is not None else None,
        "checked_at": checked_at,
    }
