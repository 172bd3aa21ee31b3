"""Digests: peppered HMAC lookups and Ory's SHA-512/256 ids for imported keys."""

from __future__ import annotations

import hashlib

from gateway.crypto.digests import Digester, imported_key_id
from gateway.secret import Secret


def test_digest_is_tagged_and_deterministic() -> None:
    d = Digester(Secret("pepper-0123456789abcdef"))
    digest = d.digest("ory_ak_v1_secret")
    assert digest.startswith("hs256:") and len(digest) == len("hs256:") + 64
    assert d.digest("ory_ak_v1_secret") == digest
    assert d.digest("ory_ak_v1_secreT") != digest


def test_digest_depends_on_the_pepper() -> None:
    a = Digester(Secret("pepper-0123456789abcdef"))
    b = Digester(Secret("pepper-0123456789abcdeF"))
    assert a.digest("same") != b.digest("same")


def test_digest_never_contains_the_credential_or_its_plain_hash() -> None:
    digest = Digester(Secret("pepper-0123456789abcdef")).digest("credential")
    assert "credential" not in digest
    assert hashlib.sha256(b"credential").hexdigest() not in digest


def test_subkeys_are_independent_of_each_other_and_of_the_digest() -> None:
    d = Digester(Secret("pepper-0123456789abcdef"))
    assert d.subkey("a") != d.subkey("b")
    assert d.subkey("a").hex() not in d.digest("a")


def test_imported_key_id_is_sha512_256_hex_of_the_raw_key() -> None:
    raw = "sk_live_\u00e9xample"
    assert imported_key_id(raw) == hashlib.new("sha512_256", raw.encode()).hexdigest()
    assert len(imported_key_id(raw)) == 64


def test_digest_is_the_standard_hmac_sha256_under_the_derived_key() -> None:
    import hmac

    pepper = "pepper-0123456789abcdef"
    key = hashlib.sha256(b"gateway/digest/v1\x00" + pepper.encode()).digest()
    for credential in ("", "a", "ory_ak_v1_" + "x" * 49, "\u00e9" * 300):
        expected = hmac.new(key, credential.encode(), hashlib.sha256).hexdigest()
        assert Digester(Secret(pepper)).digest(credential) == "hs256:" + expected
