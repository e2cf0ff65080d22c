"""Dependencies shared by the routers: ``SessionDep``, ``CurrentUser`` and the services."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Mapping
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
from cryptoorchestrator.platform.errors import InvalidInputError, NotFoundError, UnauthorizedError
from cryptoorchestrator.platform.services.accounts import AccountService
from cryptoorchestrator.platform.services.auth import INVALID_TOKEN, AuthService
from cryptoorchestrator.platform.services.bots import BotService, StrategyValidator
from cryptoorchestrator.platform.services.trading import TradingQueries
from cryptoorchestrator.platform.storage.models import User

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
    """Return the client's address (for audit rows)."""
    return request.client.host if request.client else None


def get_auth(request: Request, db: SessionDep) -> AuthService:
    """Return the auth service for this request."""
    return AuthService(db, request.app.state.auth_config, request.app.state.secret_box)


AuthDep = Annotated[AuthService, Depends(get_auth)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None:
        raise UnauthorizedError("Not authenticated: send 'Authorization: Bearer <access token>'")
    return creds.credentials


async def current_user_id(request: Request, creds: Bearer) -> int:
    """Return the id of the bearer token's active user, or raise 401 saying why.

    The token and the user's activity are cached by :class:`Identity`, so a warm request does
    no database work here.
    """
    identity: Identity = request.app.state.identity
    user_id = identity.user_id(_token(creds))
    if not identity.active_cached(user_id):
        await run_in_threadpool(identity.check_active, user_id)
    return user_id


CurrentUserId = Annotated[int, Depends(current_user_id)]


async def current_user(request: Request, db: SessionDep, creds: Bearer) -> User:
    """Return the bearer token's user (the row, for routes that read or change it)."""
    identity: Identity = request.app.state.identity
    user_id = identity.user_id(_token(creds))
    user = await run_in_threadpool(db.get, User, user_id)
    if user is None or not user.is_active:
        identity.forget(user_id)
        raise UnauthorizedError(INVALID_TOKEN)
    identity.remember_active(user_id)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def registry_validator() -> StrategyValidator | None:
    """Return a validator backed by the strategy registry, or None while it is not installed.

    Looked up per request, so the registry is used as soon as its module exists.
    """
    try:
        registry = importlib.import_module("cryptoorchestrator.strategies.registry")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("cryptoorchestrator.strategies"):
            return None
        raise
    get_strategy = registry.get_strategy

    def validate(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        try:
            strategy = get_strategy(name)
        except (NotFoundError, KeyError) as exc:
            raise InvalidInputError("strategy", f"unknown strategy {name!r}") from exc
        check = getattr(strategy, "validate_params", None)
        if check is None:
            return dict(params)
        try:
            checked = check(dict(params))
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
    """Return the exchange-account service of the current user."""
    return AccountService(db, user_id, request.app.state.secret_box)


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
