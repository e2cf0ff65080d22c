"""One exception hierarchy for the whole platform.

Fatal errors (bad configuration, bad input, a bug in user code) are kept apart from retryable
ones (an exchange that is down or rate limiting us).  The API maps this hierarchy to HTTP status
codes in one place, and the CLI prints ``str(error)`` as one line.

Domain *rejections* (a risk check that denies an order, an order below the minimum notional) are
values, not exceptions: see ``platform.model``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class CryptoOrchError(Exception):
    """Base class of every error the platform raises on purpose."""

    code: str = "error"

    def to_dict(self) -> dict[str, Any]:
        """Return the error as the API's JSON error body (``code``, ``message``, ``details``)."""
        return {"code": self.code, "message": str(self), "details": []}


class ConfigError(CryptoOrchError):
    """The platform's own configuration is wrong (settings, environment, missing files)."""

    code = "config_error"


class InvalidInputError(CryptoOrchError, ValueError):
    """A user-supplied value is wrong; the message names the field and what is allowed.

    Parameters
    ----------
    field
        Dotted path of the offending field (``"params.fast"``, ``"timeframe"``).
    message
        What was wrong, in words.
    allowed
        The allowed values or range, shown to the user.
    rows
        Offending row indices for data errors (at most a few are shown).
    """

    code = "invalid_input"

    def __init__(
        self,
        field: str,
        message: str,
        *,
        allowed: str | Iterable[Any] | None = None,
        rows: Iterable[int] | None = None,
    ) -> None:
        self.field = field
        self.reason = message
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        self.rows = list(rows)[:20] if rows is not None else []
        text = f"{field}: {message}"
        if allowed:
            text += f" (allowed: {allowed})"
        if self.rows:
            more = "" if len(self.rows) < 20 else ", ..."
            text += f" [rows: {', '.join(str(r) for r in self.rows)}{more}]"
        super().__init__(text)

    def to_dict(self) -> dict[str, Any]:
        """Return the error body with one field detail."""
        detail: dict[str, Any] = {"field": self.field, "message": self.reason}
        if self.allowed:
            detail["allowed"] = self.allowed
        if self.rows:
            detail["rows"] = self.rows
        return {"code": self.code, "message": str(self), "details": [detail]}


class NotFoundError(CryptoOrchError):
    """A named thing (strategy, dataset, bot, run) does not exist."""

    code = "not_found"


class ConflictError(CryptoOrchError):
    """The request conflicts with the current state (duplicate name, bot already running)."""

    code = "conflict"


class DataError(CryptoOrchError):
    """Market data is unreadable, has the wrong schema, or fails validation."""

    code = "data_error"


class StorageError(CryptoOrchError):
    """The database is unreachable or refused an operation."""

    code = "storage_error"


class StrategyError(CryptoOrchError):
    """User strategy code raised; names the strategy and the parameters it ran with."""

    code = "strategy_error"

    def __init__(self, strategy: str, params: Mapping[str, Any], cause: BaseException) -> None:
        self.strategy = strategy
        self.params = dict(params)
        self.cause = cause
        super().__init__(
            f"strategy {strategy!r} with params {self.params} raised "
            f"{type(cause).__name__}: {cause}"
        )


class ExchangeError(CryptoOrchError):
    """An exchange call failed; ``exchange_message`` keeps the exchange's own words."""

    code = "exchange_error"
    retryable: bool = False

    def __init__(self, message: str, *, exchange_message: str | None = None) -> None:
        self.exchange_message = exchange_message
        super().__init__(message)


class RetryableExchangeError(ExchangeError):
    """Network failure, timeout, rate limit, exchange unavailable: safe to retry reads."""

    code = "exchange_unavailable"
    retryable = True


class RateLimitedError(RetryableExchangeError):
    """The exchange asked us to slow down (HTTP 429/418)."""

    code = "exchange_rate_limited"


class FatalExchangeError(ExchangeError):
    """Authentication, permissions, insufficient funds, invalid order: retrying cannot help."""

    code = "exchange_rejected"


class AuthenticationError(FatalExchangeError):
    """The exchange rejected our credentials or signature."""

    code = "exchange_auth_failed"


class InsufficientFundsError(FatalExchangeError):
    """The account lacks the balance for the order."""

    code = "insufficient_funds"


class InvalidOrderError(FatalExchangeError):
    """The exchange refused the order (filters, precision, unknown symbol)."""

    code = "invalid_order"


class CircuitOpenError(RetryableExchangeError):
    """The circuit breaker of an exchange account is open: calls fail fast until it probes."""

    code = "circuit_open"


class CancelledError(CryptoOrchError):
    """A long-running job (sweep, backtest run) was cancelled by the user."""

    code = "cancelled"


class UnauthorizedError(CryptoOrchError):
    """Missing, invalid or expired credentials (the message says which, e.g. "Token expired")."""

    code = "unauthorized"


class MfaRequiredError(UnauthorizedError):
    """The password was right but the account needs a TOTP or backup code as well."""

    code = "mfa_required"


class ForbiddenError(CryptoOrchError):
    """The caller is known but may not do this."""

    code = "forbidden"


class AccountLockedError(CryptoOrchError):
    """Too many failed logins; the account is locked until ``retry_after`` seconds pass."""

    code = "account_locked"

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class UnavailableError(CryptoOrchError):
    """A capability is not available (not built, not configured, or down): ``not available: X``."""

    code = "not_available"


class OrderNotFoundError(FatalExchangeError):
    """The exchange does not know the order (by exchange id or client order id)."""

    code = "order_not_found"


class OrderStateUnknownError(RetryableExchangeError):
    """An order was sent, its answer was lost, and the exchange could not be asked about it.

    The order may or may not exist: reconcile later by ``client_order_id``, never resend blindly.
    """

    code = "order_state_unknown"

    def __init__(
        self, message: str, *, client_order_id: str, exchange_message: str | None = None
    ) -> None:
        self.client_order_id = client_order_id
        super().__init__(message, exchange_message=exchange_message)


class IllegalOrderTransitionError(ConflictError):
    """An order event does not apply to the order's status (a final order cannot move on).

    Raised by :func:`cryptoorchestrator.platform.model.orders.apply`; names the status, the
    event and the statuses the event may arrive in.
    """

    code = "illegal_order_transition"

    def __init__(self, status: str, event: str, allowed: Iterable[str]) -> None:
        self.status = status
        self.event = event
        self.allowed = tuple(allowed)
        where = ", ".join(self.allowed) or "none"
        super().__init__(
            f"{event} cannot apply to an order in status {status!r} (it applies in: {where})"
        )
