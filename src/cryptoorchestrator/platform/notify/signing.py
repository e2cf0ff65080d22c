"""Webhook signatures, the Standard Webhooks way (https://www.standardwebhooks.com).

Each request carries ``webhook-id`` (the message id: the same on every retry, so receivers can
dedupe), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``: ``v1,`` followed by
base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")), where the key is the base64 part of the
channel's ``whsec_...`` secret.  Any Standard Webhooks library verifies it; so does
:func:`verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"
#: Seconds a signed request stays acceptable (both ways, for clock skew): older ones are replays.
TOLERANCE_S = 300


class WebhookVerificationError(ValueError):
    """A webhook's signature, timestamp or headers are wrong."""


def new_secret() -> str:
    """Return a fresh signing secret (``whsec_`` + 32 random bytes in base64)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    raw = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise WebhookVerificationError("the secret is not base64 after whsec_") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value of ``body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(
    secret: str,
    msg_id: str,
    body: bytes,
    timestamp: int | None = None,
    *,
    also: Sequence[str] = (),
) -> dict[str, str]:
    """Return the signature headers of one delivery (``Idempotency-Key`` too).

    ``also``: more secrets to sign with (the previous secret during a rotation's grace
    period); the signatures are space-separated, as Standard Webhooks allows, and a receiver
    holding any one of the secrets verifies the request.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    signatures = [sign(s, msg_id, ts, body) for s in (secret, *also)]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signatures),
        "Idempotency-Key": msg_id,
    }


def verify(
    secret: str,
    received: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Check a received webhook; return its message id.

    Parameters
    ----------
    secret
        The channel's ``whsec_...`` secret.
    received
        The request's headers (looked up case-insensitively).
    body
        The raw request body, exactly as received.
    tolerance_s
        How old (or how far in the future) the timestamp may be.
    now
        The current unix time (tests).

    Raises
    ------
    WebhookVerificationError
        If a header is missing, the timestamp is outside the window, or no signature matches.
    """
    lower = {k.lower(): v for k, v in received.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        signatures = lower["webhook-signature"]
    except (KeyError, ValueError) as exc:
        raise WebhookVerificationError("missing or malformed webhook headers") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError("timestamp outside the tolerance window")
    expected = sign(secret, msg_id, timestamp, body)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate, expected):
            return msg_id
    raise WebhookVerificationError("no matching signature")
