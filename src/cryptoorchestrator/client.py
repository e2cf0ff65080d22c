"""``co.Client``: the platform over HTTP, for notebooks that talk to a remote head node.

>>> import cryptoorchestrator as co
>>> api = co.Client("http://head:8000")
>>> api.login("me@example.com", "password", totp="123456")
>>> bot = api.create_bot(name="b1", tradingPair="BTC/USDT", strategy="sma_cross")
>>> for trade in api.trades(bot_id=bot["id"]):
...     print(trade["price"])

Every listing (``bots``, ``trades``, ``orders``, ``positions``, ``backtests``,
``optimizations``, ``markets``, ``ohlcv``) takes ``as_frame=True`` to return a pandas DataFrame,
one row per item, instead of dicts (iterators are then read to the end):

>>> api.trades(bot_id=bot["id"], as_frame=True).head()

Errors come back as :class:`ApiError` (a ``CryptoOrchError``) carrying the status, the API's error
code and its field details.  An expired access token is refreshed once, automatically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from cryptoorchestrator.platform.errors import CryptoOrchError


class ApiError(CryptoOrchError):
    """An error answered by the API, in its one error shape."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.code = str(body.get("code", "error"))
        self.details: list[dict[str, Any]] = list(body.get("details") or [])
        super().__init__(f"{status} {self.code}: {body.get('message', '')}")


class Client:
    """A thin HTTP client of the CryptoOrchestrator API.

    Parameters
    ----------
    base_url
        The head node, e.g. ``http://127.0.0.1:8000``.
    token
        An access token, if you already have one (otherwise call :meth:`login`).
    refresh_token
        A refresh token, used to renew the access token when it expires.
    timeout
        Seconds per request.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        refresh_token: str | None = None,
        timeout: float = 30.0,
        transport: Any = None,
    ) -> None:
        import httpx  # imported here so that `import cryptoorchestrator` stays cheap

        self.token = token
        self.refresh_token = refresh_token
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )

    # ----------------------------------------------------------------------------- plumbing
    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON (None for 204) or raise :class:`ApiError`."""
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and self.refresh_token and not path.startswith("/api/auth/"):
            body = _json(response)
            if body.get("message") == "Token expired":
                self.refresh()
                response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response.status_code, _json(response))
        return None if response.status_code == 204 or not response.content else response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self._http.request(method, path, headers=headers, **kwargs)

    # --------------------------------------------------------------------------------- auth
    def register(self, email: str, password: str) -> dict[str, Any]:
        """Create an account."""
        return self.request(
            "POST", "/api/auth/register", json={"email": email, "password": password}
        )  # type: ignore[no-any-return]

    def login(
        self, email: str, password: str, *, totp: str | None = None, backup_code: str | None = None
    ) -> dict[str, Any]:
        """Log in (with a TOTP or backup code when MFA is on) and keep the tokens."""
        body: dict[str, Any] = {"email": email, "password": password}
        if totp:
            body["totpCode"] = totp
        if backup_code:
            body["backupCode"] = backup_code
        tokens: dict[str, Any] = self.request("POST", "/api/auth/login", json=body)
        self.token = tokens["accessToken"]
        self.refresh_token = tokens["refreshToken"]
        return tokens

    def refresh(self) -> dict[str, Any]:
        """Rotate the refresh token and renew the access token."""
        tokens: dict[str, Any] = self.request(
            "POST", "/api/auth/refresh", json={"refreshToken": self.refresh_token}
        )
        self.token = tokens["accessToken"]
        self.refresh_token = tokens["refreshToken"]
        return tokens

    def logout(self) -> None:
        """End this session."""
        self.request("POST", "/api/auth/logout", json={"refreshToken": self.refresh_token})
        self.token = self.refresh_token = None

    def profile(self) -> dict[str, Any]:
        """Return the current user."""
        return self.request("GET", "/api/auth/profile")  # type: ignore[no-any-return]

    # --------------------------------------------------------------------------------- bots
    def bots(self, *, as_frame: bool = False) -> Any:
        """Return all your bots (a list of dicts, or a DataFrame with ``as_frame=True``)."""
        return _listing(self._pages("/api/bots", {}), as_frame)

    def create_bot(self, **config: Any) -> dict[str, Any]:
        """Create a bot (camelCase or snake_case keys: tradingPair, riskPerTrade, ...)."""
        return self.request("POST", "/api/bots", json=config)  # type: ignore[no-any-return]

    def bot(self, bot_id: int) -> dict[str, Any]:
        """Return one bot."""
        return self.request("GET", f"/api/bots/{bot_id}")  # type: ignore[no-any-return]

    def update_bot(self, bot_id: int, **changes: Any) -> dict[str, Any]:
        """Change a bot."""
        return self.request("PATCH", f"/api/bots/{bot_id}", json=changes)  # type: ignore[no-any-return]

    def delete_bot(self, bot_id: int) -> dict[str, Any]:
        """Delete (or archive) a bot."""
        return self.request("DELETE", f"/api/bots/{bot_id}")  # type: ignore[no-any-return]

    def start_bot(self, bot_id: int) -> dict[str, Any]:
        """Start a bot."""
        return self.request("POST", f"/api/bots/{bot_id}/start")  # type: ignore[no-any-return]

    def stop_bot(self, bot_id: int) -> dict[str, Any]:
        """Stop a bot."""
        return self.request("POST", f"/api/bots/{bot_id}/stop")  # type: ignore[no-any-return]

    def bot_status(self, bot_id: int) -> dict[str, Any]:
        """Return a bot's status and recent transitions."""
        return self.request("GET", f"/api/bots/{bot_id}/status")  # type: ignore[no-any-return]

    def bot_logs(self, bot_id: int, tail: int = 100) -> list[str]:
        """Return the last lines of the bot's log."""
        return self.request("GET", f"/api/bots/{bot_id}/logs", params={"tail": tail})["lines"]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------ trading
    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            query = {k: v for k, v in params.items() if v is not None}
            if cursor:
                query["cursor"] = cursor
            page = self.request("GET", path, params=query)
            yield from page["items"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def exchange_accounts(self, *, as_frame: bool = False) -> Any:
        """Return your exchange accounts, keys never included (a DataFrame with ``as_frame``)."""
        return _listing(self.request("GET", "/api/integrations/exchanges/accounts"), as_frame)

    def trades(
        self, bot_id: int | None = None, page_size: int = 200, *, as_frame: bool = False
    ) -> Any:
        """Iterate over fills, newest first, fetching pages as needed.

        With ``as_frame=True`` every page is fetched and a DataFrame returned.
        """
        rows = self._pages("/api/trades/", {"botId": bot_id, "limit": page_size})
        return _frame(rows) if as_frame else rows

    def orders(
        self, bot_id: int | None = None, page_size: int = 200, *, as_frame: bool = False
    ) -> Any:
        """Iterate over orders, newest first (a DataFrame of all of them with ``as_frame``)."""
        rows = self._pages("/api/orders/", {"botId": bot_id, "limit": page_size})
        return _frame(rows) if as_frame else rows

    def positions(self, bot_id: int | None = None, *, as_frame: bool = False) -> Any:
        """Return open positions (a DataFrame with ``as_frame=True``)."""
        return _listing(self._pages("/api/positions/", {"botId": bot_id}), as_frame)

    # --------------------------------------------------------------------------------- runs
    def submit_backtest(self, strategy: str, **spec: Any) -> dict[str, Any]:
        """Submit a backtest; returns its id."""
        return self.request("POST", "/api/backtests", json={"strategy": strategy, **spec})  # type: ignore[no-any-return]

    def backtest(self, run_id: str) -> dict[str, Any]:
        """Return a backtest's status, progress and metrics."""
        return self.request("GET", f"/api/backtests/{run_id}")  # type: ignore[no-any-return]

    def backtests(self, *, as_frame: bool = False) -> Any:
        """Return your backtest runs (a DataFrame with ``as_frame=True``)."""
        return _listing(self.request("GET", "/api/backtests"), as_frame)

    def backtest_results(self, run_id: str) -> dict[str, Any]:
        """Return a finished backtest's metrics."""
        return self.request("GET", f"/api/backtests/{run_id}/results")  # type: ignore[no-any-return]

    def cancel_backtest(self, run_id: str) -> dict[str, Any]:
        """Cancel a running backtest."""
        return self.request("POST", f"/api/backtests/{run_id}/cancel")  # type: ignore[no-any-return]

    def submit_optimization(
        self, strategy: str, space: dict[str, Any], **spec: Any
    ) -> dict[str, Any]:
        """Submit a parameter study; returns its id."""
        body = {"strategy": strategy, "space": space, **spec}
        return self.request("POST", "/api/optimizations", json=body)  # type: ignore[no-any-return]

    def optimization(self, run_id: str) -> dict[str, Any]:
        """Return a study's status, progress and best result."""
        return self.request("GET", f"/api/optimizations/{run_id}")  # type: ignore[no-any-return]

    def optimizations(self, *, as_frame: bool = False) -> Any:
        """Return your optimization runs (a DataFrame with ``as_frame=True``)."""
        return _listing(self.request("GET", "/api/optimizations"), as_frame)

    def cancel_optimization(self, run_id: str) -> dict[str, Any]:
        """Cancel a running study."""
        return self.request("POST", f"/api/optimizations/{run_id}/cancel")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------ markets
    def markets(self, *, as_frame: bool = False) -> Any:
        """Return the stored datasets (a DataFrame with ``as_frame=True``)."""
        return _listing(self.request("GET", "/api/markets"), as_frame)

    def ohlcv(
        self, symbol: str, timeframe: str = "1h", limit: int = 500, *, as_frame: bool = False
    ) -> Any:
        """Return the latest candles of ``symbol`` (``BTC/USDT`` or ``BTC-USDT``).

        A list of dicts, or a DataFrame with ``as_frame=True``.
        """
        path = f"/api/markets/{symbol.replace('/', '-')}/ohlcv"
        body = self.request("GET", path, params={"timeframe": timeframe, "limit": limit})
        return _listing(body["candles"], as_frame)

    # ------------------------------------------------------------------------ notifications
    def notification_channels(self) -> list[dict[str, Any]]:
        """Return your notification channels (destinations masked, no secrets)."""
        return self.request("GET", "/api/notifications/channels")  # type: ignore[no-any-return]

    def add_notification_channel(self, name: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Add a channel: ``kind`` is webhook, telegram, discord, slack or email.

        ``fields`` are the kind's destination (``url``; ``botToken`` and ``chatId``;
        ``address``) and the subscription (``events``, ``botIds``, ``minSeverity``,
        ``quietStart``, ``quietEnd``, ``timezone``, ``dailySummaryAt``); None values are left
        out.  A webhook's answer holds its ``signingSecret``, shown this once.
        """
        body = {"name": name, "kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        return self.request("POST", "/api/notifications/channels", json=body)  # type: ignore[no-any-return]

    def update_notification_channel(self, channel_id: int, **changes: Any) -> dict[str, Any]:
        """Change a channel's name, subscription or ``enabled`` (None clears a filter)."""
        path = f"/api/notifications/channels/{channel_id}"
        return self.request("PATCH", path, json=changes)  # type: ignore[no-any-return]

    def test_notification_channel(self, channel_id: int) -> dict[str, Any]:
        """Send a test message now; return ``{"ok": bool, "error": str | None}``."""
        path = f"/api/notifications/channels/{channel_id}/test"
        return self.request("POST", path)  # type: ignore[no-any-return]

    def remove_notification_channel(self, channel_id: int) -> dict[str, Any]:
        """Delete a channel and its delivery log."""
        path = f"/api/notifications/channels/{channel_id}"
        return self.request("DELETE", path)  # type: ignore[no-any-return]

    def rotate_notification_secret(self, channel_id: int) -> dict[str, Any]:
        """Give a webhook channel a new ``signingSecret`` (in this answer only)."""
        path = f"/api/notifications/channels/{channel_id}/rotate-secret"
        return self.request("POST", path)  # type: ignore[no-any-return]

    def notifications(
        self,
        *,
        status: str | None = None,
        channel_id: int | None = None,
        limit: int = 100,
        as_frame: bool = False,
    ) -> Any:
        """Return your delivery log, newest first (``status``: held, pending, sending, sent,
        dead); a DataFrame with ``as_frame=True``."""
        params = {"status": status, "channelId": channel_id, "limit": limit}
        query = {k: v for k, v in params.items() if v is not None}
        return _listing(self.request("GET", "/api/notifications", params=query), as_frame)

    def dead_letters(self, *, limit: int = 100, as_frame: bool = False) -> Any:
        """Return your dead-lettered notifications (``notifications(status="dead")``)."""
        return self.notifications(status="dead", limit=limit, as_frame=as_frame)

    def retry_notification(self, notification_id: int) -> dict[str, Any]:
        """Queue a dead notification again; return ``{"requeued": n}``."""
        path = f"/api/notifications/{notification_id}/retry"
        return self.request("POST", path)  # type: ignore[no-any-return]

    def health(self) -> dict[str, Any]:
        """Return the detailed health report (does not raise on 503)."""
        response = self._send("GET", "/api/health/detailed")
        return _json(response)


#: A decimal as the API writes money and amounts: exact text, converted in frames only.
_DECIMAL = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
#: Columns holding times: epoch milliseconds or ISO-8601 text.
_TIME_COLUMNS = ("timestamp", "time", "datetime")


def _frame(rows: Iterable[dict[str, Any]]) -> Any:
    """Return ``rows`` as a pandas DataFrame, one row per item (pandas imported on use).

    For analysis, columns the API sends as exact decimal strings (prices, amounts, fees, P&L)
    become floats and time columns (``timestamp``, ``...At``) UTC datetimes; identifiers and
    names stay text.  The lists of dicts keep the exact decimals.
    """
    import pandas as pd

    df = pd.DataFrame.from_records(list(rows))
    for column in df.columns:
        name = str(column)
        values = df[column].dropna()
        if values.empty or name.lower().endswith(("id", "name")):
            continue
        if name in _TIME_COLUMNS or name.endswith("At"):
            unit = "ms" if pd.api.types.is_integer_dtype(values) else None
            df[column] = pd.to_datetime(df[column], utc=True, unit=unit, errors="coerce")
        elif all(isinstance(v, str) and _DECIMAL.fullmatch(v) for v in values):
            df[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    return df


def _listing(rows: Iterable[dict[str, Any]], as_frame: bool) -> Any:
    """Return ``rows`` as a list of dicts, or as a DataFrame when ``as_frame``."""
    return _frame(rows) if as_frame else list(rows)


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"code": "http_error", "message": response.text[:200], "details": []}
    return body if isinstance(body, dict) else {"code": "http_error", "message": str(body)}
