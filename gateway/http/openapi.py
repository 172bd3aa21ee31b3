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

from gateway.http.wire import JSONResponse

S = "string"
STR: dict[str, Any] = {"type": S}
STRS: dict[str, Any] = {"type": "array", "items": STR}
TIME: dict[str, Any] = {"type": S, "format": "date-time"}
OBJ: dict[str, Any] = {"type": "object", "additionalProperties": True}
CREDENTIAL: dict[str, Any] = {"type": S, "minLength": 1, "maxLength": 8192}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def enum(*values: str) -> dict[str, Any]:
    return {"type": S, "enum": list(values)}


def obj(required: tuple[str, ...] = (), /, **props: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


_KEY_FIELDS = dict(
    key_id=STR, name=STR, actor_id=STR, scopes=STRS, status=ref("KeyStatus"),
    visibility=ref("KeyVisibility"), metadata=OBJ, ip_restriction=ref("IPRestriction"),
    rate_limit_policy=ref("RateLimitPolicy"), create_time=TIME, update_time=TIME,
    expire_time=TIME, last_used_time=TIME, revocation_reason=ref("RevocationReason"),
    revocation_description=STR,
)
_CREATE_FIELDS = dict(
    name=STR, actor_id=STR, scopes=STRS, ttl=STR, metadata=OBJ,
    ip_restriction=ref("IPRestriction"), rate_limit_policy=ref("RateLimitPolicy"),
    visibility=ref("KeyVisibility"), request_id=STR,
)
_VERIFY_RESPONSE = dict(
    is_valid={"type": "boolean"}, error_code=ref("VerificationErrorCode"), error_message=STR,
    key_id=STR, actor_id=STR, scopes=STRS, status=ref("KeyStatus"),
    visibility=ref("KeyVisibility"), metadata=OBJ, expire_time=TIME, issuer=STR,
    audiences=STRS, rate_limit_policy=ref("RateLimitPolicy"), rate_limit_remaining=STR,
    rate_limit_reset_time=TIME,
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "KeyStatus": enum("KEY_STATUS_UNSPECIFIED", "KEY_STATUS_ACTIVE", "KEY_STATUS_REVOKED",
                      "KEY_STATUS_EXPIRED"),
    "KeyVisibility": enum("KEY_VISIBILITY_UNSPECIFIED", "KEY_VISIBILITY_SECRET",
                          "KEY_VISIBILITY_PUBLIC"),
    "RevocationReason": enum(
        "REVOCATION_REASON_UNSPECIFIED", "REVOCATION_REASON_KEY_COMPROMISE",
        "REVOCATION_REASON_AFFILIATION_CHANGED", "REVOCATION_REASON_SUPERSEDED",
        "REVOCATION_REASON_PRIVILEGE_WITHDRAWN"),
    "TokenAlgorithm": enum("TOKEN_ALGORITHM_UNSPECIFIED", "TOKEN_ALGORITHM_JWT",
                           "TOKEN_ALGORITHM_MACAROON"),
    "VerificationErrorCode": enum(*(
        f"VERIFICATION_ERROR_{n}" for n in (
            "UNSPECIFIED", "INVALID_FORMAT", "EXPIRED", "REVOKED", "NOT_FOUND",
            "SIGNATURE_INVALID", "INTERNAL", "IP_NOT_ALLOWED", "RATE_LIMITED",
            "AUDIENCE_MISMATCH"))),
    "BatchCreateImportedApiKeysErrorCode": enum(*(
        f"BATCH_CREATE_IMPORTED_API_KEYS_ERROR_{n}" for n in (
            "UNSPECIFIED", "INVALID_ARGUMENT", "ALREADY_EXISTS", "FAILED_PRECONDITION",
            "INTERNAL", "RESOURCE_EXHAUSTED"))),
    "IPRestriction": obj(allowed_cidrs=STRS),
    "RateLimitPolicy": obj(quota={"type": S, "format": "int64"}, window=STR, unit=STR),
    "IssuedApiKey": obj(**_KEY_FIELDS),
    "ImportedApiKey": obj(**_KEY_FIELDS),
    "IssueApiKeyRequest": obj(**_CREATE_FIELDS),
    "IssueApiKeyResponse": obj(issued_api_key=ref("IssuedApiKey"), secret=STR),
    "ImportApiKeyRequest": obj(("raw_key", "name", "actor_id"), raw_key=STR, **_CREATE_FIELDS),
    "ListIssuedApiKeysResponse": obj(issued_api_keys={"type": "array",
                                                      "items": ref("IssuedApiKey")},
                                     next_page_token=STR),
    "ListImportedApiKeysResponse": obj(imported_api_keys={"type": "array",
                                                          "items": ref("ImportedApiKey")},
                                       next_page_token=STR),
    # a reason is required, and *_UNSPECIFIED is refused (400)
    "AdminRevokeApiKeyBody": obj(("reason",), reason=ref("GivenRevocationReason"),
                                 description={"type": S, "maxLength": 1024}),
    "GivenRevocationReason": enum(
        "REVOCATION_REASON_KEY_COMPROMISE", "REVOCATION_REASON_AFFILIATION_CHANGED",
        "REVOCATION_REASON_SUPERSEDED", "REVOCATION_REASON_PRIVILEGE_WITHDRAWN"),
    "AdminRotateIssuedApiKeyBody": obj(
        name=STR, scopes=STRS, metadata=OBJ, ip_restriction=ref("IPRestriction"),
        rate_limit_policy=ref("RateLimitPolicy"), visibility=ref("KeyVisibility")),
    "RotateIssuedApiKeyResponse": obj(issued_api_key=ref("IssuedApiKey"),
                                      old_issued_api_key=ref("IssuedApiKey"), secret=STR),
    "BatchCreateImportedApiKeysRequest": obj(
        requests={"type": "array", "items": ref("ImportApiKeyRequest"), "maxItems": 1000}),
    "BatchCreateImportedApiKeysResult": obj(
        index={"type": "integer", "format": "int32"}, imported_api_key=ref("ImportedApiKey"),
        error_code=ref("BatchCreateImportedApiKeysErrorCode"), error_message=STR),
    "BatchCreateImportedApiKeysResponse": obj(
        results={"type": "array", "items": ref("BatchCreateImportedApiKeysResult")},
        success_count={"type": "integer"}, failure_count={"type": "integer"}),
    "SelfRevokeApiKeyRequest": obj(("credential", "reason"), credential=CREDENTIAL,
                                   reason=ref("GivenRevocationReason")),
    "VerifyApiKeyRequest": obj(("credential",), credential=CREDENTIAL,
                               expected_audiences=STRS),
    "VerifyApiKeyResponse": obj(**_VERIFY_RESPONSE),
    "BatchVerifyApiKeysRequest": obj(
        requests={"type": "array", "items": ref("VerifyApiKeyRequest"), "maxItems": 100}),
    "BatchVerifyApiKeysResponse": obj(
        results={"type": "array", "items": ref("VerifyApiKeyResponse")}),
    "DeriveTokenRequest": obj(("credential",), credential=CREDENTIAL,
                              algorithm=ref("TokenAlgorithm"), ttl=STR, scopes=STRS,
                              audiences=STRS, custom_claims=OBJ),
    "Token": obj(token=STR, claims=OBJ, expire_time=TIME, scopes=STRS, audiences=STRS),
    "DeriveTokenResponse": obj(token=ref("Token")),
    "Status": obj(code={"type": "integer", "format": "int32"}, message=STR,
                  details={"type": "array", "items": OBJ}),
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
     "IssuedApiKey", "IssuedApiKey", True),
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
     "ImportedApiKey", "ImportedApiKey", True),
    ("delete", f"{_B}/importedApiKeys/{{key_id}}", "adminDeleteImportedApiKey", 204, None,
     None, True),
    ("post", f"{_B}/importedApiKeys/{{key_id}}:revoke", "adminRevokeImportedApiKey", 204,
     "AdminRevokeApiKeyBody", None, True),
    ("post", f"{_B}/importedApiKeys:batchCreate", "adminBatchCreateImportedApiKeys", 200,
     "BatchCreateImportedApiKeysRequest", "BatchCreateImportedApiKeysResponse", True),
    ("post", f"{_B}/importedApiKeys:batchImport", "adminBatchImportApiKeys", 200,
     "BatchCreateImportedApiKeysRequest", "BatchCreateImportedApiKeysResponse", True),
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
    ("get", "/v2alpha1/decisions", "forwardAuth", 200, None, None, False),
    ("get", "/v2alpha1/decisions/{path}", "forwardAuthBelow", 200, None, None, False),
    ("get", "/version", "getVersion", 200, None, "Version", False),
    ("get", "/metrics", "metrics", 200, None, None, False),
    ("get", "/openapi.json", "openapi", 200, None, None, False),
    ("get", "/health/alive", "isAlive", 200, None, None, False),
    ("get", "/health/ready", "isReady", 200, None, None, False),
]


def add_operations(extra: list[Operation], schemas: dict[str, dict[str, Any]]) -> None:
    """Other route modules register their rows here at import time."""
    OPERATIONS.extend(extra)
    SCHEMAS.update(schemas)


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op_id, status, req, resp, admin in OPERATIONS:
        error = {"description": "error",
                 "content": {"application/json": {"schema": ref("Status")}}}
        success: dict[str, Any] = {"description": "success"} if resp is None else {
            "description": "success", "content": {"application/json": {"schema": ref(resp)}}}
        if op_id in _CREATES:
            success["headers"] = {"Location": {"description": "the new key", "schema": STR}}
        responses: dict[str, Any] = {str(status): success, "default": error}
        if admin:
            responses.update({"400": error, "401": error})
        if op_id in _CONFLICTS:
            responses["409"] = error
        responses["405"] = {**error, "headers": {"Allow": {
            "description": "the methods the route takes", "schema": STR}}}
        op: dict[str, Any] = {"operationId": op_id, "responses": responses}
        params = [{"name": n, "in": "path", "required": True, "schema": STR}
                  for n in re.findall(r"\{(\w+)\}", path)]
        if op_id.startswith("adminList"):
            params += [{"name": "page_size", "in": "query", "schema": {"type": "integer"}},
                       {"name": "page_token", "in": "query", "schema": STR},
                       {"name": "filter", "in": "query", "schema": STR}]
        if op_id.startswith("adminUpdate"):
            params.append({"name": "update_mask", "in": "query", "schema": STR})
        if params:
            op["parameters"] = params
        if req is not None:
            op["requestBody"] = {"required": True,
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
