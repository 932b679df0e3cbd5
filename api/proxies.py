"""Who the client is: the peer's address, or the one a trusted reverse proxy forwarded for it.

Any client can send `X-Forwarded-For`, so the header counts only on a connection from an address in
HC_TRUSTED_PROXIES (empty by default: nobody's). Then the client is the right-most address in the
header that is not itself a trusted proxy (each proxy appends the peer it saw, so everything left of
that was written by the client and proves nothing). An entry that is not an IP address is never
believed: the proxy's own address stands instead, so nothing unbounded reaches the audit trail or
the throttles.

The decision is made once per request, here, and kept in the ASGI scope: `client_address(scope)`
and `via_trusted_proxy(scope)` (for anything else a trusted proxy may vouch for, such as a
correlation id). uvicorn's own proxy handling is off (`healthcare serve api`), so this is the only
place that reads the headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_STATE_TRUSTED = "via_trusted_proxy"


def _parse(value: str) -> IPAddress | None:
    """An IP address, with an optional port (`1.2.3.4:5`, `[::1]:5`); None for anything else."""
    value = value.strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address.scope_id:  # a zone id is free text: drop it
            address = ipaddress.IPv6Address(int(address))
    return address


class TrustedProxies:
    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self.trusts = lru_cache(maxsize=1024)(self._trusts)

    def _trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def client(self, peer: str | None, forwarded_for: list[str]) -> tuple[str | None, bool]:
        """(the client's address, whether the peer is a trusted proxy)."""
        peer_address = _parse(peer) if peer else None
        if peer_address is None:
            return None, False
        if not self._networks or not self.trusts(peer_address):
            return str(peer_address), False
        client = peer_address
        for entry in reversed([e for header in forwarded_for for e in header.split(",")]):
            hop = _parse(entry)
            if hop is None:  # garbage where a proxy's entry should be: stop believing the header
                break
            client = hop
            if not self.trusts(hop):
                break
        return str(client), True


class ClientAddressMiddleware:
    """Pure ASGI; sets scope["client"] to the client's address (an IP address or None)."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Iterable[str]) -> None:
        self.app = app
        self.proxies = TrustedProxies(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            forwarded = [
                value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"
            ]
            address, trusted = self.proxies.client(peer[0] if peer else None, forwarded)
            port = peer[1] if peer and not trusted else 0
            scope["client"] = (address, port) if address else None
            scope.setdefault("state", {})[_STATE_TRUSTED] = trusted
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def via_trusted_proxy(scope: Scope) -> bool:
    """Whether this request came through a proxy of HC_TRUSTED_PROXIES (its headers may be believed)."""
    return bool(scope.get("state", {}).get(_STATE_TRUSTED, False))
