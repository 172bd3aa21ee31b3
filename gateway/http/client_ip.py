"""The client's address: the TCP peer, or what a trusted proxy says it forwarded for.

``X-Forwarded-For`` / ``X-Real-IP`` are believed only when the TCP peer is one of
``settings.trusted_proxies``; otherwise the peer address is the client. A forwarded address
that does not parse gives None, and every check that needs an address then fails closed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, MutableMapping
from typing import Any

from gateway.cache.entry import address_in


class Trusted:
    """The proxies whose forwarding headers are believed: addresses or CIDR ranges."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        networks = [ipaddress.ip_network(e, strict=False) for e in entries]
        self._exact = frozenset(str(n.network_address) for n in networks
                                if n.num_addresses == 1)
        self._ranges = tuple(n for n in networks if n.num_addresses > 1)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        if address in self._exact:
            return True
        return bool(self._ranges) and address_in(address, self._ranges)


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_ip(scope: MutableMapping[str, Any], headers: Mapping[bytes, bytes],
              trusted: Trusted) -> str | None:
    """The client's address for this ASGI scope (``headers``: the scope's, as a dict)."""
    client = scope.get("client")
    peer: str | None = client[0] if client else None
    if peer not in trusted:
        return peer
    forwarded = headers.get(b"x-forwarded-for")
    if forwarded:
        hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            if hop not in trusted:
                return _valid_ip(hop)
        return _valid_ip(hops[0]) if hops else peer
    real = headers.get(b"x-real-ip")
    return _valid_ip(real.decode("latin-1").strip()) if real else peer
