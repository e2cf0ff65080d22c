"""The SSRF rule of channel URLs (no network: IP literals and allowed hosts only)."""

from __future__ import annotations

import pytest

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.notify.urls import DISCORD_HOSTS, check_channel_url, policy_of

NONE = policy_of([])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34/hook", "https"),
        ("ftp://93.184.216.34/hook", "https"),
        ("https://user:pw@93.184.216.34/hook", "credentials"),
        ("https://127.0.0.1/hook", "non-public"),
        ("https://10.1.2.3/hook", "non-public"),
        ("https://169.254.169.254/latest", "non-public"),
        ("https://[::1]/hook", "non-public"),
        ("https://[::ffff:127.0.0.1]/hook", "non-public"),
        ("https://93.184.216.34/hook?x=1", "query"),
        ("https://93.184.216.34/h%2fook", "path"),
        ("https://93.184.216.34/ho ok", "spaces"),
    ],
)
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason) as info:
        check_channel_url(url, NONE, field="url")
    assert info.value.field == "url"


def test_public_https_and_operator_hosts_pass() -> None:
    assert check_channel_url("https://93.184.216.34/hook", NONE, field="url")
    allowed = policy_of(["127.0.0.1:8443"])
    assert check_channel_url("http://127.0.0.1:8443/hook", allowed, field="url")
    with pytest.raises(InvalidInputError):
        check_channel_url("http://127.0.0.1:8444/hook", allowed, field="url")


def test_discord_only_on_its_hosts() -> None:
    with pytest.raises(InvalidInputError, match="not allowed"):
        check_channel_url(
            "https://93.184.216.34/api/webhooks/1/x",
            NONE,
            field="url",
            official_hosts=DISCORD_HOSTS,
        )
    url = "https://discord.com/api/webhooks/1/abc"
    assert check_channel_url(
        url, NONE, field="url", official_hosts=DISCORD_HOSTS, resolve_host=False
    )
