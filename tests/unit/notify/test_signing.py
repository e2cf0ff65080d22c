"""Standard Webhooks signatures: the spec's own vector, tampering, replays."""

from __future__ import annotations

import pytest

from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.signing import WebhookVerificationError

# The example of the Standard Webhooks specification (its libraries' test vector).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specification_vector() -> None:
    assert signing.sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


def test_signed_headers_verify_and_carry_the_idempotency_key() -> None:
    secret = signing.new_secret()
    body = b'{"id":"ntf_1_1","events":[]}'
    headers = signing.headers(secret, "ntf_1_1", body, timestamp=1_700_000_000)
    assert headers["Idempotency-Key"] == "ntf_1_1"
    assert signing.verify(secret, headers, body, now=1_700_000_010) == "ntf_1_1"


@pytest.mark.parametrize(
    "change",
    ["body", "id", "timestamp", "secret"],
)
def test_anything_changed_fails_verification(change: str) -> None:
    secret = signing.new_secret()
    body = b'{"amount":"1"}'
    headers = signing.headers(secret, "ntf_1_1", body, timestamp=1_700_000_000)
    if change == "body":
        body = b'{"amount":"9"}'
    elif change == "id":
        headers["webhook-id"] = "ntf_1_2"
    elif change == "timestamp":
        headers["webhook-timestamp"] = "1700000001"
    else:
        secret = signing.new_secret()
    with pytest.raises(WebhookVerificationError):
        signing.verify(secret, headers, body, now=1_700_000_000)


def test_replays_outside_the_window_and_missing_headers_are_refused() -> None:
    secret = signing.new_secret()
    body = b"{}"
    headers = signing.headers(secret, "ntf_1_1", body, timestamp=1_700_000_000)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        signing.verify(secret, headers, body, now=1_700_000_000 + signing.TOLERANCE_S + 1)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        signing.verify(secret, headers, body, now=1_700_000_000 - signing.TOLERANCE_S - 1)
    del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError, match="missing"):
        signing.verify(secret, headers, body, now=1_700_000_000)
