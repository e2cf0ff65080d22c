"""``/api/integrations``: exchange accounts (write-only credentials), connection test, sync."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status

from cryptoorchestrator.api.deps import AccountsDep
from cryptoorchestrator.api.schemas import (
    DeletedPublic,
    ExchangeAccountCreate,
    ExchangeAccountPublic,
    ExchangeAccountUpdate,
)
from cryptoorchestrator.platform.errors import UnavailableError
from cryptoorchestrator.platform.storage.models import ExchangeAccount

IdPath = Annotated[int, Path(ge=1, le=2_147_483_647)]

router = APIRouter(prefix="/api/integrations", tags=["integrations"])


def _public(row: ExchangeAccount) -> ExchangeAccountPublic:
    return ExchangeAccountPublic(
        id=row.id,
        name=row.name,
        exchange=row.exchange,
        mode=row.mode,
        api_url=row.api_url,
        has_api_key=row.api_key_enc is not None,
        has_api_secret=row.api_secret_enc is not None,
        has_passphrase=row.passphrase_enc is not None,
        permissions=row.permissions,
        last_tested_at=row.last_tested_at,
        created_at=row.created_at,
    )


def _values(body: ExchangeAccountCreate | ExchangeAccountUpdate) -> dict[str, Any]:
    values = body.model_dump(by_alias=False, exclude_unset=True)
    for field in ("api_key", "api_secret", "passphrase"):
        if field in values:
            secret = getattr(body, field)
            values[field] = secret.get_secret_value() if secret is not None else ""
    return values


@router.get("/exchanges/accounts")
def list_accounts(accounts: AccountsDep) -> list[ExchangeAccountPublic]:
    """List your exchange accounts (credentials are never returned, only whether they are set)."""
    return [_public(r) for r in accounts.list_accounts()]


@router.post("/exchanges/accounts", status_code=status.HTTP_201_CREATED)
def create_account(body: ExchangeAccountCreate, accounts: AccountsDep) -> ExchangeAccountPublic:
    """Add an exchange account; apiKey/apiSecret/passphrase are encrypted at rest."""
    row = accounts.create(_values(body))
    accounts.session.commit()
    return _public(row)


@router.get("/exchanges/accounts/{account_id}")
def get_account(account_id: IdPath, accounts: AccountsDep) -> ExchangeAccountPublic:
    """Return one of your exchange accounts."""
    return _public(accounts.get(account_id))


@router.patch("/exchanges/accounts/{account_id}")
def update_account(
    account_id: IdPath, body: ExchangeAccountUpdate, accounts: AccountsDep
) -> ExchangeAccountPublic:
    """Change an account or replace its credentials."""
    row = accounts.update(account_id, _values(body))
    accounts.session.commit()
    return _public(row)


@router.delete("/exchanges/accounts/{account_id}")
def delete_account(account_id: IdPath, accounts: AccountsDep) -> DeletedPublic:
    """Delete an exchange account and its stored credentials."""
    accounts.delete(account_id)
    accounts.session.commit()
    return DeletedPublic(id=account_id, outcome="deleted")


@router.get("/exchanges/test", responses={503: {"description": "execution client not available"}})
def check_exchange_connections(
    request: Request,
    accounts: AccountsDep,
    account_id: Annotated[int | None, Query(alias="accountId", ge=1, le=2_147_483_647)] = None,
) -> dict[str, Any]:
    """Check that stored keys work and report their permissions, without placing an order."""
    if account_id is not None:
        accounts.get(account_id)  # 404 for someone else's account, before anything else
    tester = getattr(request.app.state, "exchange_tester", None)
    if tester is None:
        raise UnavailableError(
            "not available: exchange connection test (the execution client, issue 7, "
            "is not installed)"
        )
    rows = [accounts.get(account_id)] if account_id else accounts.list_accounts()
    results = {str(r.id): tester(r, accounts.credentials(r)) for r in rows}
    accounts.session.commit()
    return {"accounts": results}


@router.post("/exchanges/sync", responses={503: {"description": "data download not available"}})
def sync_exchanges(request: Request, accounts: AccountsDep) -> dict[str, Any]:
    """Refresh markets and recent candles from the exchanges."""
    syncer = getattr(request.app.state, "exchange_syncer", None)
    if syncer is None:
        raise UnavailableError(
            "not available: exchange sync (market and candle refresh through the execution "
            "client, issue 7, is not installed)"
        )
    result: dict[str, Any] = syncer(accounts.list_accounts())
    return result
