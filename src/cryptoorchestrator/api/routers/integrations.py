"""``/api/integrations``: exchange accounts (write-only credentials), connection test, sync."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from cryptoorchestrator.api.deps import AccountsDep, ContextDep, CurrentUser, TraderUser, has_role
from cryptoorchestrator.api.schemas import (
    DeletedPublic,
    ExchangeAccountCreate,
    ExchangeAccountPublic,
    ExchangeAccountUpdate,
)
from cryptoorchestrator.platform.errors import ExchangeError, ForbiddenError
from cryptoorchestrator.platform.exchange.urls import check_account_url
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
def create_account(
    body: ExchangeAccountCreate, accounts: AccountsDep, _trader: TraderUser
) -> ExchangeAccountPublic:
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
    account_id: IdPath, body: ExchangeAccountUpdate, accounts: AccountsDep, _trader: TraderUser
) -> ExchangeAccountPublic:
    """Change an account or replace its credentials."""
    row = accounts.update(account_id, _values(body))
    accounts.session.commit()
    return _public(row)


@router.delete("/exchanges/accounts/{account_id}")
def delete_account(account_id: IdPath, accounts: AccountsDep, _trader: TraderUser) -> DeletedPublic:
    """Delete an exchange account and its stored credentials."""
    accounts.delete(account_id)
    accounts.session.commit()
    return DeletedPublic(id=account_id, outcome="deleted")


@router.get(
    "/exchanges/test",
    responses={
        422: {"description": "an account's apiUrl is not allowed (nothing was connected to)"},
        503: {"description": "execution client not available"},
    },
)
def check_exchange_connections(
    context: ContextDep,
    accounts: AccountsDep,
    _trader: TraderUser,
    account_id: Annotated[int | None, Query(alias="accountId", ge=1, le=2_147_483_647)] = None,
) -> dict[str, Any]:
    """Check that your stored keys work and report their permissions, without placing an order.

    Only your own accounts are tested, and only at hosts the operator allows: a stored apiUrl
    that the current rule refuses answers 422 (field ``apiUrl``) before any connection.
    """
    if account_id is not None:
        accounts.get(account_id)  # 404 for someone else's account, before anything else
    rows = [accounts.get(account_id)] if account_id else accounts.list_accounts()
    for row in rows:
        # Rows written before the rule (or straight into the database) are checked again here,
        # all of them before the first connection.
        check_account_url(context.settings, row.exchange, row.api_url)
    results = {str(r.id): context.exchange_tester(r) for r in rows}
    accounts.session.commit()
    return {"accounts": results}


class SyncFailedError(ExchangeError):
    """Some datasets of a market-data sync failed: 502, one detail per failed dataset.

    Parameters
    ----------
    failed
        Dataset key (``exchange:symbol:timeframe``) -> the error it failed with.
    synced
        Dataset key -> rows added, for those that did sync.
    """

    def __init__(self, failed: dict[str, str], synced: dict[str, int]) -> None:
        self.failed = failed
        self.synced = synced
        done = ", ".join(f"{key} (+{rows} rows)" for key, rows in sorted(synced.items())[:5])
        total = len(failed) + len(synced)
        super().__init__(
            f"market-data sync failed for {len(failed)} of {total} datasets"
            + (f"; synced: {done}" if done else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the error body with one detail per failed dataset."""
        details = [{"field": key, "message": error} for key, error in sorted(self.failed.items())]
        return {"code": self.code, "message": str(self), "details": details}


@router.post(
    "/exchanges/sync",
    responses={
        403: {"description": "only an admin may refresh the shared market-data store"},
        502: {
            "description": "a dataset failed to sync (code exchange_error); the details name "
            "each failed dataset and its error, the message those that synced"
        },
        503: {"description": "data download not available"},
    },
)
def sync_exchanges(context: ContextDep, user: CurrentUser) -> dict[str, Any]:
    """Refresh the shared market-data store's candles from the operator's exchange sources.

    The store is served to every user, so it is written only from sources the operator
    configured (``exchange_endpoints``, else the exchange's own public API), never from an
    account's apiUrl, and only at an admin's request.  Answers 200 with the rows added per
    dataset when every dataset synced; when any failed, 502 ``exchange_error`` in the error
    shape, one detail per failed dataset (the others are synced all the same).
    """
    if not has_role(user, "admin"):
        raise ForbiddenError(
            "the shared market-data store is served to every user and is refreshed only by the "
            "operator (an admin) from the operator's configured exchange sources"
        )
    result = context.exchange_syncer()
    synced: dict[str, Any] = result.get("synced", {})
    failed = {key: str(value["error"]) for key, value in synced.items() if "error" in value}
    if failed:
        # Monitors and scripts check the status, not the body: a failure must not read as 200.
        done = {
            key: int(value.get("rowsAdded", 0))
            for key, value in synced.items()
            if key not in failed
        }
        raise SyncFailedError(failed, done)
    return result
