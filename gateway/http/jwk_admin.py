"""Ory JWK admin API (Hydra-style key sets): ``/admin/keys/{set}[/{kid}]`` and the older
``/keys/{set}[/{kid}]`` paths. Transport only; the rules live in ``gateway.signing.jwk_sets``.

Admin bearer auth on every route; errors are Ory's ErrorOAuth2 body. Reads never return
private parts (keys without a public form, like ``oct``, are left out).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.crypto import jwk
from gateway.errors import MethodNotAllowed
from gateway.http.auth import require_admin
from gateway.http.errors import oauth2
from gateway.http.openapi import STR, STRS, Operation, add_operations, enum, obj, ref
from gateway.http.wire import JSONResponse, read_json
from gateway.signing import JwkSets
from gateway.signing.jwk_sets import MAX_KEYS

BODY_LIMIT = 256 << 10


def _sets(request: Request) -> JwkSets:
    sets: JwkSets = request.app.state.services.jwk_sets
    return sets


def _key_set(keys: list[dict[str, Any]], status: int = 200) -> Response:
    return JSONResponse({"keys": keys}, status_code=status)


@oauth2
async def key_set(request: Request) -> Response:
    await require_admin(request)
    sets = _sets(request)
    set_id = request.path_params["set"]
    method = request.method
    if method == "GET":
        return _key_set(await sets.get_set(set_id))
    if method == "POST":
        return _key_set(await sets.generate(set_id, await read_json(request, BODY_LIMIT)), 201)
    if method == "PUT":
        return _key_set(await sets.replace_set(set_id, await read_json(request, BODY_LIMIT)))
    if method == "DELETE":
        await sets.delete_set(set_id)
        return Response(status_code=204)
    raise MethodNotAllowed(method, request.url.path, "GET, POST, PUT, DELETE")


@oauth2
async def key(request: Request) -> Response:
    await require_admin(request)
    sets = _sets(request)
    set_id, kid = request.path_params["set"], request.path_params["kid"]
    method = request.method
    if method == "GET":
        return _key_set(await sets.get_key(set_id, kid))
    if method == "PUT":
        stored = await sets.put_key(set_id, kid, await read_json(request, BODY_LIMIT))
        return JSONResponse(stored)
    if method == "DELETE":
        await sets.delete_key(set_id, kid)
        return Response(status_code=204)
    raise MethodNotAllowed(method, request.url.path, "GET, PUT, DELETE")


# A JWK as the server reads it: ``kty`` and ``alg`` must agree, and the key material must
# be a valid key of that type, which a schema cannot say (tests/schemathesis_hooks.py
# sends real keys). Members it does not know are kept, as Hydra keeps them.
_MEMBERS = ("n", "e", "d", "p", "q", "dp", "dq", "qi", "crv", "x", "y", "k")
_JWK = obj(("kty", "alg"), kty=enum("RSA", "EC", "OKP", "oct"), kid=STR,
           use={**enum(*jwk.USES), "nullable": True}, alg=enum(*jwk.ALGORITHMS),
           x5c=STRS, **{n: STR for n in _MEMBERS})
_SCHEMAS = {
    "JsonWebKey": _JWK,
    "JsonWebKeySet": obj(keys={"type": "array", "items": ref("JsonWebKey")}),
    # a set must keep a private key: at least one key
    "SetJsonWebKeySetBody": obj(("keys",), keys={"type": "array", "items": ref("JsonWebKey"),
                                                 "minItems": 1, "maxItems": MAX_KEYS}),
    "CreateJsonWebKeySet": obj(("alg", "use"), alg=enum(*jwk.GENERATE), use=enum(*jwk.USES),
                               kid={**STR, "nullable": True}),
    "ErrorOAuth2": obj(("error",), error=STR, error_description=STR, error_hint=STR,
                       error_debug=STR, status_code={"type": "integer"}),
}
_OPERATIONS: list[Operation] = []
for _prefix, _suffix in (("/admin/keys", ""), ("/keys", "Legacy")):
    _OPERATIONS += [
        ("post", f"{_prefix}/{{set}}", f"createJsonWebKeySet{_suffix}", 201,
         "CreateJsonWebKeySet", "JsonWebKeySet", True),
        ("get", f"{_prefix}/{{set}}", f"getJsonWebKeySet{_suffix}", 200, None,
         "JsonWebKeySet", True),
        ("put", f"{_prefix}/{{set}}", f"setJsonWebKeySet{_suffix}", 200,
         "SetJsonWebKeySetBody", "JsonWebKeySet", True),
        ("delete", f"{_prefix}/{{set}}", f"deleteJsonWebKeySet{_suffix}", 204, None, None, True),
        ("get", f"{_prefix}/{{set}}/{{kid}}", f"getJsonWebKey{_suffix}", 200, None,
         "JsonWebKeySet", True),
        ("put", f"{_prefix}/{{set}}/{{kid}}", f"setJsonWebKey{_suffix}", 200, "JsonWebKey",
         "JsonWebKey", True),
        ("delete", f"{_prefix}/{{set}}/{{kid}}", f"deleteJsonWebKey{_suffix}", 204, None, None,
         True),
    ]
add_operations(_OPERATIONS, _SCHEMAS)


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for prefix in ("/admin/keys", "/keys"):
        out += [Route(f"{prefix}/{{set}}", key_set, methods=["GET", "POST", "PUT", "DELETE"]),
                Route(f"{prefix}/{{set}}/{{kid}}", key, methods=["GET", "PUT", "DELETE"])]
    return out
