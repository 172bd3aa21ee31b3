"""Okta authorization-server keys: credential keys (list, get, ``keyRotate``) and
resource-server encryption keys. Transport only.

Admin auth accepts ``SSWS <token>``, ``SSWS<token>`` (what okta's Python SDK sends) and
``Bearer <token>``. Errors are Okta's Error body (``errorCode`` always present). The only
authorization server is ``default`` (see ``gateway.signing.keyring``); any other id is
404 ``E0000007``. Bodies are camelCase with HAL ``_links``; times look like
``2023-04-06T21:32:33.000Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.errors import InvalidArgument
from gateway.http.auth import require_admin
from gateway.http.errors import okta
from gateway.http.openapi import STR, Operation, add_operations, obj, ref
from gateway.http.wire import JSONResponse, read_json
from gateway.signing import Generation, Keyring, ResourceServerKeys
from gateway.signing.resource_keys import ACTIVE, ResourceKey

SCHEMES = ("bearer", "ssws")
BODY_LIMIT = 64 << 10
_BASE = "/api/v1/authorizationServers/{authServerId}"


def okta_time(us: int) -> str:
    """``2023-04-06T21:32:33.000Z`` (milliseconds, UTC)."""
    dt = datetime.fromtimestamp(us // 1000 / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _href(request: Request, path: str, *methods: str) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {"href": base + path, "hints": {"allow": list(methods)}}


def _server_path(server: str) -> str:
    return f"/api/v1/authorizationServers/{quote(server, safe='')}"


def _keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.services.signing
    return keyring


def _resource_keys(request: Request) -> ResourceServerKeys:
    keys: ResourceServerKeys = request.app.state.services.resource_keys
    return keys


async def _admin(request: Request) -> str:
    await require_admin(request, SCHEMES)
    server: str = request.path_params["authServerId"]
    return server


# -- credential keys -------------------------------------------------------------------


def credential_key_wire(request: Request, server: str, gen: Generation) -> dict[str, Any]:
    public = gen.credential.to_dict(private=False) or {}
    path = f"{_server_path(server)}/credentials/keys/{quote(gen.kid, safe='')}"
    return {"kid": gen.kid, "kty": public["kty"], "alg": public["alg"], "use": public["use"],
            "e": public["e"], "n": public["n"], "status": gen.status.value,
            "_links": {"self": _href(request, path, "GET")}}


@okta
async def list_credential_keys(request: Request) -> Response:
    server = await _admin(request)
    gens = _keyring(request).generations(server)
    return JSONResponse([credential_key_wire(request, server, g) for g in gens])


@okta
async def get_credential_key(request: Request) -> Response:
    server = await _admin(request)
    gen = _keyring(request).generation(server, request.path_params["keyId"])
    return JSONResponse(credential_key_wire(request, server, gen))


@okta
async def rotate_credential_keys(request: Request) -> Response:
    server = await _admin(request)
    keyring = _keyring(request)
    keyring.require_server(server)
    body = await read_json(request, BODY_LIMIT)
    if not isinstance(body, dict) or body.get("use") != "sig":
        raise InvalidArgument("use: must be sig")
    gens = await keyring.rotate(server)
    await request.app.state.services.signing_changed()
    return JSONResponse([credential_key_wire(request, server, g) for g in gens])


# -- resource-server keys --------------------------------------------------------------


def resource_key_wire(request: Request, server: str, key: ResourceKey) -> dict[str, Any]:
    path = f"{_server_path(server)}/resourceservercredentials/keys/{quote(key.id, safe='')}"
    if key.status == ACTIVE:
        links = {"deactivate": _href(request, f"{path}/lifecycle/deactivate", "POST")}
    else:
        links = {"activate": _href(request, f"{path}/lifecycle/activate", "POST"),
                 "delete": _href(request, path, "DELETE")}
    return {"id": key.id, "kid": key.kid, "kty": key.kty, "use": key.use, "e": key.e,
            "n": key.n, "status": key.status, "created": okta_time(key.created),
            "lastUpdated": okta_time(key.last_updated), "_links": links}


@okta
async def resource_keys(request: Request) -> Response:
    server = await _admin(request)
    keys = _resource_keys(request)
    if request.method == "POST":
        added = await keys.add(server, await read_json(request, BODY_LIMIT))
        return JSONResponse(resource_key_wire(request, server, added), status_code=201)
    return JSONResponse([resource_key_wire(request, server, k)
                         for k in await keys.list_keys(server)])


@okta
async def resource_key(request: Request) -> Response:
    server = await _admin(request)
    keys = _resource_keys(request)
    key_id = request.path_params["keyId"]
    if request.method == "DELETE":
        await keys.delete(server, key_id)
        return Response(status_code=204)
    return JSONResponse(resource_key_wire(request, server, await keys.get(server, key_id)))


@okta
async def activate_resource_key(request: Request) -> Response:
    server = await _admin(request)
    key = await _resource_keys(request).activate(server, request.path_params["keyId"])
    return JSONResponse(resource_key_wire(request, server, key))


@okta
async def deactivate_resource_key(request: Request) -> Response:
    server = await _admin(request)
    key = await _resource_keys(request).deactivate(server, request.path_params["keyId"])
    return JSONResponse(resource_key_wire(request, server, key))


def _or_empty(value: str) -> dict[str, Any]:
    """``value``, or left out (``""`` or ``null``), which reads as ``value``."""
    return {"type": "string", "enum": [value, ""], "nullable": True}


_HREF = obj(("href",), href=STR, hints=obj(allow={"type": "array", "items": STR}))
_SCHEMAS = {
    "HrefObject": _HREF,
    "AuthorizationServerJsonWebKey": obj(
        kid=STR, kty=STR, alg=STR, use=STR, n=STR, e=STR, status=STR,
        _links=obj(self=ref("HrefObject"))),
    "JwkUse": obj(("use",), use={"type": "string", "enum": ["sig"]}),
    "OAuth2ResourceServerJsonWebKey": obj(
        id=STR, kid=STR, kty=STR, use=STR, e=STR, n=STR,
        status={"type": "string", "enum": ["ACTIVE", "INACTIVE"]},
        created=STR, lastUpdated=STR,
        _links=obj(activate=ref("HrefObject"), delete=ref("HrefObject"))),
    # added INACTIVE (activated afterwards), an RSA key that encrypts; ``n`` and ``e`` must
    # be a valid RSA public key, which a schema cannot say
    "OAuth2ResourceServerJsonWebKeyRequestBody": obj(
        ("kid", "e", "n"), kid={**STR, "minLength": 1}, kty=_or_empty("RSA"),
        use=_or_empty("enc"), e={**STR, "minLength": 1}, n={**STR, "minLength": 1},
        status=_or_empty("INACTIVE")),
    "AuthorizationServerJsonWebKeyList": {
        "type": "array", "items": ref("AuthorizationServerJsonWebKey")},
    "OAuth2ResourceServerJsonWebKeyList": {
        "type": "array", "items": ref("OAuth2ResourceServerJsonWebKey")},
    "OktaError": obj(("errorCode", "errorSummary"), errorCode=STR, errorSummary=STR,
                     errorLink=STR, errorId=STR,
                     errorCauses={"type": "array", "items": obj(errorSummary=STR)}),
}
_RS = f"{_BASE}/resourceservercredentials/keys"
_OPERATIONS: list[Operation] = [
    ("get", f"{_BASE}/credentials/keys", "listAuthorizationServerKeys", 200, None,
     "AuthorizationServerJsonWebKeyList", True),
    ("get", f"{_BASE}/credentials/keys/{{keyId}}", "getAuthorizationServerKey", 200, None,
     "AuthorizationServerJsonWebKey", True),
    ("post", f"{_BASE}/credentials/lifecycle/keyRotate", "rotateAuthorizationServerKeys",
     200, "JwkUse", "AuthorizationServerJsonWebKeyList", True),
    ("get", _RS, "listOAuth2ResourceServerJsonWebKeys", 200, None,
     "OAuth2ResourceServerJsonWebKeyList", True),
    ("post", _RS, "addOAuth2ResourceServerJsonWebKey", 201,
     "OAuth2ResourceServerJsonWebKeyRequestBody", "OAuth2ResourceServerJsonWebKey", True),
    ("get", f"{_RS}/{{keyId}}", "getOAuth2ResourceServerJsonWebKey", 200, None,
     "OAuth2ResourceServerJsonWebKey", True),
    ("delete", f"{_RS}/{{keyId}}", "deleteOAuth2ResourceServerJsonWebKey", 204, None, None,
     True),
    ("post", f"{_RS}/{{keyId}}/lifecycle/activate", "activateOAuth2ResourceServerJsonWebKey",
     200, None, "OAuth2ResourceServerJsonWebKey", True),
    ("post", f"{_RS}/{{keyId}}/lifecycle/deactivate",
     "deactivateOAuth2ResourceServerJsonWebKey", 200, None, "OAuth2ResourceServerJsonWebKey",
     True),
]
add_operations(_OPERATIONS, _SCHEMAS)


def routes() -> list[BaseRoute]:
    return [
        Route(f"{_BASE}/credentials/keys", list_credential_keys, methods=["GET"]),
        Route(f"{_BASE}/credentials/keys/{{keyId}}", get_credential_key, methods=["GET"]),
        Route(f"{_BASE}/credentials/lifecycle/keyRotate", rotate_credential_keys,
              methods=["POST"]),
        Route(_RS, resource_keys, methods=["GET", "POST"]),
        Route(f"{_RS}/{{keyId}}", resource_key, methods=["GET", "DELETE"]),
        Route(f"{_RS}/{{keyId}}/lifecycle/activate", activate_resource_key, methods=["POST"]),
        Route(f"{_RS}/{{keyId}}/lifecycle/deactivate", deactivate_resource_key,
              methods=["POST"]),
    ]
