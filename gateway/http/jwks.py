"""Public keys for verifying derived JWTs (public parts only, from the keyring in memory).

    GET /v2alpha1/derivedKeys/jwks.json         public; Ory's wrapper {"jwks": {"keys": []}}
    GET /v2alpha1/admin/derivedKeys/jwks.json   the same, admin bearer (clients ≤ 1.22.40)
    GET /.well-known/jwks.json                  public; a bare JWKS {"keys": []} (Hydra's
                                                discoverJsonWebKeys), for generic JWT tools

All list the active signer, the NEXT one (published before it signs) and retired keys
whose tokens may still be alive.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.http.auth import require_admin
from gateway.http.errors import oauth2, ory
from gateway.http.openapi import STR, Operation, add_operations, obj, ref
from gateway.http.wire import JSONResponse
from gateway.signing import Keyring

# short: relying parties that meet an unknown kid should refetch anyway
CACHE_CONTROL = "public, max-age=60"


def _keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.services.signing
    return keyring


@ory
async def derived_jwks(request: Request) -> Response:
    return JSONResponse({"jwks": {"keys": _keyring(request).jwks()}},
                        headers={"Cache-Control": CACHE_CONTROL})


@ory
async def admin_derived_jwks(request: Request) -> Response:
    await require_admin(request)
    return JSONResponse({"jwks": {"keys": _keyring(request).jwks()}})


@oauth2
async def well_known_jwks(request: Request) -> Response:
    return JSONResponse({"keys": _keyring(request).jwks()},
                        headers={"Cache-Control": CACHE_CONTROL})


_PUBLIC_JWK = obj(("kty", "kid"), **{n: STR for n in (
    "kty", "kid", "use", "alg", "crv", "x", "y", "n", "e")})
_SCHEMAS = {
    "PublicJsonWebKey": _PUBLIC_JWK,
    "GetJWKSResponse": obj(jwks=obj(("keys",), keys={"type": "array",
                                                      "items": ref("PublicJsonWebKey")})),
    "PublicJsonWebKeySet": obj(keys={"type": "array", "items": ref("PublicJsonWebKey")}),
}
_OPERATIONS: list[Operation] = [
    ("get", "/v2alpha1/derivedKeys/jwks.json", "getJwks", 200, None, "GetJWKSResponse", False),
    ("get", "/v2alpha1/admin/derivedKeys/jwks.json", "adminGetJwks", 200, None,
     "GetJWKSResponse", True),
    ("get", "/.well-known/jwks.json", "discoverJsonWebKeys", 200, None, "PublicJsonWebKeySet",
     False),
]
add_operations(_OPERATIONS, _SCHEMAS)


def routes() -> list[BaseRoute]:
    return [
        Route("/v2alpha1/derivedKeys/jwks.json", derived_jwks, methods=["GET"]),
        Route("/v2alpha1/admin/derivedKeys/jwks.json", admin_derived_jwks, methods=["GET"]),
        Route("/.well-known/jwks.json", well_known_jwks, methods=["GET"]),
    ]
