"""Schemathesis hooks for tests/test_openapi_fuzz.py: what the served document says in
words, generated.

The document names four formats of this gateway's own (a JSON schema cannot spell them):
``go-duration``, ``cidr``, ``aip160-filter``, ``field-mask``; and ``page-token``, which only
the server makes. Valid values of each are generated here. Two constraints are not about
one value but about the world: key material must be a real key (JWK admin, Okta
resource-server keys), and an updated ``expire_time`` must lie in the future. For
schema-valid (positive) cases, ``before_call`` gives those fields real values; negative
cases are left as generated.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from datetime import UTC, datetime
from typing import Any

import schemathesis
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import strategies as st

from gateway.crypto import jwk

_UNITS = st.sampled_from(["s", "m", "h"])
# 1s to 100h: within the default GATEWAY_MAX_KEY_TTL (8760h) and every key's lifetime
schemathesis.openapi.format("go-duration", st.builds(lambda n, unit: f"{n}{unit}",
                                                  st.integers(1, 100), _UNITS))


def _network(address: ipaddress.IPv4Address | ipaddress.IPv6Address, bits: int) -> str:
    prefix = bits % (address.max_prefixlen + 1)
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


schemathesis.openapi.format("cidr", st.builds(
    _network, st.ip_addresses(), st.integers(0, 128)))

_ACTOR = st.text(st.characters(codec="ascii", categories=("L", "N")), max_size=20)
_TERMS = st.one_of(
    st.builds(lambda a: f'actor_id="{a}"', _ACTOR),
    st.sampled_from(["status=KEY_STATUS_ACTIVE", "status=KEY_STATUS_REVOKED",
                     "status=KEY_STATUS_EXPIRED", "status=ACTIVE"]))
schemathesis.openapi.format("aip160-filter", st.one_of(
    st.just(""), _TERMS,
    st.builds(lambda a, s: f'actor_id="{a}" AND {s}', _ACTOR,
              st.sampled_from(["status=KEY_STATUS_ACTIVE", "status=KEY_STATUS_REVOKED"]))))

# whole fields (a sub-path, rate_limit_policy.quota, merges into what the key holds: whether
# the result is whole depends on the key)
_UPDATABLE = ["name", "scopes", "metadata", "ip_restriction", "rate_limit_policy",
              "rateLimitPolicy", "metadata.team"]
schemathesis.openapi.format("field-mask", st.builds(
    ",".join, st.lists(st.sampled_from(_UPDATABLE), max_size=3)))
schemathesis.openapi.format("page-token", st.just(""))
schemathesis.openapi.format("aip160-audit-filter", st.one_of(
    st.just(""), st.sampled_from(['action="key.issued"', 'outcome="failure"',
                                  'time >= "2026-01-01T00:00:00Z"',
                                  'principal="system" AND time < "2030-01-01T00:00:00Z"'])))

# One key of each kind the JWK admin generates, made once: a key per case would be slow.
_JWKS = [jwk.generate(alg, "pool", "sig").to_dict(private=True)
         for alg in ("ES256", "EdDSA", "HS256", "RS256")]
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_SEQUENCE = iter(range(10**9))


def _real_jwk(kid: str) -> dict[str, Any]:
    n = next(_SEQUENCE)
    return {**_JWKS[n % len(_JWKS)], "kid": kid}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every phase's cases pass here (the stateful phase's too), just before they are
    sent."""
    if case.meta is None or case.meta.generation.mode.is_negative:
        return
    op = case.operation.definition.raw.get("operationId", "")
    body = case.body
    if op.startswith("setJsonWebKeySet") and isinstance(body, dict):
        case.body = {"keys": [_real_jwk(f"fuzz-{next(_SEQUENCE)}")]}
    elif op.startswith("setJsonWebKey") and isinstance(body, dict):
        case.body = {k: v for k, v in _real_jwk("").items() if k != "kid"}  # the path's
    elif op == "addOAuth2ResourceServerJsonWebKey" and isinstance(body, dict):
        case.body = {**body, "kid": f"fuzz-{next(_SEQUENCE)}", "n": _b64(_RSA.n),
                     "e": _b64(_RSA.e)}
    elif op.endswith("Usage") and isinstance(case.query, dict):
        # a span of at most 10,000 buckets, end after start: the default span
        case.query = {k: v for k, v in case.query.items()
                      if k not in ("start_time", "end_time")}
    elif op.startswith("adminUpdate") and isinstance(body, dict) and body.get("expire_time"):
        future = datetime.fromtimestamp(time.time() + 86_400, UTC)
        case.body = {**body, "expire_time": future.strftime("%Y-%m-%dT%H:%M:%SZ")}
