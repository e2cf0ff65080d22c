"""Who the client is: the peer address, or what a trusted reverse proxy says it saw.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are request headers: anyone can send them.  They
mean something only when the direct peer is a proxy this deployment runs (``trusted_proxies``
in :class:`~cryptoorchestrator.api.config.ApiOptions`, IPs or CIDRs, empty by default).  Then
the client is the rightmost ``X-Forwarded-For`` entry that is not itself a trusted proxy: each
proxy appends the address it saw, so everything left of the first untrusted hop may be forged.

:meth:`TrustedProxies.client_ip` is the one answer used by the rate limiter, the audit log, the
access log and the WebSocket connection caps.  The app computes it from the ASGI peer itself,
whichever server runs it; ``cryptoorch serve`` starts uvicorn with ``proxy_headers=False`` so
the peer it reports is the socket's.  (Other servers must not rewrite the peer from headers
either, e.g. ``uvicorn --no-proxy-headers``: the app cannot tell a rewritten peer apart.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCHEMES = {
    "http": ("http", "ws"),
    "https": ("https", "wss"),
    "ws": ("http", "ws"),
    "wss": ("https", "wss"),
}


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse IP addresses and CIDR blocks (``10.0.0.0/8``, ``::1``) into networks.

    Raises
    ------
    ValueError
        An entry is neither an IP address nor a network.
    """
    networks = []
    for entry in entries:
        text = entry.strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or CIDR block") from exc
    return tuple(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``text`` (bare, ``[v6]``, ``v4:port`` or ``[v6]:port``), or None."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has several colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """Resolve a request's client address and scheme, believing headers of trusted peers only.

    Parameters
    ----------
    proxies
        IP addresses and CIDR blocks of the reverse proxies in front of the API.  Empty (the
        default): forwarded headers are ignored and the peer address is the client.
    """

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        self.networks = parse_networks(proxies)
        if not self.networks:
            # The common case stays a single lookup: nothing in a header can matter.
            self.client_ip = self._peer  # type: ignore[method-assign]
            self.scheme = self._own_scheme  # type: ignore[method-assign]

    def trusts(self, host: str | None) -> bool:
        """Return whether ``host`` (an address, as text) lies in a trusted proxy network."""
        if not host or not self.networks:
            return False
        address = _ip(host)
        return address is not None and any(address in net for net in self.networks)

    @staticmethod
    def _peer(scope: Scope) -> str | None:
        peer = scope.get("client")
        return peer[0] if peer else None

    @staticmethod
    def _own_scheme(scope: Scope) -> str:
        return str(scope.get("scheme") or ("ws" if scope["type"] == "websocket" else "http"))

    def _header_values(self, scope: Scope, header: bytes) -> list[str]:
        """Every comma-separated entry of every ``header`` line, in order."""
        values: list[str] = []
        for name, value in scope["headers"]:
            if name == header:
                values.extend(part.strip() for part in value.decode("latin-1").split(","))
        return [v for v in values if v]

    def client_ip(self, scope: Scope) -> str | None:
        """Return the client's IP address for ``scope`` (an HTTP or WebSocket connection).

        The peer address, unless the peer is a trusted proxy: then the rightmost
        ``X-Forwarded-For`` entry outside the trusted networks (the last hop no trusted proxy
        vouches for), or the leftmost one when every hop is trusted.  An entry that is not an IP
        address (``unknown``, garbage) ends the walk and the peer is used: it is never written
        to the audit log or used as a rate-limit key.
        """
        peer = self._peer(scope)
        if not self.trusts(peer):
            return peer
        entries = self._header_values(scope, b"x-forwarded-for")
        chosen = None
        for entry in reversed(entries):
            address = _ip(entry)
            if address is None:
                return peer
            chosen = str(address)
            if not any(address in net for net in self.networks):
                return chosen
        return chosen or peer

    def scheme(self, scope: Scope) -> str:
        """Return the scheme the client used: ``X-Forwarded-Proto`` from a trusted proxy, else
        the connection's own (``http``/``https`` or ``ws``/``wss``)."""
        own = self._own_scheme(scope)
        if not self.trusts(self._peer(scope)):
            return own
        values = self._header_values(scope, b"x-forwarded-proto")
        if not values:
            return own
        pair = _SCHEMES.get(values[-1].lower())
        if pair is None:
            return own
        return pair[1] if scope["type"] == "websocket" else pair[0]

    def is_https(self, scope: Scope) -> bool:
        """Return whether the client reached us over TLS (``https``/``wss``)."""
        return self.scheme(scope) in ("https", "wss")
