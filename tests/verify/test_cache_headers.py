"""``Cache-Control`` / ``Pragma`` on ``:verify`` and ``:batchVerify``, observed through the
``X-Cache`` response header (L1, L2, STORE, or BYPASS when the caches were not read).

``no-cache`` (and ``Pragma: no-cache``) skip the cache reads but refresh the caches;
``no-store`` skips reads and writes. Each test uses credentials no one verified before.
"""

from __future__ import annotations

import secrets
from typing import Any

import ory_client
import pytest
from conftest import secret_format
from ory_client import BatchVerifyApiKeysRequest, VerifyApiKeyRequest
from verify_helpers import batch, decide, issue, verify

NO_CACHE = [{"Cache-Control": "no-cache"}, {"Pragma": "no-cache"},
            {"Cache-Control": "max-age=0, no-cache"}]
NO_STORE = [{"Cache-Control": "no-store"}, {"Cache-Control": "no-cache, no-store"},
            {"Cache-Control": "no-store", "Pragma": "no-cache"}]
IGNORED = [{"Cache-Control": "max-age=0"}, {"Pragma": "no-store"},
           {"Cache-Control": "private"}]


def _x_cache(gw: Any, credential: str, headers: dict[str, str] | None = None) -> str:
    r = verify(gw, credential, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.headers["x-cache"])


def _header(info: Any, name: str) -> str:
    return str({k.lower(): v for k, v in (info.headers or {}).items()}[name])


def test_first_verify_reads_the_store_then_l1(gateway: Any) -> None:
    secret, _ = issue(gateway)
    assert _x_cache(gateway, secret) == "STORE"
    assert _x_cache(gateway, secret) == "L1"
    assert verify(gateway, secret).json()["is_valid"] is True


def test_an_unknown_credential_is_cached_too(gateway: Any) -> None:
    unknown = secret_format().new_secret("ory_ak")
    assert _x_cache(gateway, unknown) == "STORE"
    assert _x_cache(gateway, unknown) == "L1"
    assert verify(gateway, unknown).json()["error_code"] == "VERIFICATION_ERROR_NOT_FOUND"


@pytest.mark.parametrize("headers", NO_CACHE, ids=lambda h: ";".join(h.values()))
def test_no_cache_skips_the_cache_read(gateway: Any, headers: dict[str, str]) -> None:
    secret, _ = issue(gateway)
    assert _x_cache(gateway, secret) == "STORE"
    assert _x_cache(gateway, secret) == "L1"
    r = verify(gateway, secret, headers=headers)
    assert r.headers["x-cache"] == "BYPASS"
    assert r.json()["is_valid"] is True
    assert _x_cache(gateway, secret) == "L1"


@pytest.mark.parametrize("headers", NO_CACHE, ids=lambda h: ";".join(h.values()))
def test_no_cache_refreshes_the_cache(gateway: Any, headers: dict[str, str]) -> None:
    secret, _ = issue(gateway)
    assert _x_cache(gateway, secret, headers) == "BYPASS"
    assert _x_cache(gateway, secret) == "L1"  # the no-cache lookup wrote its answer


@pytest.mark.parametrize("headers", NO_STORE, ids=lambda h: ";".join(h.values()))
def test_no_store_neither_reads_nor_writes_the_cache(gateway: Any,
                                                     headers: dict[str, str]) -> None:
    secret, _ = issue(gateway)
    for _ in range(2):
        r = verify(gateway, secret, headers=headers)
        assert r.headers["x-cache"] == "BYPASS"
        assert r.json()["is_valid"] is True
    assert _x_cache(gateway, secret) == "STORE"  # nothing was written before
    assert _x_cache(gateway, secret) == "L1"
    assert _x_cache(gateway, secret, headers) == "BYPASS"
    assert _x_cache(gateway, secret) == "L1"  # and no-store did not drop what was cached


def test_no_store_does_not_cache_a_negative_answer(gateway: Any) -> None:
    unknown = secret_format().new_secret("ory_ak")  # a checksum we made: it is looked up
    assert _x_cache(gateway, unknown, {"Cache-Control": "no-store"}) == "BYPASS"
    assert _x_cache(gateway, unknown) == "STORE"


def test_a_made_up_string_is_not_looked_up_at_all(gateway: Any) -> None:
    """No v1 or imported key has its digest: refused in memory, nothing cached."""
    made_up = f"sk_live_{secrets.token_hex(16)}"
    for headers in ({}, {"Cache-Control": "no-cache"}):
        r = verify(gateway, made_up, headers=headers)
        assert r.json()["error_code"] == "VERIFICATION_ERROR_NOT_FOUND"
        assert r.headers["x-cache"] in ("NONE", "BYPASS")
    assert _x_cache(gateway, made_up) == "NONE"


@pytest.mark.parametrize("headers", IGNORED, ids=lambda h: ";".join(h.values()))
def test_other_cache_directives_are_ignored(gateway: Any, headers: dict[str, str]) -> None:
    secret, _ = issue(gateway)
    assert _x_cache(gateway, secret, headers) == "STORE"
    assert _x_cache(gateway, secret, headers) == "L1"


def test_the_sdk_cache_control_and_pragma_parameters(gateway: Any) -> None:
    secret, _ = issue(gateway)
    config = ory_client.Configuration(host=gateway.url, access_token=gateway.token)
    with ory_client.ApiClient(config) as client:
        api = ory_client.ApiKeysApi(client)
        request = VerifyApiKeyRequest(credential=secret)
        info = api.admin_verify_api_key_with_http_info(request, cache_control="no-store")
        assert info.data.is_valid is True and _header(info, "x-cache") == "BYPASS"
        info = api.admin_verify_api_key_with_http_info(request)
        assert _header(info, "x-cache") == "STORE"
        info = api.admin_verify_api_key_with_http_info(request)
        assert _header(info, "x-cache") == "L1"
        info = api.admin_verify_api_key_with_http_info(request, pragma="no-cache")
        assert info.data.is_valid is True and _header(info, "x-cache") == "BYPASS"
        info = api.admin_batch_verify_api_keys_with_http_info(
            BatchVerifyApiKeysRequest(requests=[request]), cache_control="no-cache")
        assert info.data.results[0].is_valid is True
        assert _header(info, "x-cache") == "BYPASS=1"


def test_batch_headers_apply_to_every_item(gateway: Any) -> None:
    secrets_ = [issue(gateway)[0] for _ in range(3)]
    r = batch(gateway, secrets_, headers={"Cache-Control": "no-store"})
    assert r.headers["x-cache"] == "BYPASS=3"
    assert all(item["is_valid"] for item in r.json()["results"])
    r = batch(gateway, secrets_)
    assert r.headers["x-cache"] == "STORE=3"  # no-store wrote nothing
    r = batch(gateway, secrets_)
    assert r.headers["x-cache"] == "L1=3"
    for headers in NO_CACHE:
        r = batch(gateway, secrets_, headers=headers)
        assert r.headers["x-cache"] == "BYPASS=3"
        assert all(item["is_valid"] for item in r.json()["results"])


def test_batch_no_cache_refreshes_every_item(gateway: Any) -> None:
    secrets_ = [issue(gateway)[0] for _ in range(2)]
    assert batch(gateway, secrets_, headers={"Pragma": "no-cache"}).headers[
        "x-cache"] == "BYPASS=2"
    assert batch(gateway, secrets_).headers["x-cache"] == "L1=2"


def test_batch_counts_each_cache_level(gateway: Any) -> None:
    warm, _ = issue(gateway)
    cold, _ = issue(gateway)
    verify(gateway, warm)
    r = batch(gateway, [warm, cold, warm, warm])
    assert r.headers["x-cache"] == "L1=3,STORE=1"
    assert [item["is_valid"] for item in r.json()["results"]] == [True] * 4


def test_forward_auth_ignores_the_proxied_clients_cache_control(gateway: Any) -> None:
    """Forward-auth headers come from the end client: no-store must not force store reads."""
    secret, _ = issue(gateway)
    r = decide(gateway, secret, headers={"Cache-Control": "no-store"})
    assert r.status_code == 200 and r.headers["x-cache"] == "STORE"
    assert decide(gateway, secret, headers={"Cache-Control": "no-cache"}).headers[
        "x-cache"] == "L1"
