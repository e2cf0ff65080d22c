"""Binance's request signing as the simulator checks it: API key, HMAC-SHA256, timestamp window.

Signed requests' ``timestamp`` is checked against the machine's real clock, as Binance checks it
against its own, whatever the simulated clock says.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from decimal import Decimal
from urllib.parse import parse_qsl

from aiohttp import web

from cryptoorchestrator.platform.exchange.sim.accounts import SimAccount
from cryptoorchestrator.platform.exchange.sim.wire import BinanceReject


async def request_params(request: web.Request) -> tuple[dict[str, str], str, str]:
    """Return the merged parameters and the raw query string and body Binance signs."""
    raw_query = request.raw_path.partition("?")[2]
    raw_body = ""
    if request.can_read_body:
        raw_body = (await request.read()).decode("utf-8", errors="replace")
    params = dict(parse_qsl(raw_query, keep_blank_values=True))
    if raw_body and request.content_type != "application/json":
        params.update(parse_qsl(raw_body, keep_blank_values=True))
    return params, raw_query, raw_body


def authenticate(
    accounts: Mapping[str, SimAccount],
    headers: Mapping[str, str],
    params: Mapping[str, str],
    raw_query: str,
    raw_body: str,
) -> SimAccount:
    """Return the account that signed a request, or reject it with Binance's code.

    Raises
    ------
    BinanceReject
        If the API key is malformed (-2014) or unknown (-2015), the signature is missing
        (-1102) or wrong (-1022), or the timestamp is missing (-1102) or outside the
        ``recvWindow`` (-1021, -1131).
    """
    api_key = headers.get("X-MBX-APIKEY", "")
    if not api_key or len(api_key) > 128 or not api_key.replace("-", "").isalnum():
        raise BinanceReject(-2014, "API-key format invalid.", 401)
    account = accounts.get(api_key)
    if account is None:
        raise BinanceReject(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    signature = params.get("signature", "")
    if not signature:
        raise BinanceReject(
            -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
        )
    # Binance signs totalParams = query string + request body, without the signature itself.
    payload = _strip_signature(raw_query) + _strip_signature(raw_body)
    expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise BinanceReject(-1022, "Signature for this request is not valid.")
    ts_text = params.get("timestamp", "")
    if not ts_text.isdigit():
        raise BinanceReject(
            -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
        )
    recv_text = params.get("recvWindow", "5000")
    try:
        recv_window = int(Decimal(recv_text))
    except ArithmeticError:
        raise BinanceReject(-1100, "Illegal characters found in parameter 'recvWindow'.") from None
    if recv_window > 60_000 or recv_window <= 0:
        raise BinanceReject(-1131, "recvWindow must be less than 60000")
    server = int(time.time() * 1000)
    timestamp = int(ts_text)
    if timestamp >= server + 1000:
        raise BinanceReject(
            -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )
    if server - timestamp > recv_window:
        raise BinanceReject(-1021, "Timestamp for this request is outside of the recvWindow.")
    return account


def _strip_signature(raw: str) -> str:
    if "signature=" not in raw:
        return raw
    return "&".join(p for p in raw.split("&") if not p.startswith("signature="))
