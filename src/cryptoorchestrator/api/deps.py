"""Dependencies shared by the routers: ``SessionDep``, ``CurrentUser`` and the services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from cryptoorchestrator.api.events import EventHub
from cryptoorchestrator.api.facade import ClusterFacade
from cryptoorchestrator.api.identity import Identity
from cryptoorchestrator.api.proxies import TrustedProxies
from cryptoorchestrator.platform.errors import (
    ForbiddenError,
    InvalidInputError,
    UnauthorizedError,
)
from cryptoorchestrator.platform.exchange.urls import UrlPolicy
from cryptoorchestrator.platform.services.accounts import AccountService
from cryptoorchestrator.platform.services.auth import INVALID_TOKEN, AuthService
from cryptoorchestrator.platform.services.bots import BotService, StrategyValidator
from cryptoorchestrator.platform.services.roles import ROLES
from cryptoorchestrator.platform.services.trading import TradingQueries
from cryptoorchestrator.platform.storage.models import User
from cryptoorchestrator.strategies.registry import registered_strategy

_bearer = HTTPBearer(auto_error=False, description="Access token from /api/auth/login")


#: Threads for closing sessions, apart from the endpoints' pool: a session waiting to close still
#: holds its connection, so if closes queued behind endpoints that wait for a connection, a
#: burst larger than the connection pool would deadlock until the pool timeout.
_CLOSERS = anyio.CapacityLimiter(8)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """Yield the request's session; routes commit what they change, the rest is rolled back.

    Creating a session does no I/O, so this runs on the event loop; closing one still inside a
    transaction (a rollback round trip) goes to a thread of its own pool, any other is free.
    """
    session: Session = request.app.state.session_factory()
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

    The same answer as the rate limiter's (``app.state.proxies``): a forged
    ``X-Forwarded-For`` from an untrusted peer never reaches the audit log.
    """
    proxies: TrustedProxies = request.app.state.proxies
    return proxies.client_ip(request.scope)


def get_auth(request: Request, db: SessionDep) -> AuthService:
    """Return the auth service for this request."""
    identity: Identity = request.app.state.identity
    return AuthService(
        db,
        request.app.state.auth_config,
        request.app.state.secret_box,
        on_revoke=identity.revoked,
    )


AuthDep = Annotated[AuthService, Depends(get_auth)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None:
        raise UnauthorizedError("Not authenticated: send 'Authorization: Bearer <access token>'")
    return creds.credentials


async def current_user_id(request: Request, creds: Bearer) -> int:
    """Return the id of the bearer token's active user, or raise 401 saying why.

    The token must be current: its user active, its session (``sid``) not revoked and its
    epoch (``ep``) the user's.  :class:`Identity` caches all three, so a warm request does no
    database work here.
    """
    identity: Identity = request.app.state.identity
    token = _token(creds)
    claims = identity.claims(token)
    if not identity.current(claims):
        await run_in_threadpool(identity.check, token, claims)
    request.state.access_claims = claims
    return claims.user_id


CurrentUserId = Annotated[int, Depends(current_user_id)]


async def current_user(request: Request, db: SessionDep, creds: Bearer) -> User:
    """Return the bearer token's user (the row, for routes that read or change it).

    Always asks the database (these routes change credentials or read the profile), in the
    request's session; the claims are left on ``request.state.access_claims``.
    """
    identity: Identity = request.app.state.identity
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


async def get_accounts(request: Request, db: SessionDep, user_id: CurrentUserId) -> AccountService:
    """Return the exchange-account service of the current user (apiUrl checked against the
    operator's allowed hosts)."""
    policy = UrlPolicy.from_settings(request.app.state.settings)
    return AccountService(db, user_id, request.app.state.secret_box, policy)


AccountsDep = Annotated[AccountService, Depends(get_accounts)]


def get_cluster(request: Request) -> ClusterFacade:
    """Return the cluster facade installed on the app."""
    cluster: ClusterFacade = request.app.state.cluster
    return cluster


ClusterDep = Annotated[ClusterFacade, Depends(get_cluster)]


def get_hub(request: Request) -> EventHub:
    """Return the bot event hub."""
    hub: EventHub = request.app.state.event_hub
    return hub


HubDep = Annotated[EventHub, Depends(get_hub)]
