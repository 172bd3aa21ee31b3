"""Digests: peppered HMAC lookups and Ory's SHA-512/256 ids for imported keys."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import pytest

from gateway.crypto import digests
from gateway.crypto.digests import Digester, imported_key_id
from gateway.secret import Secret

# Every test below runs against the C extension (when built) and the Python fallback.
IMPLEMENTATIONS = [pytest.param(True, id="native"), pytest.param(False, id="python")]


@pytest.fixture(params=IMPLEMENTATIONS)
def native(request: pytest.FixtureRequest) -> bool:
    if request.param and not digests.NATIVE:
        if os.environ.get("CI") == "true":
            pytest.fail("gateway.crypto._hmac256 was not built (setup.py): the hot path "
                        "would run on the Python digests")
        pytest.skip("gateway.crypto._hmac256 not built")
    return bool(request.param)


def test_digest_is_tagged_and_deterministic(native: bool) -> None:
    d = Digester(Secret("pepper-0123456789abcdef"), native=native)
    digest = d.digest("ory_ak_v1_secret")
    assert digest.startswith("hs256:") and len(digest) == len("hs256:") + 64
    assert d.digest("ory_ak_v1_secret") == digest
    assert d.digest("ory_ak_v1_secreT") != digest


def test_digest_depends_on_the_pepper(native: bool) -> None:
    a = Digester(Secret("pepper-0123456789abcdef"), native=native)
    b = Digester(Secret("pepper-0123456789abcdeF"), native=native)
    assert a.digest("same") != b.digest("same")


def test_digest_never_contains_the_credential_or_its_plain_hash(native: bool) -> None:
    digest = Digester(Secret("pepper-0123456789abcdef"), native=native).digest("credential")
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


def _standard(pepper: str, credential: str) -> str:
    key = hashlib.sha256(b"gateway/digest/v1\x00" + pepper.encode()).digest()
    return "hs256:" + hmac.new(key, credential.encode(), hashlib.sha256).hexdigest()


# lengths around SHA-256's 64-byte block and its 55-byte one-block padding limit
CREDENTIALS = ["", "a", "ory_ak_v1_" + "x" * 49, "\u00e9" * 300, "\U0001f511" * 20,
               "k" * 4096, *("x" * n for n in (54, 55, 56, 63, 64, 65, 119, 120))]


@pytest.mark.parametrize("credential", CREDENTIALS, ids=lambda c: f"len{len(c)}")
def test_digest_is_the_standard_hmac_sha256_under_the_derived_key(
        native: bool, credential: str) -> None:
    pepper = "pepper-0123456789abcdef"
    assert Digester(Secret(pepper), native=native).digest(credential) == _standard(
        pepper, credential)


def test_digest_many_is_digest_of_each_in_order(native: bool) -> None:
    d = Digester(Secret("pepper-0123456789abcdef"), native=native)
    credentials = [secrets.token_urlsafe(n) for n in range(1, 101)] + CREDENTIALS
    assert d.digest_many(credentials) == [d.digest(c) for c in credentials]
    assert d.digest_many([]) == []


def test_both_implementations_agree_on_random_credentials() -> None:
    if not digests.NATIVE:
        pytest.skip("gateway.crypto._hmac256 not built")
    pepper = secrets.token_hex(16)
    fast, slow = Digester(Secret(pepper)), Digester(Secret(pepper), native=False)
    credentials = ["".join(secrets.choice("aé\u20ac\U0001f511_Z9") for _ in range(n))
                   for n in range(0, 300, 3)]
    assert fast.digest_many(credentials) == slow.digest_many(credentials)


@pytest.mark.parametrize("bad", ["\ud800", "ok\udfff"])
def test_a_credential_without_utf8_raises_like_str_encode(native: bool, bad: str) -> None:
    d = Digester(Secret("pepper-0123456789abcdef"), native=native)
    with pytest.raises(UnicodeEncodeError):
        d.digest(bad)
    with pytest.raises(UnicodeEncodeError):
        d.digest_many(["fine", bad])


def test_native_digester_rejects_wrong_types() -> None:
    if not digests.NATIVE:
        pytest.skip("gateway.crypto._hmac256 not built")
    d = Digester(Secret("pepper-0123456789abcdef"))
    with pytest.raises(TypeError):
        d.digest(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        d.digest_many(("a", "b"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        d.digest_many(["a", 1])  # type: ignore[list-item]


def test_native_hmac_keys_longer_than_a_block_are_hashed_first() -> None:
    if not digests.NATIVE:
        pytest.skip("gateway.crypto._hmac256 not built")
    from gateway.crypto._hmac256 import Hmac256

    for key in (b"", b"k" * 32, b"k" * 64, b"k" * 65, b"k" * 200):
        expected = hmac.new(key, b"credential", hashlib.sha256).hexdigest()
        assert Hmac256(key, "p:").digest("credential") == "p:" + expected
    assert "kk" not in repr(Hmac256(b"k" * 32, "p:"))
    with pytest.raises(ValueError):
        Hmac256(b"k", "x" * 17)
    with pytest.raises(ValueError):
        Hmac256(b"k", "h\u00e9:")
