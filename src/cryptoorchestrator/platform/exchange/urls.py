"""Where an exchange account's ``apiUrl`` may point: allowed hosts only, never the head's network.

An account's ``apiUrl`` moves every REST root of its ccxt client (the simulator, a testnet), so a
tenant choosing it chooses where the server sends requests.  The rule, checked when an account is
created or changed and again right before any request is sent (rows written before the rule, DNS
answers that change between the two):

* ``http`` or ``https`` only; no credentials (``user:pass@``), query, fragment, backslash or
  percent-escape in the URL; a path of plain characters.
* The host must be one the operator allows (``Settings.allowed_api_hosts``, ``host`` or
  ``host:port``, and the hosts of ``Settings.exchange_endpoints``), or one of the exchange's own
  public API hosts as ccxt knows them (``api.binance.com``, ``testnet.binance.vision``...).  These
  are allowed by default: they are the exchange's real endpoints and testnets, which a tenant may
  use with their own keys anyway.
* A host that is not explicitly allowed by the operator must resolve to public addresses only:
  loopback, private, link-local (the cloud metadata service at 169.254.169.254), shared,
  multicast, reserved and unspecified addresses are refused.  At request time the check runs in
  the connector's resolver itself (:class:`GuardedSession`), so the addresses checked are the
  addresses connected to, and redirects are never followed.

The operator's own tools (``cryptoorch bots create --api-url``, the SDK) are trusted with any
host (``trusted=True``) but get the same shape checks.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast
from urllib.parse import SplitResult, urlsplit

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.settings import Settings

FIELD = "apiUrl"
SCHEMES = ("http", "https")
MAX_LENGTH = 500
_PATH = re.compile(r"^[A-Za-z0-9/._~-]*$")
_ALLOWED_TEXT = (
    "http(s)://host[:port][/path] on the exchange's own API host or a host the operator allows"
)


@dataclass(frozen=True)
class UrlPolicy:
    """The hosts the operator allows, from :class:`Settings`.

    Attributes
    ----------
    allowed_hosts
        Lower-case ``host`` (any port) or ``host:port`` entries.
    """

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        """Return the policy of ``settings``: its allowed hosts and its endpoints' hosts."""
        return cls.of(settings.allowed_api_hosts, settings.exchange_endpoints)

    @classmethod
    def of(cls, hosts: Iterable[str], endpoints: Mapping[str, str] | None = None) -> UrlPolicy:
        """Return the policy allowing ``hosts`` and the ``host:port`` of each endpoint URL."""
        allowed = {h.strip().lower().rstrip(".") for h in hosts if h.strip()}
        for url in (endpoints or {}).values():
            try:
                parts = urlsplit(url)
                if parts.hostname:
                    allowed.add(_host_port(parts.hostname, _port(parts)))
            except ValueError:
                continue  # an operator typo allows nothing
        return cls(frozenset(allowed))

    def explicitly_allowed(self, host: str, port: int) -> bool:
        """Return whether the operator allows ``host`` (on any port, or on ``port``)."""
        host = _norm(host)
        return host in self.allowed_hosts or _host_port(host, port) in self.allowed_hosts

    def host_allowed(self, host: str, port: int, exchange: str | None) -> bool:
        """Return whether ``host`` is the operator's or one of ``exchange``'s own API hosts."""
        if self.explicitly_allowed(host, port):
            return True
        return exchange is not None and _norm(host) in exchange_hosts(exchange)


def _norm(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def _host_port(host: str, port: int) -> str:
    host = _norm(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(parts: SplitResult) -> int:
    port = parts.port  # ValueError when out of range or not a number
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return port


@lru_cache(maxsize=256)
def exchange_hosts(exchange: str) -> frozenset[str]:
    """Return the API hosts ccxt knows for ``exchange`` (production and testnet), lower-case.

    Unknown exchanges have none.
    """
    import ccxt

    if exchange not in ccxt.exchanges:
        return frozenset()
    try:
        client = getattr(ccxt, exchange)()
    except Exception:  # a ccxt class that cannot be built offers no host
        return frozenset()
    hostname = str(getattr(client, "hostname", "") or "")
    hosts: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, str) and "://" in value:
            host = urlsplit(value.replace("{hostname}", hostname)).hostname
            if host and "{" not in host:
                hosts.add(_norm(host))

    urls = client.urls or {}
    walk(urls.get("api"))
    walk(urls.get("test"))
    return frozenset(hosts)


def is_public_address(address: str) -> bool:
    """Return whether ``address`` (an IP literal) is a public unicast address.

    Loopback, private, link-local (cloud metadata), carrier-grade NAT, multicast, reserved and
    unspecified addresses are not; an IPv4 address mapped into IPv6 counts as the IPv4 one.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return bool(ip.is_global) and not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(_norm(host))
    except ValueError:
        return False
    return True


def resolve(host: str, port: int) -> list[str]:
    """Return the addresses ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


def check_api_url(
    url: str,
    policy: UrlPolicy,
    *,
    exchange: str | None,
    trusted: bool = False,
    resolve_host: bool = True,
    field_name: str = FIELD,
) -> str:
    """Return ``url`` without a trailing slash if an account may use it; refuse it otherwise.

    Parameters
    ----------
    url
        The account's ``apiUrl``.
    policy
        The operator's allowed hosts.
    exchange
        The account's ccxt exchange id (its own API hosts are allowed).
    trusted
        The operator's own tools: any host, same shape checks.
    resolve_host
        Resolve a host the operator did not allow explicitly and refuse non-public addresses.
        A name that does not resolve passes here: the request's own resolver checks it again.
    field_name
        The field named in the error.

    Raises
    ------
    InvalidInputError
        If the URL's shape or host is refused; the message never says whether anything answers
        there (nothing is connected to).
    """
    if not isinstance(url, str) or not url or len(url) > MAX_LENGTH:
        raise InvalidInputError(field_name, "must be a URL of 1 to 500 characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url) or "\\" in url:
        raise InvalidInputError(field_name, "must not contain spaces, control characters or \\")
    try:
        parts = urlsplit(url)
        port = _port(parts)
    except ValueError as exc:
        raise InvalidInputError(field_name, "is not a valid URL", allowed=_ALLOWED_TEXT) from exc
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidInputError(field_name, "must be an http or https URL", allowed=_ALLOWED_TEXT)
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise InvalidInputError(
            field_name, "must not contain credentials; send apiKey and apiSecret instead"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise InvalidInputError(field_name, "must not have a query or a fragment")
    if "%" in url or not _PATH.match(parts.path):
        raise InvalidInputError(field_name, "the path may only hold letters, digits and / . _ ~ -")
    host = parts.hostname
    if not host:
        raise InvalidInputError(field_name, "has no host", allowed=_ALLOWED_TEXT)
    if trusted or policy.explicitly_allowed(host, port):
        return url.rstrip("/")
    if not policy.host_allowed(host, port, exchange):
        raise InvalidInputError(field_name, "this host is not allowed", allowed=_ALLOWED_TEXT)
    if resolve_host and not _is_ip(host):
        addresses = resolve(host, port)
        if any(not is_public_address(a) for a in addresses):
            raise InvalidInputError(
                field_name, "this host resolves to a non-public address", allowed=_ALLOWED_TEXT
            )
    return url.rstrip("/")


def check_account_url(
    settings: Settings, exchange: str, api_url: str | None, *, trusted: bool = False
) -> str | None:
    """Check a stored account's ``apiUrl`` right before it is used (None: the exchange's own).

    Raises
    ------
    InvalidInputError
        If the stored URL is refused (see :func:`check_api_url`).
    """
    if api_url is None:
        return None
    return check_api_url(
        api_url, UrlPolicy.from_settings(settings), exchange=exchange, trusted=trusted
    )


class GuardedSession:
    """An aiohttp session for ccxt that never follows redirects and connects to allowed hosts only.

    Give it to a ccxt async exchange with :meth:`install`; the exchange's ``close()`` closes it
    (it counts as the exchange's own session).  Each request's host must pass the policy, and a host
    the operator did not allow explicitly is connected to only at the public addresses its
    resolver returned (the check and the connection use the same answer).

    Parameters
    ----------
    policy
        The operator's allowed hosts.
    exchange
        The ccxt exchange id (its own API hosts are allowed).
    """

    def __init__(self, policy: UrlPolicy, exchange: str | None) -> None:
        self.policy = policy
        self.exchange = exchange
        self._session: Any = None
        self.closed = False
        self.headers: dict[str, str] = {}  # ccxt merges a session's default headers

    def install(self, client: Any) -> Any:
        """Make the ccxt async exchange ``client`` send its requests here; return it."""
        client.session = self
        # Owned: ccxt's open() keeps a session it already has, and its close() closes this one.
        client.own_session = True
        return client

    def _open(self) -> Any:
        import aiohttp

        if self._session is None:
            import ssl

            import certifi

            # ccxt verifies TLS against certifi's bundle: keep the same trust store.
            context = ssl.create_default_context(cafile=certifi.where())
            connector = aiohttp.TCPConnector(
                resolver=cast(Any, _GuardedResolver(self.policy)),
                use_dns_cache=False,
                ssl=context,
            )
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        """Start a request (an async context manager, as aiohttp's); redirects are not followed."""
        import aiohttp
        from yarl import URL

        target = URL(str(url), encoded=True)
        host, port = target.host or "", target.port or 0
        # An IP literal skips the resolver: it must be allowed by the operator explicitly
        # (the exchanges' own hosts are names).
        if not self.policy.host_allowed(host, port, self.exchange):
            raise aiohttp.InvalidUrlClientError(target, "host not allowed")
        kwargs["allow_redirects"] = False
        kwargs.pop("proxy", None)  # never through a proxy taken from the request
        return self._open().request(method, target, **kwargs)

    def get(self, url: Any, **kwargs: Any) -> Any:
        """GET ``url`` (see :meth:`request`)."""
        return self.request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> Any:
        """POST ``url`` (see :meth:`request`)."""
        return self.request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> Any:
        """PUT ``url`` (see :meth:`request`)."""
        return self.request("PUT", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> Any:
        """DELETE ``url`` (see :meth:`request`)."""
        return self.request("DELETE", url, **kwargs)

    def patch(self, url: Any, **kwargs: Any) -> Any:
        """PATCH ``url`` (see :meth:`request`)."""
        return self.request("PATCH", url, **kwargs)

    async def close(self) -> None:
        """Close the underlying session and its connections."""
        self.closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


class _GuardedResolver:
    """aiohttp resolver that drops non-public addresses of hosts the operator did not allow."""

    def __init__(self, policy: UrlPolicy) -> None:
        from aiohttp import ThreadedResolver

        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        """Resolve ``host``; only public addresses unless the operator allows the host."""
        infos = await self._inner.resolve(host, port, family)
        if self._policy.explicitly_allowed(host, port):
            return list(infos)
        public = [i for i in infos if is_public_address(str(i["host"]))]
        if not public:
            raise OSError(f"{host} has no public address")
        return public

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()
