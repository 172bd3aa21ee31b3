from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.crypto import jwk
from gateway.crypto import tokens as t
from gateway.crypto.tokens import Outcome
from gateway.errors import InvalidArgument

ISSUER = "https://gateway.test"
NOW = 1_900_000_000
SUBKEY = b"s" * 32
DIGEST = "hs256:" + "ab" * 32


def spec(**kw) -> t.DeriveSpec:
    base = dict(issuer=ISSUER, subject="actor-1", parent_key_id="key-1",
                expire_time=NOW + 3600, audiences=["api"], scopes=["read", "write"])
    base.update(kw)
    return t.DeriveSpec(**base)


@pytest.fixture(scope="module")
def signer() -> jwk.Jwk:
    return jwk.generate("EdDSA", kid="signer-1")


def verify(token, key, **kw):
    kw.setdefault("issuer", ISSUER)
    kw.setdefault("expected_audiences", ["api"])
    kw.setdefault("now", NOW + 60)
    return t.verify_jwt(token, key.public() if key is not None and key.public() else key, **kw)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: dict, signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(signature)


# -- JWT -------------------------------------------------------------------------------


def test_a_minted_jwt_verifies_and_carries_every_claim(signer):
    minted = t.mint_jwt(spec(allowed_cidrs=["10.0.0.0/8"], custom_claims={"tier": "gold"}),
                        signer, now=NOW, token_id="jti-1")
    result = verify(minted.token, signer, client_ip="10.1.2.3")
    assert result.ok and result.error_code == "VERIFICATION_ERROR_UNSPECIFIED"
    c = result.claims
    assert c is not None
    assert (c.kind, c.issuer, c.subject, c.parent_key_id, c.token_id) == (
        t.TokenKind.JWT, ISSUER, "actor-1", "key-1", "jti-1")
    assert (c.audiences, c.scopes, c.allowed_cidrs) == (("api",), ("read", "write"),
                                                        ("10.0.0.0/8",))
    assert (c.expire_time, c.issued_at, c.signing_key_id) == (NOW + 3600, NOW, "signer-1")
    assert c.custom_claims == {"tier": "gold"}
    assert result.parent_key_id == "key-1"
    assert jwt.get_unverified_header(minted.token) == {"alg": "EdDSA", "kid": "signer-1",
                                                       "typ": "JWT"}


def test_custom_claims_with_reserved_names_are_dropped(signer):
    minted = t.mint_jwt(spec(custom_claims={"sub": "admin", "exp": 1 << 40, "key_id": "x",
                                            "scopes": ["admin"], "ok": 1}), signer, now=NOW)
    assert minted.claims["sub"] == "actor-1" and minted.claims["exp"] == NOW + 3600
    assert minted.claims["scopes"] == ["read", "write"] and minted.claims["ok"] == 1


def test_a_token_over_8192_bytes_is_not_minted(signer):
    with pytest.raises(InvalidArgument, match="8192"):
        t.mint_jwt(spec(custom_claims={"blob": "x" * 8192}), signer, now=NOW)


def test_alg_none_is_rejected(signer):
    payload = t.mint_jwt(spec(), signer, now=NOW).claims
    token = forge({"alg": "none", "kid": "signer-1"}, payload)
    assert verify(token, signer).outcome is Outcome.SIGNATURE_INVALID


def test_hs256_signed_with_the_public_key_is_rejected(signer):
    """Key confusion: the attacker HMACs with the published public key."""
    rsa_key = jwk.generate("RS256", kid="rsa-1")
    for key in (signer, rsa_key):
        public = key.public_key()
        assert public is not None
        pem = public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        payload = t.mint_jwt(spec(), key, now=NOW).claims
        header = {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
        signing_input = (b64(json.dumps(header).encode()) + "."
                         + b64(json.dumps(payload).encode()))
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        result = verify(signing_input + "." + b64(mac), key)
        assert result.outcome is Outcome.SIGNATURE_INVALID
        assert result.claims is None


def test_a_tampered_payload_fails_the_signature(signer):
    token = t.mint_jwt(spec(), signer, now=NOW).token
    head, _, sig = token.split(".")
    payload = {**t.mint_jwt(spec(), signer, now=NOW).claims, "scopes": ["admin"]}
    forged = f"{head}.{b64(json.dumps(payload).encode())}.{sig}"
    assert verify(forged, signer).outcome is Outcome.SIGNATURE_INVALID


def test_another_key_with_the_same_kid_fails_the_signature(signer):
    impostor = jwk.generate("EdDSA", kid="signer-1")
    token = t.mint_jwt(spec(), impostor, now=NOW).token
    assert verify(token, signer).outcome is Outcome.SIGNATURE_INVALID


def test_an_unknown_kid_is_reported_as_such(signer):
    token = t.mint_jwt(spec(), signer, now=NOW).token
    assert verify(token, None).outcome is Outcome.UNKNOWN_KEY
    other = jwk.generate("EdDSA", kid="other")
    assert verify(token, other).outcome is Outcome.UNKNOWN_KEY
    assert t.ERROR_CODES[Outcome.UNKNOWN_KEY] == "VERIFICATION_ERROR_SIGNATURE_INVALID"


@pytest.mark.parametrize("token", [
    "", "abc", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.", "x" * 9000,
])
def test_garbage_is_invalid_format(signer, token):
    assert verify(token, signer).outcome is Outcome.INVALID_FORMAT


def test_a_header_without_kid_is_invalid_format(signer):
    token = jwt.encode({"sub": "x"}, signer.signing_key(), algorithm="EdDSA")
    assert verify(token, signer).outcome is Outcome.INVALID_FORMAT


def test_a_signed_token_missing_a_claim_is_invalid_format(signer):
    token = jwt.encode({"iss": ISSUER, "sub": "a", "exp": NOW + 60}, signer.signing_key(),
                       algorithm="EdDSA", headers={"kid": signer.kid})
    assert verify(token, signer, expected_audiences=[]).outcome is Outcome.INVALID_FORMAT


@pytest.mark.parametrize(("now", "outcome"), [
    (NOW + 3600 - 1, Outcome.VALID),
    (NOW + 3600 + 29, Outcome.VALID),      # inside the 30 s leeway
    (NOW + 3600 + 30, Outcome.EXPIRED),
    (NOW - 29, Outcome.VALID),             # nbf = NOW, inside the leeway
    (NOW - 31, Outcome.NOT_YET_VALID),
])
def test_exp_and_nbf_are_checked_with_a_small_leeway(signer, now, outcome):
    token = t.mint_jwt(spec(), signer, now=NOW).token
    result = verify(token, signer, now=now)
    assert result.outcome is outcome
    if outcome is Outcome.EXPIRED:
        assert result.claims is not None and result.parent_key_id == "key-1"


def test_a_foreign_issuer_is_rejected(signer):
    token = t.mint_jwt(spec(issuer="https://elsewhere"), signer, now=NOW).token
    assert verify(token, signer).outcome is Outcome.ISSUER_MISMATCH


@pytest.mark.parametrize(("audiences", "expected", "outcome"), [
    (["api"], ["api"], Outcome.VALID),
    (["api", "web"], ["other", "web"], Outcome.VALID),
    (["api"], ["API"], Outcome.AUDIENCE_MISMATCH),   # exact, case-sensitive
    (["api"], [], Outcome.AUDIENCE_MISMATCH),        # bound token, caller expects none
    ([], ["api"], Outcome.AUDIENCE_MISMATCH),        # unbound token, caller expects one
    ([], [], Outcome.VALID),
])
def test_audiences(signer, audiences, expected, outcome):
    token = t.mint_jwt(spec(audiences=audiences), signer, now=NOW).token
    assert verify(token, signer, expected_audiences=expected).outcome is outcome


@pytest.mark.parametrize(("ip", "outcome"), [
    ("10.1.2.3", Outcome.VALID), ("192.168.0.1", Outcome.IP_NOT_ALLOWED),
    (None, Outcome.IP_NOT_ALLOWED)])
def test_the_parent_ip_allow_list_fails_closed_without_a_client_ip(signer, ip, outcome):
    token = t.mint_jwt(spec(allowed_cidrs=["10.0.0.0/8"]), signer, now=NOW).token
    assert verify(token, signer, client_ip=ip).outcome is outcome


def test_classify_and_kid_peek(signer):
    token = t.mint_jwt(spec(), signer, now=NOW).token
    assert t.classify(token) is t.TokenKind.JWT
    assert t.jwt_key_id(token) == "signer-1"
    assert t.classify("mc_AgE") is t.TokenKind.MACAROON
    assert t.classify("ory_ak_v1_abc") is None
    assert t.jwt_key_id("ory_ak_v1_abc") is None


def test_every_outcome_has_a_wire_error_code():
    assert set(t.ERROR_CODES) == set(Outcome)


# -- macaroons -------------------------------------------------------------------------


ROOT = t.macaroon_root_key(SUBKEY, "key-1")
TAG_KEY = b"g" * 32


def mverify(token, root=ROOT, **kw):
    kw.setdefault("issuer", ISSUER)
    kw.setdefault("expected_audiences", ["api"])
    kw.setdefault("now", NOW + 60)
    return t.verify_macaroon(token, root, **kw)


def macaroon(**kw) -> str:
    return t.mint_macaroon(spec(**kw), ROOT, tag_key=TAG_KEY, now=NOW, token_id="m-1").token


def test_a_minted_macaroon_verifies_and_carries_every_claim():
    token = t.mint_macaroon(spec(custom_claims={"tier": "gold", "sub": "x"},
                                 allowed_cidrs=["10.0.0.0/8"]), ROOT, tag_key=TAG_KEY,
                            now=NOW, token_id="m-1").token
    assert token.startswith("mc_") and "=" not in token
    head = t.inspect_macaroon(token)
    assert head is not None and head.parent_key_id == "key-1"
    assert head.generation([b"x" * 32, TAG_KEY]) == 1
    result = mverify(head, client_ip="10.1.2.3")
    assert result.ok
    c = result.claims
    assert c is not None
    assert (c.kind, c.subject, c.parent_key_id, c.token_id, c.issuer) == (
        t.TokenKind.MACAROON, "actor-1", "key-1", "m-1", ISSUER)
    assert (c.audiences, c.scopes, c.allowed_cidrs, c.expire_time) == (
        ("api",), ("read", "write"), ("10.0.0.0/8",), NOW + 3600)
    assert c.custom_claims == {"tier": "gold"}


def test_the_root_key_depends_on_the_parent_and_the_server_subkey():
    token = macaroon()
    assert mverify(token, t.macaroon_root_key(SUBKEY, "key-2")).outcome is (
        Outcome.SIGNATURE_INVALID)
    assert mverify(token, t.macaroon_root_key(b"t" * 32, "key-1")).outcome is (
        Outcome.SIGNATURE_INVALID)


def test_the_identifier_tag_is_checked_before_anything_is_looked_up():
    """A macaroon made without the tag key (any parent id, any claims) has no generation:
    the verifier refuses it before it looks the parent up."""
    head = t.inspect_macaroon(macaroon())
    assert head is not None and head.generation([TAG_KEY]) == 0
    assert head.generation([b"x" * 32]) is None
    forged = t.mint_macaroon(spec(parent_key_id="random-parent"), ROOT, tag_key=b"f" * 32,
                             now=NOW).token
    forged_head = t.inspect_macaroon(forged)
    assert forged_head is not None and forged_head.generation([TAG_KEY]) is None
    # the tag covers the identifier: the same tag on other JSON does not pass
    swapped = t.Macaroon(location=ISSUER, key=ROOT, version=t.MACAROON_V2,
                         identifier=b"g2." + head.tag + b"." + forged_head.ident)
    swapped_head = t.inspect_macaroon(t._encode(swapped))
    assert swapped_head is not None and swapped_head.generation([TAG_KEY]) is None


def test_a_macaroon_of_the_untagged_v1_format_is_not_ours():
    old = t.Macaroon(location=ISSUER, key=ROOT, version=t.MACAROON_V2,
                     identifier=b'{"v":1,"kid":"key-1","jti":"j","iss":"x","iat":1,"claims":{}}')
    assert t.inspect_macaroon(t._encode(old)) is None


def test_an_unknown_caveat_fails_closed():
    token = t.attenuate(macaroon(), "role = admin")
    result = mverify(token)
    assert result.outcome is Outcome.UNKNOWN_CAVEAT
    assert result.error_code == "VERIFICATION_ERROR_INVALID_FORMAT"
    assert mverify(t.attenuate(macaroon(), "time > 2000-01-01T00:00:00Z")).outcome is (
        Outcome.UNKNOWN_CAVEAT)


def test_a_third_party_caveat_fails_closed():
    head = t.inspect_macaroon(macaroon())
    assert head is not None
    m = head.macaroon.copy()
    m.add_third_party_caveat("https://other", "k" * 32, "cid")
    assert mverify(t._encode(m)).outcome is Outcome.UNKNOWN_CAVEAT


def test_a_holder_can_narrow_the_expiry_offline():
    narrowed = t.attenuate(macaroon(), t.caveat("time", "<", NOW + 600))
    assert mverify(narrowed, now=NOW + 60).ok
    assert mverify(narrowed, now=NOW + 1200).outcome is Outcome.EXPIRED
    assert mverify(macaroon(), now=NOW + 1200).ok


def test_a_holder_can_narrow_the_scopes_offline():
    narrowed = t.attenuate(macaroon(), t.caveat("scopes", "=", ["read"]))
    result = mverify(narrowed)
    assert result.ok and result.claims is not None and result.claims.scopes == ("read",)


def test_a_holder_can_narrow_the_ip_range_offline():
    token = t.attenuate(macaroon(allowed_cidrs=["10.0.0.0/8"]),
                        t.caveat("ip", "=", ["10.1.0.0/16"]))
    assert mverify(token, client_ip="10.1.2.3").ok
    assert mverify(token, client_ip="10.2.0.1").outcome is Outcome.IP_NOT_ALLOWED


def test_widening_is_impossible():
    base = macaroon()
    # a later, longer expiry does not extend the earliest one
    longer = t.attenuate(base, t.caveat("time", "<", NOW + 10 * 3600))
    assert mverify(longer, now=NOW + 7200).outcome is Outcome.EXPIRED
    # asking for a scope the token lacks yields the intersection, never the new scope
    more = t.attenuate(base, t.caveat("scopes", "=", ["read", "admin"]))
    claims = mverify(more).claims
    assert claims is not None and claims.scopes == ("read",)
    # claiming another actor does not replace the first: the token becomes invalid
    assert mverify(t.attenuate(base, t.caveat("actor", "=", "root"))).outcome is (
        Outcome.INVALID_FORMAT)
    # adding an audience only narrows: an unrelated one empties the set
    assert mverify(t.attenuate(base, t.caveat("aud", "=", ["other"])),
                   expected_audiences=["other"]).outcome is Outcome.AUDIENCE_MISMATCH


def test_removing_a_caveat_breaks_the_hmac_chain():
    head = t.inspect_macaroon(t.attenuate(macaroon(), t.caveat("time", "<", NOW + 600)))
    assert head is not None
    m = head.macaroon.copy()
    m.caveats.pop()
    assert mverify(t._encode(m), now=NOW + 1200).outcome is Outcome.SIGNATURE_INVALID


def test_editing_the_identifier_breaks_the_hmac_chain():
    head = t.inspect_macaroon(macaroon(custom_claims={"tier": "free"}))
    assert head is not None
    m = head.macaroon.copy()
    m.identifier = m.identifier_bytes.replace(b'"free"', b'"gold"')
    assert mverify(t._encode(m)).outcome is Outcome.SIGNATURE_INVALID


@pytest.mark.parametrize(("audiences", "expected", "outcome"), [
    (["api"], ["api"], Outcome.VALID),
    (["api"], [], Outcome.AUDIENCE_MISMATCH),
    ([], ["api"], Outcome.AUDIENCE_MISMATCH),
    ([], [], Outcome.VALID),
])
def test_macaroon_audiences(audiences, expected, outcome):
    assert mverify(macaroon(audiences=audiences), expected_audiences=expected).outcome is (
        outcome)


def test_macaroon_expiry_and_issuer():
    assert mverify(macaroon(), now=NOW + 3600 + 30).outcome is Outcome.EXPIRED
    assert mverify(macaroon(), issuer="https://elsewhere").outcome is Outcome.ISSUER_MISMATCH


@pytest.mark.parametrize("token", ["mc_", "mc_!!!", "mc_" + "A" * 40, "mc_" + "A" * 9000,
                                   "not-a-macaroon"])
def test_malformed_macaroons_are_invalid_format(token):
    assert mverify(token).outcome is Outcome.INVALID_FORMAT


def test_a_malformed_caveat_value_is_invalid_format():
    assert mverify(t.attenuate(macaroon(), "scopes = read")).outcome is Outcome.INVALID_FORMAT
    assert mverify(t.attenuate(macaroon(), "time < tomorrow")).outcome is (
        Outcome.INVALID_FORMAT)


def test_an_oversized_macaroon_is_not_minted():
    with pytest.raises(InvalidArgument, match="8192"):
        t.mint_macaroon(spec(custom_claims={"blob": "x" * 8192}), ROOT, tag_key=TAG_KEY,
                        now=NOW)


def test_a_holder_s_ip_caveat_fails_closed_when_the_client_address_is_unknown():
    """The attack: a parent with no allow-list, a holder adds an ip caveat, and the trusted
    proxy's X-Forwarded-For does not parse (client_ip None): it must not pass."""
    token = t.attenuate(macaroon(), t.caveat("ip", "=", ["10.0.0.0/8"]))
    assert mverify(token, client_ip="10.1.2.3").ok
    assert mverify(token, client_ip="192.168.1.1").outcome is Outcome.IP_NOT_ALLOWED
    assert mverify(token, client_ip=None).outcome is Outcome.IP_NOT_ALLOWED
    assert mverify(macaroon(), client_ip=None).ok  # unbound: no address needed
