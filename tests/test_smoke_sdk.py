from __future__ import annotations

import ory_client


def test_issue_then_get_through_the_sdk(ory_keys, unique):
    resp = ory_keys.admin_issue_api_key(ory_client.IssueApiKeyRequest(
        name="n", actor_id=f"actor-{unique}", scopes=["read"], ttl="1h"))
    assert resp.secret.startswith("ory_ak_v2_")
    got = ory_keys.admin_get_issued_api_key(resp.issued_api_key.key_id)
    assert got.key_id == resp.issued_api_key.key_id
    assert got.status == ory_client.KeyStatus.KEY_STATUS_ACTIVE
