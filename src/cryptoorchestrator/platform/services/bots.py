"""Bot configurations: create, read, update, archive, and record desired state and status events.

Every query is scoped to one user: another user's bot is "not found", never "forbidden", so ids
reveal nothing.  Running the bot is the cluster's job (issue 8); this service only persists what
the user wants (``desired_state``) and the status transitions the cluster reports.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import exists, func, literal, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import ConflictError, InvalidInputError, NotFoundError
from cryptoorchestrator.platform.model import TIMEFRAMES, BotMode, BotStatus, normalize_symbol
from cryptoorchestrator.platform.services.pagination import (
    INT_MAX,
    MAX_LIMIT,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
    page_of,
)
from cryptoorchestrator.platform.storage.models import (
    AuditLog,
    Bot,
    BotStatusEvent,
    ExchangeAccount,
    Order,
    Trade,
)
from cryptoorchestrator.platform.storage.types import UTCDateTime, utcnow
from cryptoorchestrator.platform.validation import MONEY_RULE, check_json, check_money, check_text

#: Validates a strategy name and its parameters; returns the parameters with defaults filled in.
#: Raises InvalidInputError / NotFoundError.  Supplied by a layer that can see the strategies.
StrategyValidator = Callable[[str, Mapping[str, Any]], dict[str, Any]]

RANGES: dict[str, tuple[Decimal, Decimal]] = {
    "risk_per_trade": (Decimal("0.1"), Decimal("5.0")),
    "max_position_size": (Decimal(1), Decimal(100)),
    "stop_loss": (Decimal("0.01"), Decimal(100)),
    "take_profit": (Decimal("0.01"), Decimal(1000)),
    "trailing_stop": (Decimal("0.01"), Decimal(100)),
}
#: Wire names of fields, so that errors name the field the user actually sent.
WIRE_NAMES = {
    "name": "name",
    "trading_pair": "tradingPair",
    "strategy": "strategy",
    "params": "params",
    "timeframe": "timeframe",
    "exchange_account_id": "exchangeAccountId",
    "mode": "mode",
    "risk_per_trade": "riskPerTrade",
    "max_position_size": "maxPositionSize",
    "stop_loss": "stopLoss",
    "take_profit": "takeProfit",
    "trailing_stop": "trailingStop",
    "starting_balance": "startingBalance",
    "actor_group": "actorGroup",
}
EDITABLE = frozenset(WIRE_NAMES)
REQUIRED = ("name", "trading_pair", "strategy")
#: Fields that ``None`` clears; every other field may be left out of an update but not nulled.
NULLABLE = frozenset(
    {
        "exchange_account_id",
        "stop_loss",
        "take_profit",
        "trailing_stop",
        "starting_balance",
        "actor_group",
    }
)
#: Free-text fields, checked for characters no database stores before anything else.
TEXT_FIELDS = ("name", "trading_pair", "strategy", "timeframe", "mode", "actor_group")
_GROUP = re.compile(r"^[a-z0-9_-]{1,40}$")
DEFAULTS: dict[str, Any] = {
    "params": {},
    "timeframe": "1h",
    "mode": BotMode.PAPER.value,
    "risk_per_trade": Decimal(1),
    "max_position_size": Decimal(10),
}


@dataclass(frozen=True)
class BotStatusView:
    """A bot's status and its most recent transitions."""

    bot: Bot
    events: list[BotStatusEvent]


def _decimal(field: str, value: Any, *, allowed: str | None = None) -> Decimal:
    """Return ``value`` as a Decimal that a money column stores exactly, or raise naming it."""
    if isinstance(value, float):
        value = repr(value)  # the shortest text that round-trips, not the binary expansion
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidInputError(WIRE_NAMES.get(field, field), "must be a number") from exc
    if not number.is_finite():
        raise InvalidInputError(WIRE_NAMES.get(field, field), "must be a finite number")
    return check_money(WIRE_NAMES.get(field, field), number, allowed=allowed)


class BotService:
    """CRUD and state records of one user's bots.

    Parameters
    ----------
    session
        The request's database session.
    user_id
        The acting user; every query is restricted to their bots.
    strategy_validator
        Checks strategy names and parameters against the strategy registry; ``None`` while no
        registry is installed (then only the name's shape is checked).
    every_user
        Read and control every user's bots, not only the acting user's: the operator at the
        host (the CLI and the notebook SDK, who hold the database and its key anyway).  New
        bots still belong to ``user_id``.  Never set for an HTTP request.
    """

    def __init__(
        self,
        session: Session,
        user_id: int,
        strategy_validator: StrategyValidator | None = None,
        *,
        every_user: bool = False,
    ) -> None:
        self.session = session
        self.user_id = user_id
        self.strategy_validator = strategy_validator
        self.every_user = every_user

    # ---------------------------------------------------------------------------- validation
    def validate(self, values: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
        """Return ``values`` normalized and checked; raise InvalidInputError naming the field."""
        out = {k: v for k, v in values.items() if k in EDITABLE}
        for key, value in out.items():
            if value is None and key not in NULLABLE and partial:
                raise InvalidInputError(
                    WIRE_NAMES[key], "may not be null; leave it out to keep the current value"
                )
            if key in TEXT_FIELDS and isinstance(value, str):
                check_text(WIRE_NAMES[key], value)
        if not partial:
            for key in REQUIRED:
                if out.get(key) in (None, ""):
                    raise InvalidInputError(WIRE_NAMES[key], "is required")
            for key, default in DEFAULTS.items():
                if out.get(key) is None:
                    out[key] = default() if callable(default) else default
        if "name" in out:
            if not isinstance(out["name"], str):
                raise InvalidInputError("name", "must be text", allowed="1-100 characters")
            name = out["name"].strip()
            if not 1 <= len(name) <= 100:
                raise InvalidInputError("name", "must be 1 to 100 characters", allowed="1-100")
            out["name"] = name
        if "trading_pair" in out:
            if not isinstance(out["trading_pair"], str):
                raise InvalidInputError("tradingPair", "must be text", allowed="BASE/QUOTE")
            out["trading_pair"] = normalize_symbol(out["trading_pair"], field="tradingPair")
        if "strategy" in out and not isinstance(out["strategy"], str):
            raise InvalidInputError("strategy", "must be text", allowed="a strategy name")
        if out.get("params") is not None:
            if not isinstance(out["params"], Mapping):
                raise InvalidInputError("params", "must be an object", allowed="{name: value}")
            out["params"] = check_json("params", dict(out["params"]))
        if out.get("timeframe") is not None and out["timeframe"] not in TIMEFRAMES:
            raise InvalidInputError("timeframe", "unknown timeframe", allowed=TIMEFRAMES)
        if out.get("mode") is not None and out["mode"] not in {m.value for m in BotMode}:
            raise InvalidInputError("mode", "unknown mode", allowed=[m.value for m in BotMode])
        for key, (lo, hi) in RANGES.items():
            if out.get(key) is None:
                continue
            number = _decimal(key, out[key], allowed=f"{lo}-{hi}")
            if not lo <= number <= hi:
                raise InvalidInputError(
                    WIRE_NAMES[key], f"{number} is out of range", allowed=f"{lo}-{hi}"
                )
            out[key] = number
        if out.get("starting_balance") is not None:
            balance = _decimal(
                "starting_balance", out["starting_balance"], allowed=f"greater than 0, {MONEY_RULE}"
            )
            if balance <= 0:
                raise InvalidInputError(
                    "startingBalance", "must be positive", allowed=f"greater than 0, {MONEY_RULE}"
                )
            out["starting_balance"] = balance
        if out.get("actor_group") is not None:
            group = str(out["actor_group"])
            if not _GROUP.match(group):
                raise InvalidInputError(
                    "actorGroup", "malformed group name", allowed="1-40 of a-z 0-9 _ -"
                )
            out["actor_group"] = group
        if out.get("exchange_account_id") is not None:
            owned = self.session.scalar(
                select(ExchangeAccount.id).where(
                    ExchangeAccount.id == out["exchange_account_id"],
                    ExchangeAccount.user_id == self.user_id,
                )
            )
            if owned is None:
                raise InvalidInputError("exchangeAccountId", "no such exchange account")
        return out

    def _check_strategy(self, strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
        checked = (
            dict(params)
            if self.strategy_validator is None
            else (self.strategy_validator(strategy, params))
        )
        # Read as the runtime reads it (``BotSettings.from_row``): any true value asks to short.
        if bool(checked.get("short", False)):
            raise InvalidInputError(
                "params.short",
                "bots cannot short: live and paper accounts trade spot, where a bot can only "
                "sell what it holds (the runtime would refuse to start it); backtests can short",
                allowed="false",
            )
        return checked

    # ---------------------------------------------------------------------------------- CRUD
    def _query(self) -> Any:
        query = select(Bot).where(Bot.archived_at.is_(None))
        return query if self.every_user else query.where(Bot.user_id == self.user_id)

    def get(self, bot_id: int) -> Bot:
        """Return the user's bot; NotFoundError if it is missing, archived or someone else's."""
        bot = self.session.scalar(self._query().where(Bot.id == bot_id))
        if bot is None:
            raise NotFoundError(f"bot {bot_id} not found")
        return bot

    def find(self, ref: int | str) -> Bot:
        """Return a bot by id or by name.

        Raises
        ------
        NotFoundError
            If no visible bot has that id or name.
        ConflictError
            If several users' bots share the name (``every_user``): use the id.
        """
        if isinstance(ref, int) or str(ref).isdigit():
            return self.get(int(ref))
        rows = list(self.session.scalars(self._query().where(Bot.name == str(ref)).limit(2)))
        if not rows:
            raise NotFoundError(f"bot {ref!r} not found")
        if len(rows) > 1:
            raise ConflictError(f"several users have a bot named {ref!r}; give its id instead")
        return rows[0]

    def all_bots(self) -> list[Bot]:
        """Return every visible bot, newest first (all pages of :meth:`list_bots`)."""
        bots: list[Bot] = []
        cursor: str | None = None
        while True:
            page = self.list_bots(limit=MAX_LIMIT, cursor=cursor)
            bots.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return bots

    def list_bots(self, *, limit: int = 100, cursor: str | None = None) -> Page[Bot]:
        """Return the user's bots, newest first."""
        check_limit(limit)
        query = self._query()
        if cursor:
            at, row_id = decode_cursor(cursor, max_id=INT_MAX)  # bots.id is INTEGER
            query = query.where(
                tuple_(Bot.created_at, Bot.id) < tuple_(literal(at, UTCDateTime()), literal(row_id))
            )
        rows = list(
            self.session.scalars(
                query.order_by(Bot.created_at.desc(), Bot.id.desc()).limit(limit + 1)
            )
        )
        return page_of(rows, limit, lambda r: encode_cursor(r.created_at, r.id))

    def create(self, values: Mapping[str, Any]) -> Bot:
        """Create a bot from validated ``values``; ConflictError if the name is taken."""
        data = self.validate(values)
        data["params"] = self._check_strategy(data["strategy"], data.get("params") or {})
        if data["mode"] == BotMode.LIVE.value and data.get("exchange_account_id") is None:
            raise InvalidInputError("exchangeAccountId", "live bots need an exchange account")
        self._check_name_free(data["name"])
        bot = Bot(user_id=self.user_id, **data)
        self.session.add(bot)
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise ConflictError(f"a bot named {data['name']!r} already exists") from exc
        self._audit("bot.created", bot.id, {"name": bot.name, "strategy": bot.strategy})
        return bot

    def _check_name_free(self, name: str, except_id: int | None = None) -> None:
        query = select(Bot.id).where(Bot.user_id == self.user_id, Bot.name == name)
        if except_id is not None:
            query = query.where(Bot.id != except_id)
        if self.session.scalar(query) is not None:
            raise ConflictError(f"a bot named {name!r} already exists")

    def update(self, bot_id: int, values: Mapping[str, Any]) -> Bot:
        """Change some fields of a stopped bot; ConflictError while it should be running."""
        bot = self.get(bot_id)
        changes = self.validate(values, partial=True)
        if not changes:
            return bot
        trading = set(changes) - {"name"}
        if trading and bot.desired_state == "running":
            raise ConflictError("stop the bot before changing its trading configuration")
        if "strategy" in changes or "params" in changes:
            strategy = changes.get("strategy", bot.strategy)
            params = changes.get("params", bot.params) or {}
            changes["params"] = self._check_strategy(strategy, params)
        mode = changes.get("mode", bot.mode)
        account = changes.get("exchange_account_id", bot.exchange_account_id)
        if mode == BotMode.LIVE.value and account is None:
            raise InvalidInputError("exchangeAccountId", "live bots need an exchange account")
        if "name" in changes:
            self._check_name_free(changes["name"], except_id=bot.id)
        for key, value in changes.items():
            setattr(bot, key, value)
        self.session.flush()
        self._audit("bot.updated", bot.id, {"fields": sorted(WIRE_NAMES[k] for k in changes)})
        return bot

    def delete(self, bot_id: int) -> str:
        """Delete a stopped bot; archive it instead when it has orders or trades.

        Returns ``"deleted"`` or ``"archived"``.
        """
        bot = self.get(bot_id)
        if bot.desired_state == "running" or bot.status in (BotStatus.RUNNING, BotStatus.STARTING):
            raise ConflictError("stop the bot before deleting it")
        has_history = self.session.scalar(
            select(exists().where(Order.bot_id == bot.id) | exists().where(Trade.bot_id == bot.id))
        )
        if has_history:
            bot.archived_at = utcnow()
            # Free the name for a new bot; the archived one keeps its history under a suffix.
            bot.name = f"{bot.name[:80]}~archived-{bot.id}"
            outcome = "archived"
        else:
            self.session.delete(bot)
            outcome = "deleted"
        self.session.flush()
        self._audit(f"bot.{outcome}", bot_id, None)
        return outcome

    # ----------------------------------------------------------------------------- state
    def audit_control(self, bot: Bot, state: str) -> None:
        """Record who asked a bot to start or stop (the cluster persists the state itself)."""
        self._audit(f"bot.{'start' if state == 'running' else 'stop'}", bot.id, None)

    def status(self, bot_id: int, *, events: int = 20) -> BotStatusView:
        """Return the bot and its latest status events, newest first."""
        bot = self.get(bot_id)
        rows = self.session.scalars(
            select(BotStatusEvent)
            .where(BotStatusEvent.bot_id == bot.id)
            .order_by(BotStatusEvent.at.desc(), BotStatusEvent.id.desc())
            .limit(events)
        )
        return BotStatusView(bot, list(rows))

    def counts_by_status(self) -> dict[str, int]:
        """Return how many of the user's bots are in each status."""
        rows = self.session.execute(
            select(Bot.status, func.count())
            .where(Bot.user_id == self.user_id, Bot.archived_at.is_(None))
            .group_by(Bot.status)
        )
        return {str(status): int(n) for status, n in rows}

    def _audit(self, action: str, bot_id: int, details: dict[str, Any] | None) -> None:
        self.session.add(
            AuditLog(
                user_id=self.user_id,
                action=action,
                target_type="bot",
                target_id=str(bot_id),
                details=details,
            )
        )


def bots_by_status(session: Session, user_id: int | None = None) -> dict[str, int]:
    """Return how many (non-archived) bots are in each status, for health checks.

    Every user's bots (the operator's view), or only ``user_id``'s.
    """
    query = select(Bot.status, func.count()).where(Bot.archived_at.is_(None))
    if user_id is not None:
        query = query.where(Bot.user_id == user_id)
    rows = session.execute(query.group_by(Bot.status))
    counts = {s.value: 0 for s in BotStatus}
    for status, n in rows:
        counts[str(status)] = int(n)
    return counts
