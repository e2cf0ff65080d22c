"""Secrets at rest: authenticated encryption bound to its purpose."""

from __future__ import annotations

import pytest

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import ConfigError


def test_round_trip_and_fresh_nonce() -> None:
    box = SecretBox("k" * 32)
    a = box.encrypt("api-secret-value", "exchange_account:1:api_secret")
    b = box.encrypt("api-secret-value", "exchange_account:1:api_secret")
    assert a != b
    assert b"api-secret-value" not in a
    assert box.decrypt(a, "exchange_account:1:api_secret") == "api-secret-value"


def test_wrong_purpose_key_or_tampering_fail_closed() -> None:
    box = SecretBox("k" * 32)
    blob = box.encrypt("s3cret", "exchange_account:1:api_secret")
    with pytest.raises(ConfigError, match="wrong secret key or tampered"):
        box.decrypt(blob, "exchange_account:2:api_secret")
    with pytest.raises(ConfigError, match="wrong secret key or tampered"):
        SecretBox("x" * 32).decrypt(blob, "exchange_account:1:api_secret")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ConfigError):
        box.decrypt(tampered, "exchange_account:1:api_secret")
    with pytest.raises(ConfigError, match="unknown format"):
        box.decrypt(b"garbage", "p")


def test_short_key_refused() -> None:
    with pytest.raises(ConfigError, match="16 characters"):
        SecretBox("short")
