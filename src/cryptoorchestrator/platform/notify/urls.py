"""Where a notification channel may send: the SSRF rule for user-supplied URLs.

A tenant's webhook (or Discord/Slack) URL makes the server send requests, so it gets the rule
of exchange ``apiUrl`` s (:mod:`cryptoorchestrator.platform.exchange.urls`), checked when the
channel is created and again right before every send:

* ``https`` only, except on hosts the operator allows (``Settings.notify.allowed_hosts``),
  where ``http`` is accepted too; no credentials, query, fragment, backslash or escapes.
* A host the operator did not allow must resolve to public addresses only (loopback, private,
  link-local and the like are refused); at send time the connector's resolver checks the very
  addresses it connects to, and redirects are never followed.
* Discord and Slack URLs must be on their official hosts (or an operator-allowed one).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.urls import UrlPolicy, is_public_address, resolve

MAX_LENGTH = 500
_PATH = re.compile(r"^[A-Za-z0-9/._~-]*$")
DISCORD_HOSTS = frozenset(
    {"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"}
)
SLACK_HOSTS = frozenset({"hooks.slack.com"})
_ALLOWED = "https://host[:port][/path] on a public host (http only on hosts the operator allows)"


def policy_of(hosts: Iterable[str]) -> UrlPolicy:
    """Return the policy allowing the operator's ``hosts``."""
    return UrlPolicy.of(hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def check_channel_url(
    url: str,
    policy: UrlPolicy,
    *,
    field: str,
    official_hosts: frozenset[str] | None = None,
    resolve_host: bool = True,
) -> str:
    """Return ``url`` if a channel may send to it; raise otherwise.

    Parameters
    ----------
    url
        The user's URL.
    policy
        The operator's allowed hosts.
    field
        The field named in the error (``url``).
    official_hosts
        When given, the only hosts allowed besides the operator's (Discord, Slack).
    resolve_host
        Resolve a host the operator did not allow and refuse non-public addresses.

    Raises
    ------
    InvalidInputError
        If the URL's shape, scheme or host is refused.
    """
    allowed_text = (
        _ALLOWED if official_hosts is None else "https URL on " + ", ".join(sorted(official_hosts))
    )
    if not isinstance(url, str) or not url or len(url) > MAX_LENGTH:
        raise InvalidInputError(field, "must be a URL of 1 to 500 characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url) or "\\" in url:
        raise InvalidInputError(field, "must not contain spaces, control characters or \\")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise InvalidInputError(field, "is not a valid URL", allowed=allowed_text) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidInputError(field, "must be an https URL", allowed=allowed_text)
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise InvalidInputError(field, "must not contain credentials (user:password@)")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise InvalidInputError(field, "must not have a query or a fragment")
    if "%" in url or not _PATH.match(parts.path):
        raise InvalidInputError(field, "the path may only hold letters, digits and / . _ ~ -")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise InvalidInputError(field, "has no host", allowed=allowed_text)
    if policy.explicitly_allowed(host, port):
        return url
    if scheme != "https":
        raise InvalidInputError(field, "must be an https URL", allowed=allowed_text)
    if official_hosts is not None and host not in official_hosts:
        raise InvalidInputError(field, "this host is not allowed", allowed=allowed_text)
    if _is_ip(host):
        if not is_public_address(host.strip("[]")):
            raise InvalidInputError(field, "must not point at a non-public address")
        return url
    if resolve_host and any(not is_public_address(a) for a in resolve(host, port)):
        raise InvalidInputError(field, "this host resolves to a non-public address")
    return url
