"""Dependencies shared by the routers: ``SessionDep``, ``CurrentUser`` and the services."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from cryptoorchestrator.api.events import EventHub
from cryptoorchestrator.api.facade import ClusterFacade
from cryptoorchestrator.platform.errors import InvalidInputError, NotFoundError, UnauthorizedError
from cryptoorchestrator.platform.services.accounts import AccountService
from cryptoorchestrator.platform.services.auth import (
    INVALID_TOKEN,
    AuthService,
    decode_access_token,
)
from cryptoorchestrator.platform.services.bots import BotService, StrategyValidator
from cryptoorchestrator.platform.services.trading import TradingQueries
from cryptoorchestrator.platform.storage.models import User

_bearer = HTTPBearer(auto_error=False, description="Access token from /api/auth/login")


def get_session(request: Request) -> Iterator[Session]:
    """Yield the request's session; routes commit what they change, the rest is rolled back."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def client_ip(request: Request) -> str | None:
    """Return the client's address (for audit rows)."""
    return request.client.host if request.client else None


def get_auth(request: Request, db: SessionDep) -> AuthService:
    """Return the auth service for this request."""
    return AuthService(db, request.app.state.auth_config, request.app.state.secret_box)


AuthDep = Annotated[AuthService, Depends(get_auth)]


def current_user(
    request: Request,
    db: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """Return the user of the bearer token, or raise 401 saying why."""
    if creds is None:
        raise UnauthorizedError("Not authenticated: send 'Authorization: Bearer <access token>'")
    user_id = decode_access_token(request.app.state.auth_config, creds.credentials)
    user = db.get(User, user_id)
    if user is None or not user.is_active:
        raise UnauthorizedError(INVALID_TOKEN)
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


def get_bots(db: SessionDep, user: CurrentUser) -> BotService:
    """Return the bot service of the current user."""
    return BotService(db, user.id, registry_validator())


BotsDep = Annotated[BotService, Depends(get_bots)]


def get_trading(db: SessionDep, user: CurrentUser) -> TradingQueries:
    """Return the trading-record queries of the current user."""
    return TradingQueries(db, user.id)


TradingDep = Annotated[TradingQueries, Depends(get_trading)]


def get_accounts(request: Request, db: SessionDep, user: CurrentUser) -> AccountService:
    """Return the exchange-account service of the current user."""
    return AccountService(db, user.id, request.app.state.secret_box)


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
