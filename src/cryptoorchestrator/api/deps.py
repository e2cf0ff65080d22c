"""Dependencies shared by the routers: ``ContextDep``, ``SessionDep``, ``CurrentUser`` and the
services built from the app's :class:`~cryptoorchestrator.api.context.AppContext`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPAuthorizationCredentials, OAuth2PasswordBearer
from sqlalchemy.orm import Session

from cryptoorchestrator.api.context import AppContext, context_of
from cryptoorchestrator.api.errors import Starting
from cryptoorchestrator.api.events import EventHub
from cryptoorchestrator.api.facade import ClusterFacade
from cryptoorchestrator.platform.errors import (
    ForbiddenError,
    InvalidInputError,
    UnauthorizedError,
)
from cryptoorchestrator.platform.exchange.urls import UrlPolicy
from cryptoorchestrator.platform.services.accounts import AccountService
from cryptoorchestrator.platform.services.auth import INVALID_TOKEN, AuthService
from cryptoorchestrator.platform.services.bots import BotService, StrategyValidator
from cryptoorchestrator.platform.services.records import RiskRecords, RunRecords
from cryptoorchestrator.platform.services.roles import ROLES
from cryptoorchestrator.platform.services.runs import check_run_quota
from cryptoorchestrator.platform.services.trade_reads import TradeReads
from cryptoorchestrator.platform.services.trading import TradingQueries
from cryptoorchestrator.platform.storage.models import User
from cryptoorchestrator.strategies.registry import registered_strategy

#: Where Swagger UI's Authorize dialog (OAuth2 password flow) sends the email and password.
TOKEN_URL = "/api/auth/token"  # noqa: S105 (a path, not a secret)
#: The security scheme's name in the OpenAPI document.
SCHEME_NAME = "OAuth2PasswordBearer"


class PasswordBearer(OAuth2PasswordBearer):
    """The bearer access token, declared as OAuth2's password flow.

    The token is read exactly as ``HTTPBearer`` reads it (``Authorization: Bearer <token>``,
    None when absent or of another scheme); the OAuth2 declaration only lets Swagger UI's
    Authorize dialog ask for an email and a password and fetch the token from
    :data:`TOKEN_URL`.
    """

    async def __call__(  # type: ignore[override]
        self, request: Request
    ) -> HTTPAuthorizationCredentials | None:
        """Return the request's bearer credentials, or None without any."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            return None
        return HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)


_bearer = PasswordBearer(
    tokenUrl=TOKEN_URL,
    scheme_name=SCHEME_NAME,
    auto_error=False,
    description="Access token from POST /api/auth/login (JSON) or POST /api/auth/token "
    "(form: username = email, password; with MFA, password = '<password>:<TOTP or backup "
    "code>' or the totp_code form field).",
)


#: Threads for closing sessions, apart from the endpoints' pool: a session waiting to close still
#: holds its connection, so if closes queued behind endpoints that wait for a connection, a
#: burst larger than the connection pool would deadlock until the pool timeout.
_CLOSERS = anyio.CapacityLimiter(8)


async def get_context(conn: HTTPConnection) -> AppContext:
    """Return the app's context (for HTTP routes and WebSockets alike)."""
    # A coroutine, like every dependency here that does no I/O: FastAPI would run a plain
    # function on a worker thread, and the hot routes' requests would wait for one.
    return context_of(conn.app)


ContextDep = Annotated[AppContext, Depends(get_context)]

#: The health routes that answer 503 ``starting`` until start-up is over.  Liveness
#: (``/api/health``) is not one: the process is alive, and a liveness probe that failed while
#: the database is still coming up would have an orchestrator restart a healthy API.
STARTING_PATHS = frozenset(("/api/health/detailed",))


async def not_starting(request: Request, context: ContextDep) -> None:
    """Raise :class:`~cryptoorchestrator.api.errors.Starting` on health routes during start-up.

    A dependency of the health router (added where the app includes it), run before the
    route's own dependencies, which may need the database that is not ready yet.
    """
    readiness = context.readiness
    if not readiness.ready and request.url.path in STARTING_PATHS:
        raise Starting(readiness.reasons())


async def get_session(context: ContextDep) -> AsyncIterator[Session]:
    """Yield the request's session; routes commit what they change, the rest is rolled back.

    Creating a session does no I/O, so this runs on the event loop; closing one still inside a
    transaction (a rollback round trip) goes to a thread of its own pool, any other is free.
    """
    session = context.session_factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.close, limiter=_CLOSERS)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def client_ip(request: Request) -> str | None:
    """Return the client's address (for audit rows): the peer, or what a trusted proxy saw.

    The same answer as the rate limiter's (``AppContext.proxies``): a forged
    ``X-Forwarded-For`` from an untrusted peer never reaches the audit log.
    """
    return context_of(request.app).proxies.client_ip(request.scope)


async def get_auth(context: ContextDep, db: SessionDep) -> AuthService:
    """Return the auth service for this request."""
    return AuthService(
        db,
        context.auth_config,
        context.secret_box,
        on_revoke=context.identity.revoked,
    )


AuthDep = Annotated[AuthService, Depends(get_auth)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None:
        raise UnauthorizedError("Not authenticated: send 'Authorization: Bearer <access token>'")
    return creds.credentials


async def current_user_id(request: Request, context: ContextDep, creds: Bearer) -> int:
    """Return the id of the bearer token's active user, or raise 401 saying why.

    The token must be current: its user active, its session (``sid``) not revoked and its
    epoch (``ep``) the user's.  :class:`Identity` caches all three, so a warm request does no
    database work here.
    """
    identity = context.identity
    token = _token(creds)
    claims = identity.claims(token)
    if not identity.current(claims):
        await run_in_threadpool(identity.check, token, claims)
    request.state.access_claims = claims
    return claims.user_id


CurrentUserId = Annotated[int, Depends(current_user_id)]


async def current_user(
    request: Request, context: ContextDep, db: SessionDep, creds: Bearer
) -> User:
    """Return the bearer token's user (the row, for routes that read or change it).

    Always asks the database (these routes change credentials or read the profile), in the
    request's session; the claims are left on ``request.state.access_claims``.
    """
    identity = context.identity
    token = _token(creds)
    claims = identity.claims(token)

    def load() -> User | None:
        identity.check(token, claims, db)
        return db.get(User, claims.user_id)

    user = await run_in_threadpool(load)
    if user is None or not user.is_active or user.auth_epoch != claims.epoch:
        identity.forget(claims.user_id)
        raise UnauthorizedError(INVALID_TOKEN)
    request.state.access_claims = claims
    return user


CurrentUser = Annotated[User, Depends(current_user)]

#: Roles from least to most privileged (``ROLES``): each may do what the ones before it may.
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def has_role(user: User, role: str) -> bool:
    """Return whether ``user``'s role is ``role`` or a more privileged one.

    An unknown stored role ranks below every real one: it grants nothing (fail closed).
    """
    return _RANK.get(user.role, -1) >= _RANK[role]


def require_role(role: str) -> Callable[[User], Awaitable[User]]:
    """Return a dependency that yields the current user if their role is at least ``role``.

    Parameters
    ----------
    role
        ``"viewer"``, ``"trader"`` or ``"admin"``.

    Raises
    ------
    ForbiddenError
        (from the dependency) when the user's role ranks below ``role``; 403 naming the role.
    """
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}; one of {ROLES}")

    async def dependency(user: CurrentUser) -> User:
        if not has_role(user, role):
            raise ForbiddenError(
                f"this action needs the {role!r} role (or higher); your role is {user.role!r}"
            )
        return user

    dependency.__name__ = f"require_{role}"
    return dependency


#: The current user, who may change things (bots, accounts, runs, their own risk settings).
TraderUser = Annotated[User, Depends(require_role("trader"))]
#: The current user, who operates the platform (global kill switch, portfolio limits).
AdminUser = Annotated[User, Depends(require_role("admin"))]


def registry_validator() -> StrategyValidator:
    """Return the validator of a bot's strategy name and parameters, backed by the registry.

    Names go through :func:`registered_strategy`: a tenant only ever picks a built-in or an
    operator-registered strategy, and a path or module reference is refused as unknown without
    being imported.
    """

    def validate(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        strategy = registered_strategy(name)
        try:
            # validate_live: the parameters, and the history a live bot would need for them.
            checked = strategy.validate_live(dict(params))
        except InvalidInputError as exc:
            field = exc.field if exc.field.startswith("params") else f"params.{exc.field}"
            raise InvalidInputError(field, exc.reason, allowed=exc.allowed) from exc
        return dict(checked) if checked is not None else dict(params)

    return validate


async def get_bots(db: SessionDep, user_id: CurrentUserId) -> BotService:
    """Return the bot service of the current user."""
    return BotService(db, user_id, registry_validator())


BotsDep = Annotated[BotService, Depends(get_bots)]


async def get_trading(db: SessionDep, user_id: CurrentUserId) -> TradingQueries:
    """Return the trading-record queries of the current user."""
    return TradingQueries(db, user_id)


TradingDep = Annotated[TradingQueries, Depends(get_trading)]


async def get_accounts(
    context: ContextDep, db: SessionDep, user_id: CurrentUserId
) -> AccountService:
    """Return the exchange-account service of the current user (apiUrl checked against the
    operator's allowed hosts)."""
    policy = UrlPolicy.from_settings(context.settings)
    return AccountService(db, user_id, context.secret_box, policy)


AccountsDep = Annotated[AccountService, Depends(get_accounts)]


async def get_runs(db: SessionDep, user: CurrentUser) -> RunRecords:
    """Return the stored backtest and optimization runs of the current user."""
    return RunRecords(db, user.id)


RunsDep = Annotated[RunRecords, Depends(get_runs)]


async def get_risk_records(db: SessionDep, user: CurrentUser) -> RiskRecords:
    """Return the risk limits and events that apply to the current user's bots."""
    return RiskRecords(db, user.id)


RiskRecordsDep = Annotated[RiskRecords, Depends(get_risk_records)]


async def get_cluster(context: ContextDep) -> ClusterFacade:
    """Return the app's cluster facade."""
    return context.cluster


ClusterDep = Annotated[ClusterFacade, Depends(get_cluster)]


async def get_hub(context: ContextDep) -> EventHub:
    """Return the bot event hub."""
    return context.event_hub


HubDep = Annotated[EventHub, Depends(get_hub)]


async def get_trade_reads(context: ContextDep) -> TradeReads:
    """Return the read backend of ``/api/trades`` chosen for the app's database."""
    return context.trades


TradeReadsDep = Annotated[TradeReads, Depends(get_trade_reads)]


def run_quota(context: ContextDep, db: SessionDep, user: TraderUser) -> None:
    """Refuse a new run (409) while the user has ``max_active_runs`` queued or running."""
    check_run_quota(db, user.id, context.options.max_active_runs)


#: Checks the current trader's run quota before a backtest or optimization is submitted.
RunQuota = Annotated[None, Depends(run_quota)]
