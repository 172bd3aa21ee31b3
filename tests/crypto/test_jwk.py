from __future__ import annotations

import base64
import io
import json
import urllib.request

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.crypto import jwk
from gateway.crypto.jwk import JwkError

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


@pytest.mark.parametrize("alg", jwk.GENERATE)
def test_generated_keys_round_trip_through_their_jwk_dict(alg):
    key = jwk.generate(alg, kid="k1")
    stored = key.to_dict()
    assert stored is not None
    assert (stored["kid"], stored["alg"], stored["use"], stored["kty"]) == (
        "k1", alg, "sig", jwk.ALGORITHMS[alg][0])
    again = jwk.from_dict(stored)
    assert again.is_private and again.thumbprint() == key.thumbprint()


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "ES512", "RS256"])
def test_the_public_form_has_no_private_member(alg):
    public = jwk.generate(alg).to_dict(private=False)
    assert public is not None and not PRIVATE_MEMBERS & public.keys()
    assert not jwk.from_dict(public).is_private


@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_symmetric_keys_have_no_public_form(alg):
    key = jwk.generate(alg)
    assert key.to_dict(private=False) is None and key.public() is None


def test_generation_rejects_unknown_algorithms_and_uses():
    with pytest.raises(JwkError):
        jwk.generate("none")
    with pytest.raises(JwkError):
        jwk.generate("ES256", use="wrap")


def test_repr_never_shows_key_material():
    key = jwk.generate("HS256", kid="secret-key")
    stored = key.to_dict()
    assert stored is not None
    assert stored["k"] not in repr(key)
    assert "private=True" in repr(key)


def test_thumbprint_matches_rfc7638_example():
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
         "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
         "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
         "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
    assert jwk.thumbprint({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "x"}) == (
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")


@pytest.mark.parametrize(("change", "message"), [
    ({"alg": "ES256"}, "needs kty EC"),
    ({"alg": "none"}, "unsupported alg"),
    ({"use": "wrap"}, "use must be"),
    ({"kid": ""}, "'kid' is required"),
    ({"kty": None}, "'kty' is required"),
])
def test_from_dict_rejects_inconsistent_members(change, message):
    data = {**(jwk.generate("EdDSA", kid="k").to_dict() or {}), **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(JwkError, match=message):
        jwk.from_dict(data)


def test_from_dict_rejects_a_curve_that_does_not_match_the_alg():
    data = jwk.generate("ES512", kid="k").to_dict() or {}
    with pytest.raises(JwkError, match="crv"):
        jwk.from_dict({**data, "alg": "ES256"})


def test_weak_keys_are_refused():
    short = {"kty": "oct", "kid": "h", "use": "sig", "alg": "HS256",
             "k": jwk.b64url(b"x" * 16)}
    with pytest.raises(JwkError, match="at least 32 bytes"):
        jwk.from_dict(short)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    with pytest.raises(JwkError, match="2048 bits"):
        jwk.from_pem(pem)


def test_malformed_key_material_is_reported_without_echoing_it():
    data = {"kty": "OKP", "kid": "k", "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
            "x": "not-base64-!!", "d": "c2VjcmV0LXNjYWxhcg"}
    with pytest.raises(JwkError) as info:
        jwk.from_dict(data)
    assert "c2VjcmV0LXNjYWxhcg" not in str(info.value)


def test_x5c_is_kept_as_a_public_member():
    data = {**(jwk.generate("ES256", kid="k").to_dict() or {}), "x5c": ["MIIB"]}
    key = jwk.from_dict(data)
    assert (key.to_dict(private=False) or {})["x5c"] == ["MIIB"]


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.parametrize(("make", "alg"), [
    (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "ES512"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
])
def test_pem_keys_get_their_alg_from_the_key_type(make, alg):
    key = jwk.from_pem(_pem(make()))
    assert key.alg == alg and key.is_private and key.kid == key.thumbprint()


def test_a_public_pem_loads_as_a_verification_key():
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    key = jwk.from_pem(pem)
    assert not key.is_private
    with pytest.raises(JwkError):
        key.signing_key()


def test_file_uri_loads_a_jwk_set(tmp_path):
    keys = [jwk.generate("EdDSA", kid="a").to_dict(), jwk.generate("ES256", kid="b").to_dict()]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": keys}))
    loaded = jwk.load_uri(f"file://{path}")
    assert [(k.kid, k.alg) for k in loaded] == [("a", "EdDSA"), ("b", "ES256")]


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_uri_loads_a_pem_key(encode):
    pem = _pem(ed25519.Ed25519PrivateKey.generate())
    payload = encode(pem).decode().rstrip("=")
    (key,) = jwk.load_uri(f"base64://{payload}")
    assert key.alg == "EdDSA" and key.is_private


def test_base64_uri_of_a_single_jwk_without_kid_gets_its_thumbprint():
    data = jwk.generate("EdDSA").to_dict() or {}
    data.pop("kid")
    (key,) = jwk.load_uri("base64://" + base64.b64encode(json.dumps(data).encode()).decode())
    assert key.kid == key.thumbprint()


def test_https_uri_is_fetched_with_a_timeout(monkeypatch):
    body = json.dumps(jwk.generate("ES256", kid="remote").to_dict(private=False)).encode()
    seen = {}

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(request, timeout):
        seen["url"], seen["timeout"] = request.full_url, timeout
        return Response(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    (key,) = jwk.load_uri("https://keys.example/jwks.json", timeout=2.0)
    assert key.kid == "remote" and not key.is_private
    assert seen == {"url": "https://keys.example/jwks.json", "timeout": 2.0}


@pytest.mark.parametrize("uri", ["http://keys.example/k.pem", "ftp://x", "/etc/key.pem"])
def test_other_uri_schemes_are_refused(uri):
    with pytest.raises(JwkError, match="file://, base64:// or https://"):
        jwk.load_uri(uri)


def test_errors_about_base64_uris_do_not_echo_the_payload():
    secret = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\ngarbage\n").decode()
    assert jwk.describe_uri(f"base64://{secret}") == "base64://…"
    with pytest.raises(JwkError) as info:
        jwk.load_uri(f"base64://{secret}")
    assert secret not in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(JwkError, match="cannot read"):
        jwk.load_uri(f"file://{tmp_path}/missing.pem")
