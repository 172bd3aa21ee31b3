"""The OpenAPI 3.0 document the gateway serves at ``/openapi.json``.

Built once from the ``OPERATIONS`` table (one row per route the gateway implements) and
the ``SCHEMAS`` table of wire models, so adding a route means adding a row.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.http.verify_routes import MAX_BATCH as MAX_BATCH_VERIFY
from gateway.http.wire import JSONResponse
from gateway.keys.fields import MAX_CIDRS, MAX_CREDENTIAL_LENGTH, MAX_INT64, MAX_SCOPES, MAX_TEXT
from gateway.keys.listing import DEFAULT_PAGE_SIZE, MAX_FILTER_LENGTH, MAX_PAGE_SIZE
from gateway.keys.service import MAX_BATCH_IMPORT

S = "string"
STR: dict[str, Any] = {"type": S}
STRS: dict[str, Any] = {"type": "array", "items": STR}
TIME: dict[str, Any] = {"type": S, "format": "date-time"}
OBJ: dict[str, Any] = {"type": "object", "additionalProperties": True}
CREDENTIAL: dict[str, Any] = {"type": S, "minLength": 1, "maxLength": MAX_CREDENTIAL_LENGTH}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def enum(*values: str) -> dict[str, Any]:
    return {"type": S, "enum": list(values)}


def obj(required: tuple[str, ...] = (), /, **props: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def message(required: tuple[str, ...] = (), /, **props: dict[str, Any]) -> dict[str, Any]:
    """A request message as the server reads it: no field it does not know (its
    lowerCamelCase spelling, ``actorId``, is read too, as grpc-gateway reads it), and
    ``null`` for any field it does not require, read as unset (as protojson reads it)."""
    schema = obj(required, **{name: prop if name in required else _nullable(prop)
                              for name, prop in props.items()})
    schema["additionalProperties"] = False
    return schema


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    if prop.get("readOnly"):
        return prop
    if "enum" in prop:  # OpenAPI 3.0.3: a nullable enum lists null
        return {**prop, "nullable": True, "enum": [*prop["enum"], None]}
    return {**prop, "nullable": True}


# What the readers of gateway.keys.fields accept, so that the document says it exactly.
# Formats of this gateway's own (a schema cannot say them; tests/schemathesis_hooks.py
# generates them): "go-duration" ("3600s", "1h30m", "1d": Go's durations, and days, weeks,
# months of 30 days and years of 365 days), "cidr" (an IP network in the
# canonical form, host bits zero), "aip160-filter" and "field-mask".
TEXT: dict[str, Any] = {"type": S, "maxLength": MAX_TEXT}
# no control characters (C0, DEL, C1) or line and paragraph separators
ACTOR: dict[str, Any] = {**TEXT, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"}
# an OAuth scope-token: visible ASCII, no comma
SCOPES: dict[str, Any] = {"type": "array", "maxItems": MAX_SCOPES, "items": {
    "type": S, "minLength": 1, "maxLength": MAX_TEXT, "pattern": "^[!-+\\--~]+$"}}
TEXTS: dict[str, Any] = {"type": "array", "maxItems": MAX_SCOPES,
                         "items": {"type": S, "minLength": 1, "maxLength": MAX_TEXT}}
DURATION: dict[str, Any] = {"type": S, "format": "go-duration", "maxLength": 64}
VISIBILITY = enum("KEY_VISIBILITY_UNSPECIFIED", "KEY_VISIBILITY_SECRET", "KEY_VISIBILITY_PUBLIC")
IP_RESTRICTION = message(allowed_cidrs={"type": "array", "maxItems": MAX_CIDRS,
                                        "items": {"type": S, "format": "cidr"}})
# {} (no limit), or a positive quota over a whole number of seconds, at least 1s
RATE_LIMIT: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "quota": {"oneOf": [{"type": S, "pattern": "^0*[1-9][0-9]{0,17}$"},
                            {"type": "integer", "minimum": 1, "maximum": MAX_INT64}]},
        "window": {**DURATION, "description": "a whole number of seconds, at least 1s"},
        "unit": _nullable(enum("", "requests"))},
    "anyOf": [{"required": ["quota", "window"]}, {"maxProperties": 0}]}
_CREATE_FIELDS = dict(
    name=TEXT, actor_id=ACTOR, scopes=SCOPES, ttl=DURATION, metadata=OBJ,
    ip_restriction=IP_RESTRICTION, rate_limit_policy=RATE_LIMIT, visibility=VISIBILITY,
    request_id={"type": S, "maxLength": 256},
)
# An update reads the updatable fields; the others are sent back as GET gave them and
# ignored (actor_id and visibility cannot change), so they are readOnly here.
_READ_ONLY = ("key_id", "status", "visibility", "actor_id", "create_time", "update_time",
              "last_used_time", "revocation_reason", "revocation_description")
_KEY_FIELDS = dict(
    key_id=STR, name=STR, actor_id=STR, scopes=STRS, status=ref("KeyStatus"),
    visibility=ref("KeyVisibility"), metadata=OBJ, ip_restriction=ref("IPRestriction"),
    rate_limit_policy=ref("RateLimitPolicy"), create_time=TIME, update_time=TIME,
    expire_time=TIME, last_used_time=TIME, revocation_reason=ref("RevocationReason"),
    revocation_description=STR,
)
_UPDATE = message(
    name=TEXT, scopes=SCOPES, metadata=OBJ, ip_restriction=IP_RESTRICTION,
    rate_limit_policy=RATE_LIMIT, expire_time={**TIME, "description": "in the future"},
    **{name: {**_KEY_FIELDS[name], "readOnly": True} for name in _READ_ONLY})
_VERIFY_RESPONSE = dict(
    is_valid={"type": "boolean"}, error_code=ref("VerificationErrorCode"), error_message=STR,
    key_id=STR, actor_id=STR, scopes=STRS, status=ref("KeyStatus"),
    visibility=ref("KeyVisibility"), metadata=OBJ, expire_time=TIME, issuer=STR,
    audiences=STRS, rate_limit_policy=ref("RateLimitPolicy"), rate_limit_remaining=STR,
    rate_limit_reset_time=TIME,
)
_REASONS = ("REVOCATION_REASON_KEY_COMPROMISE", "REVOCATION_REASON_AFFILIATION_CHANGED",
            "REVOCATION_REASON_SUPERSEDED", "REVOCATION_REASON_PRIVILEGE_WITHDRAWN")
_IMPORT = message(("raw_key", "name", "actor_id"), **{
    **_CREATE_FIELDS, "raw_key": CREDENTIAL, "name": {**TEXT, "minLength": 1},
    "actor_id": {**ACTOR, "minLength": 1}})



def _batch_import_response(name: str, codes: str) -> dict[str, dict[str, Any]]:
    """The response schemas of one of the two batch-import routes (their error codes have
    each their own prefix)."""
    return {
        f"{name}ErrorCode": enum(*(f"{codes}_ERROR_{n}" for n in (
            "UNSPECIFIED", "INVALID_ARGUMENT", "ALREADY_EXISTS", "FAILED_PRECONDITION",
            "INTERNAL", "RESOURCE_EXHAUSTED"))),
        f"{name}Result": obj(
            index={"type": "integer", "format": "int32"},
            imported_api_key=ref("ImportedApiKey"), error_code=ref(f"{name}ErrorCode"),
            error_message=STR),
        f"{name}Response": obj(
            results={"type": "array", "items": ref(f"{name}Result")},
            success_count={"type": "integer"}, failure_count={"type": "integer"}),
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "KeyStatus": enum("KEY_STATUS_UNSPECIFIED", "KEY_STATUS_ACTIVE", "KEY_STATUS_REVOKED",
                      "KEY_STATUS_EXPIRED"),
    "KeyVisibility": VISIBILITY,
    "RevocationReason": enum("REVOCATION_REASON_UNSPECIFIED", *_REASONS),
    "TokenAlgorithm": enum("TOKEN_ALGORITHM_UNSPECIFIED", "TOKEN_ALGORITHM_JWT",
                           "TOKEN_ALGORITHM_MACAROON"),
    "VerificationErrorCode": enum(*(
        f"VERIFICATION_ERROR_{n}" for n in (
            "UNSPECIFIED", "INVALID_FORMAT", "EXPIRED", "REVOKED", "NOT_FOUND",
            "SIGNATURE_INVALID", "INTERNAL", "IP_NOT_ALLOWED", "RATE_LIMITED",
            "AUDIENCE_MISMATCH"))),
    "IPRestriction": obj(allowed_cidrs=STRS),
    "RateLimitPolicy": obj(quota={"type": S, "format": "int64"}, window=STR, unit=STR),
    "IssuedApiKey": obj(**_KEY_FIELDS),
    "ImportedApiKey": obj(**_KEY_FIELDS),
    "UpdateApiKeyBody": _UPDATE,
    "IssueApiKeyRequest": message(**_CREATE_FIELDS),
    "IssueApiKeyResponse": obj(issued_api_key=ref("IssuedApiKey"), secret=STR),
    "ImportApiKeyRequest": _IMPORT,
    "ListIssuedApiKeysResponse": obj(issued_api_keys={"type": "array",
                                                      "items": ref("IssuedApiKey")},
                                     next_page_token=STR),
    "ListImportedApiKeysResponse": obj(imported_api_keys={"type": "array",
                                                          "items": ref("ImportedApiKey")},
                                       next_page_token=STR),
    # a reason is required, and *_UNSPECIFIED is refused (400); a description only with
    # REVOCATION_REASON_PRIVILEGE_WITHDRAWN
    "AdminRevokeApiKeyBody": {
        **message(("reason",), reason=ref("GivenRevocationReason"),
                  description={"type": S, "maxLength": 1024}),
        "anyOf": [{"properties": {"reason": enum("REVOCATION_REASON_PRIVILEGE_WITHDRAWN")}},
                  {"properties": {"description": {"type": S, "maxLength": 0,
                                                  "nullable": True}}}]},
    "GivenRevocationReason": enum(*_REASONS),
    # a key's holder may not claim the administrators' reason
    "SelfRevocationReason": enum(*_REASONS[:3]),
    "AdminRotateIssuedApiKeyBody": message(
        name=TEXT, scopes=SCOPES, metadata=OBJ, ip_restriction=IP_RESTRICTION,
        rate_limit_policy=RATE_LIMIT, visibility=VISIBILITY),
    "RotateIssuedApiKeyResponse": obj(issued_api_key=ref("IssuedApiKey"),
                                      old_issued_api_key=ref("IssuedApiKey"), secret=STR),
    "BatchCreateImportedApiKeysRequest": message(("requests",), requests={
        "type": "array", "items": ref("ImportApiKeyRequest"), "minItems": 1,
        "maxItems": MAX_BATCH_IMPORT}),
    **_batch_import_response("BatchCreateImportedApiKeys", "BATCH_CREATE_IMPORTED_API_KEYS"),
    **_batch_import_response("BatchImportApiKeys", "BATCH_IMPORT"),
    "SelfRevokeApiKeyRequest": message(("credential", "reason"), credential=CREDENTIAL,
                                       reason=ref("SelfRevocationReason")),
    "VerifyApiKeyRequest": message(("credential",), credential=CREDENTIAL,
                                   expected_audiences={"type": "array", "items": STR}),
    "VerifyApiKeyResponse": obj(**_VERIFY_RESPONSE),
    "BatchVerifyApiKeysRequest": message(("requests",), requests={
        "type": "array", "items": ref("VerifyApiKeyRequest"), "maxItems": MAX_BATCH_VERIFY}),
    "BatchVerifyApiKeysResponse": obj(
        results={"type": "array", "items": ref("VerifyApiKeyResponse")}),
    "DeriveTokenRequest": message(
        ("credential",), credential=CREDENTIAL, algorithm=ref("TokenAlgorithm"),
        ttl=DURATION, scopes=TEXTS, audiences=TEXTS, custom_claims=OBJ),
    "Token": obj(token=STR, claims=OBJ, expire_time=TIME, scopes=STRS, audiences=STRS),
    "DeriveTokenResponse": obj(token=ref("Token")),
    "Status": obj(("code", "message"), code={"type": "integer", "format": "int32"},
                  message=STR, details={"type": "array", "items": OBJ}),
    # this gateway's own extension: a key's verifications by outcome over time
    "ApiKeyUsage": obj(
        key_id=STR, interval=enum("minute", "hour", "day"), start_time=TIME, end_time=TIME,
        total={"type": "integer"}, buckets={"type": "array", "items": obj(
            start_time=TIME, total={"type": "integer"},
            counts={"type": "object", "additionalProperties": {"type": "integer"}})}),
    "Empty": obj(),
    "Version": obj(("version",), version=STR),
}

# Statuses an operation may answer besides its success, by operationId (409: a conflict
# with the key's state, as Ory Talos answers; the rest are every admin route's).
_CONFLICTS = {"adminRevokeIssuedApiKey", "adminRevokeImportedApiKey", "adminRevokeApiKey",
              "adminRotateIssuedApiKey", "adminImportApiKey", "adminUpdateIssuedApiKey",
              "adminUpdateImportedApiKey", "adminIssueApiKey"}
_CREATES = {"adminIssueApiKey", "adminImportApiKey", "adminRotateIssuedApiKey"}

# (method, path, operationId, success status, request schema, response schema, admin?)
Operation = tuple[str, str, str, int, str | None, str | None, bool]
_B = "/v2alpha1/admin"
OPERATIONS: list[Operation] = [
    ("post", f"{_B}/issuedApiKeys", "adminIssueApiKey", 201, "IssueApiKeyRequest",
     "IssueApiKeyResponse", True),
    ("get", f"{_B}/issuedApiKeys", "adminListIssuedApiKeys", 200, None,
     "ListIssuedApiKeysResponse", True),
    ("get", f"{_B}/issuedApiKeys/{{key_id}}", "adminGetIssuedApiKey", 200, None,
     "IssuedApiKey", True),
    ("patch", f"{_B}/issuedApiKeys/{{key_id}}", "adminUpdateIssuedApiKey", 200,
     "UpdateApiKeyBody", "IssuedApiKey", True),
    ("post", f"{_B}/issuedApiKeys/{{key_id}}:revoke", "adminRevokeIssuedApiKey", 204,
     "AdminRevokeApiKeyBody", None, True),
    ("post", f"{_B}/issuedApiKeys/{{key_id}}:rotate", "adminRotateIssuedApiKey", 201,
     "AdminRotateIssuedApiKeyBody", "RotateIssuedApiKeyResponse", True),
    ("post", f"{_B}/importedApiKeys", "adminImportApiKey", 201, "ImportApiKeyRequest",
     "ImportedApiKey", True),
    ("get", f"{_B}/importedApiKeys", "adminListImportedApiKeys", 200, None,
     "ListImportedApiKeysResponse", True),
    ("get", f"{_B}/importedApiKeys/{{key_id}}", "adminGetImportedApiKey", 200, None,
     "ImportedApiKey", True),
    ("patch", f"{_B}/importedApiKeys/{{key_id}}", "adminUpdateImportedApiKey", 200,
     "UpdateApiKeyBody", "ImportedApiKey", True),
    ("delete", f"{_B}/importedApiKeys/{{key_id}}", "adminDeleteImportedApiKey", 204, None,
     None, True),
    ("post", f"{_B}/importedApiKeys/{{key_id}}:revoke", "adminRevokeImportedApiKey", 204,
     "AdminRevokeApiKeyBody", None, True),
    ("get", f"{_B}/issuedApiKeys/{{key_id}}/usage", "adminGetIssuedApiKeyUsage", 200, None,
     "ApiKeyUsage", True),
    ("get", f"{_B}/importedApiKeys/{{key_id}}/usage", "adminGetImportedApiKeyUsage", 200,
     None, "ApiKeyUsage", True),
    ("post", f"{_B}/importedApiKeys:batchCreate", "adminBatchCreateImportedApiKeys", 200,
     "BatchCreateImportedApiKeysRequest", "BatchCreateImportedApiKeysResponse", True),
    ("post", f"{_B}/importedApiKeys:batchImport", "adminBatchImportApiKeys", 200,
     "BatchCreateImportedApiKeysRequest", "BatchImportApiKeysResponse", True),
    ("post", f"{_B}/apiKeys/{{key_id}}:revoke", "adminRevokeApiKey", 204,
     "AdminRevokeApiKeyBody", None, True),
    ("post", "/v2alpha1/apiKeys:selfRevoke", "revokeApiKey", 200, "SelfRevokeApiKeyRequest",
     "Empty", False),
    ("post", f"{_B}/apiKeys:verify", "adminVerifyApiKey", 200, "VerifyApiKeyRequest",
     "VerifyApiKeyResponse", True),
    ("post", f"{_B}/apiKeys:batchVerify", "adminBatchVerifyApiKeys", 200,
     "BatchVerifyApiKeysRequest", "BatchVerifyApiKeysResponse", True),
    ("post", f"{_B}/apiKeys:derive", "adminDeriveToken", 200, "DeriveTokenRequest",
     "DeriveTokenResponse", True),
    # forward auth answers any method: proxies ask with the client's (OpenAPI can name
    # these eight)
    *((method, path, f"forwardAuth{below}{'' if method == 'get' else method.title()}", 200,
       None, None, False)
      for path, below in (("/v2alpha1/decisions", ""), ("/v2alpha1/decisions/{path}", "Below"))
      for method in ("get", "head", "post", "put", "patch", "delete", "options", "trace")),
    ("get", "/version", "getVersion", 200, None, "Version", False),
    ("get", "/metrics", "metrics", 200, None, None, False),
    ("get", "/openapi.json", "openapi", 200, None, None, False),
    ("get", "/health/alive", "isAlive", 200, None, None, False),
    ("get", "/health/ready", "isReady", 200, None, None, False),
]


# query parameters of operations other modules register, by operationId
_QUERY: dict[str, list[dict[str, Any]]] = {}


def add_operations(extra: list[Operation], schemas: dict[str, dict[str, Any]],
                   query: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Other route modules register their rows here at import time."""
    OPERATIONS.extend(extra)
    SCHEMAS.update(schemas)
    _QUERY.update(query or {})


# The statuses of forward auth (the body is never read; nothing is a 400).
_DECISIONS = {"401": "the credential is missing or does not pass",
              "403": "an address, scope or audience the key does not allow",
              "429": "the key's rate limit is spent", "503": "the store cannot be reached"}
# Requests whose body may be left out: every field of theirs is optional.
# (An update without one changes nothing, or clears the fields its mask names.)
_OPTIONAL_BODY = {"adminIssueApiKey", "adminRotateIssuedApiKey", "adminUpdateIssuedApiKey",
                  "adminUpdateImportedApiKey"}
# After a create, what its answer names (OpenAPI links, for clients and for stateful
# fuzzing): operationId -> {link name: (target operationId, {parameter: expression})}
_LINKS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {}


def add_links(links: dict[str, dict[str, tuple[str, dict[str, str]]]]) -> None:
    _LINKS.update(links)


def _error_schema(path: str) -> str:
    """The error body of the route's family (Ory's Status, Hydra's OAuth2 error, Okta's)."""
    if path.startswith("/api/v1/"):
        return "OktaError"
    if path.startswith(("/admin/keys", "/keys")):
        return "ErrorOAuth2"
    return "Status"


_ISSUED_ID = {"key_id": "$response.body#/issued_api_key/key_id"}
_IMPORTED_ID = {"key_id": "$response.body#/key_id"}
add_links({
    "adminIssueApiKey": {
        "get": ("adminGetIssuedApiKey", _ISSUED_ID),
        "update": ("adminUpdateIssuedApiKey", _ISSUED_ID),
        "revoke": ("adminRevokeIssuedApiKey", _ISSUED_ID),
        "rotate": ("adminRotateIssuedApiKey", _ISSUED_ID)},
    "adminRotateIssuedApiKey": {
        "get": ("adminGetIssuedApiKey", _ISSUED_ID),
        "revoke": ("adminRevokeIssuedApiKey", _ISSUED_ID)},
    "adminImportApiKey": {
        "get": ("adminGetImportedApiKey", _IMPORTED_ID),
        "update": ("adminUpdateImportedApiKey", _IMPORTED_ID),
        "revoke": ("adminRevokeImportedApiKey", _IMPORTED_ID),
        "delete": ("adminDeleteImportedApiKey", _IMPORTED_ID)},
})


# X-Request-ID (gateway.http.request_ids): any value may be sent; one of at most 128
# characters of [A-Za-z0-9-_.:/+=] is echoed, any other is replaced by a new id
_REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": False, "schema": STR,
               "description": "echoed when it is at most 128 characters of "
                              "[A-Za-z0-9-_.:/+=]; otherwise a new id (32 hex digits)"}
_REQUEST_ID_HEADER = {"X-Request-ID": {
    "description": "the request's id: the caller's when echoed, else a new one",
    "required": True, "schema": {"type": S, "pattern": "^[A-Za-z0-9_.:/+=-]{1,128}$"}}}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op_id, status, req, resp, admin in OPERATIONS:
        error = {"description": "error", "content": {
            "application/json": {"schema": ref(_error_schema(path))}}}
        success: dict[str, Any] = {"description": "success"} if resp is None else {
            "description": "success", "content": {"application/json": {"schema": ref(resp)}}}
        if op_id in _CREATES:
            success["headers"] = {"Location": {"description": "the new key", "schema": STR}}
        if op_id in _LINKS:
            success["links"] = {name: {"operationId": target, "parameters": params}
                                for name, (target, params) in _LINKS[op_id].items()}
        responses: dict[str, Any] = {str(status): success, "default": error}
        if admin:
            responses.update({"400": error, "401": error})
        if op_id in _CONFLICTS:
            responses["409"] = error
        if op_id.startswith("forwardAuth"):
            responses.update({code: {"description": why} for code, why in _DECISIONS.items()})
        else:
            responses["405"] = {**error, "headers": {"Allow": {
                "description": "the methods the route takes", "schema": STR}}}
        for response in responses.values():  # every answer carries it
            response["headers"] = {**response.get("headers", {}), **_REQUEST_ID_HEADER}
        op: dict[str, Any] = {"operationId": op_id, "responses": responses}
        params: list[dict[str, Any]] = [_REQUEST_ID] + [
            {"name": n, "in": "path", "required": True, "schema": STR}
            for n in re.findall(r"\{(\w+)\}", path)]
        if op_id in ("adminListIssuedApiKeys", "adminListImportedApiKeys"):
            params += [{"name": "page_size", "in": "query", "schema": {
                           "type": "integer", "minimum": 0,
                           "description": f"0: {DEFAULT_PAGE_SIZE}; at most {MAX_PAGE_SIZE}"}},
                       {"name": "page_token", "in": "query", "schema": {
                           "type": S, "format": "page-token"}},
                       {"name": "filter", "in": "query", "schema": {
                           "type": S, "format": "aip160-filter", "maxLength": MAX_FILTER_LENGTH}}]
        params += _QUERY.get(op_id, [])
        if op_id.endswith("Usage"):
            params += [{"name": "interval", "in": "query", "schema": enum("minute", "hour",
                                                                          "day")},
                       {"name": "start_time", "in": "query", "schema": TIME},
                       {"name": "end_time", "in": "query", "schema": TIME}]
        if op_id.startswith("adminUpdate"):
            params.append({"name": "update_mask", "in": "query",
                           "schema": {"type": S, "format": "field-mask"}})
        op["parameters"] = params
        if req is not None:
            op["requestBody"] = {"required": op_id not in _OPTIONAL_BODY,
                                 "content": {"application/json": {"schema": ref(req)}}}
        if admin:
            op["security"] = ([{"oktaApiToken": []}, {"oryAccessToken": []}]
                              if path.startswith("/api/v1/") else [{"oryAccessToken": []}])
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "API-key verification gateway", "version": "v2alpha1"},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "oryAccessToken": {"type": "http", "scheme": "bearer"},
                # Okta's SDK sends "Authorization: SSWS <token>" (Bearer is accepted too)
                "oktaApiToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                                 "description": "SSWS <token>"},
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


def routes() -> list[BaseRoute]:
    return [Route("/openapi.json", openapi_json)]
