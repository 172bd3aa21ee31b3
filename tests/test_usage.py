"""Usage analytics (issue 14): a key's verifications by outcome in minute, hour and day
buckets, counted in memory (the verify path writes nothing) and flushed in batches; the
totals match the verifies made, across a flush and a clean restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Gateway, start_gateway

V = "/v2alpha1"
ISSUED = f"{V}/admin/issuedApiKeys"
IMPORTED = f"{V}/admin/importedApiKeys"
VERIFY = f"{V}/admin/apiKeys:verify"
BATCH = f"{V}/admin/apiKeys:batchVerify"


def _usage(gw: Gateway, collection: str, key_id: str, **params: Any) -> dict[str, Any]:
    with gw.client() as c:
        resp = c.get(f"{collection}/{key_id}/usage", params=params, headers=gw.auth)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _totals(report: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for bucket in report["buckets"]:
        for outcome, n in bucket["counts"].items():
            out[outcome] = out.get(outcome, 0) + n
    return out


def test_usage_counts_every_verify_by_outcome_across_a_flush_and_a_restart(
        tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {})
    try:
        with gw.client() as c:
            issued = c.post(ISSUED, json={"name": "u", "actor_id": "usage"},
                            headers=gw.auth).json()
            key_id, secret = issued["issued_api_key"]["key_id"], issued["secret"]
            for _ in range(25):  # the first from the store, then from L1 (the hot path)
                assert c.post(VERIFY, json={"credential": secret},
                              headers=gw.auth).json()["is_valid"]
            answers = c.post(BATCH, json={"requests": [{"credential": secret}] * 10},
                             headers=gw.auth).json()["results"]
            assert all(a["is_valid"] for a in answers)
        deadline = time.monotonic() + 15  # flushed every 5 s
        while _totals(_usage(gw, ISSUED, key_id, interval="minute")).get("VALID") != 35:
            assert time.monotonic() < deadline, _usage(gw, ISSUED, key_id)
            time.sleep(0.5)
        with gw.client() as c:
            assert c.post(f"{ISSUED}/{key_id}:revoke",
                          json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"},
                          headers=gw.auth).status_code == 204
            for _ in range(4):
                assert c.post(VERIFY, json={"credential": secret},
                              headers=gw.auth).json()["error_code"] == (
                    "VERIFICATION_ERROR_REVOKED")
    finally:
        gw.stop()  # a clean shutdown flushes what is counted
    gw = start_gateway(tmp_path, {})
    try:
        by_minute = _usage(gw, ISSUED, key_id, interval="minute")
        by_day = _usage(gw, ISSUED, key_id, interval="day")
        with gw.client() as c:
            unknown = c.get(f"{ISSUED}/no-such-key/usage", headers=gw.auth)
            bad = c.get(f"{ISSUED}/{key_id}/usage", params={"interval": "week"},
                        headers=gw.auth)
            backwards = c.get(f"{ISSUED}/{key_id}/usage", headers=gw.auth, params={
                "start_time": "2026-12-02T00:00:00Z", "end_time": "2026-12-01T00:00:00Z"})
            wrong_method = c.post(f"{ISSUED}/{key_id}/usage", headers=gw.auth)
    finally:
        gw.stop()
    assert _totals(by_minute) == {"VALID": 35, "REVOKED": 4}
    assert by_minute["total"] == 39 and by_day["total"] == 39
    assert len(by_day["buckets"]) == 1 and by_day["buckets"][0]["start_time"].endswith(
        "T00:00:00Z")
    assert unknown.status_code == 404
    assert bad.status_code == 400 and "interval" in bad.json()["message"]
    assert backwards.status_code == 400
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("collection", [IMPORTED])
def test_imported_keys_have_their_usage_too(gateway: Gateway, unique: str,
                                            collection: str) -> None:
    raw = f"legacy-usage-{unique}-0123456789"
    with gateway.client() as c:
        key_id = c.post(IMPORTED, json={"raw_key": raw, "name": "i", "actor_id": "usage"},
                        headers=gateway.auth).json()["key_id"]
        for _ in range(3):
            c.post(VERIFY, json={"credential": raw}, headers=gateway.auth)
    deadline = time.monotonic() + 15
    while _usage(gateway, collection, key_id)["total"] != 3:
        assert time.monotonic() < deadline, _usage(gateway, collection, key_id)
        time.sleep(0.5)
