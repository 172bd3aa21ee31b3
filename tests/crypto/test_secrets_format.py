"""Issued secrets: ``<prefix>_v1_<43 base62 random><6 base62 checksum>``."""

from __future__ import annotations

import re

import pytest

from gateway.crypto import secrets_format as sf

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _decode62(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + ALPHABET.index(char)
    return number


def test_new_secret_has_prefix_version_and_49_base62_characters() -> None:
    secret = sf.new_secret("ory_ak")
    assert re.fullmatch(r"ory_ak_v1_[0-9A-Za-z]{49}", secret)


def test_fresh_secrets_differ() -> None:
    assert len({sf.new_secret("ory_ak") for _ in range(50)}) == 50


def test_fresh_secret_passes_its_checksum() -> None:
    assert sf.checksum_ok(sf.new_secret("ory_pk"))


@pytest.mark.parametrize("material", [b"\x00" * 32, b"\xff" * 32, bytes(range(32)),
                                      b"\x80" + b"\x00" * 31])
def test_body_carries_all_256_bits_of_material(material: bytes) -> None:
    body = sf.body_from_bytes(material)
    assert len(body) == sf.RANDOM_LEN == 43
    assert _decode62(body) == int.from_bytes(material, "big")


def test_material_makes_the_secret_deterministic() -> None:
    material = bytes(range(32))
    assert sf.new_secret("ory_ak", material) == sf.new_secret("ory_ak", material)
    assert sf.new_secret("ory_ak", material) != sf.new_secret("ory_ak", bytes(32))


def test_every_one_character_change_fails_the_checksum() -> None:
    secret = sf.new_secret("ory_ak", bytes(range(32)))
    for position, original in enumerate(secret):
        for replacement in {"0", "Z", "z", "_", ALPHABET[(ALPHABET.find(original) + 1) % 62]}:
            if replacement == original:
                continue
            changed = secret[:position] + replacement + secret[position + 1:]
            assert not sf.checksum_ok(changed), (position, replacement)


def test_swapping_two_adjacent_characters_fails_the_checksum() -> None:
    secret = sf.new_secret("ory_ak", bytes(range(32)))
    body_start = len("ory_ak_v1_")
    for i in range(body_start, len(secret) - 1):
        if secret[i] == secret[i + 1]:
            continue
        swapped = secret[:i] + secret[i + 1] + secret[i] + secret[i + 2:]
        assert not sf.checksum_ok(swapped), i


@pytest.mark.parametrize("credential", ["", "ory_ak_v1_", "ory_ak_v1_short",
                                        "ory_ak_v1_" + "!" * 49])
def test_malformed_credentials_fail_the_checksum(credential: str) -> None:
    assert not sf.checksum_ok(credential)


def test_truncated_or_extended_secret_fails_the_checksum() -> None:
    secret = sf.new_secret("ory_ak")
    assert not sf.checksum_ok(secret[:-1])
    assert not sf.checksum_ok(secret + "0")


def test_looks_issued_matches_only_our_versioned_prefixes() -> None:
    prefixes = ("ory_ak", "ory_pk")
    assert sf.looks_issued("ory_ak_v1_anything", prefixes)
    assert sf.looks_issued("ory_pk_v1_anything", prefixes)
    assert not sf.looks_issued("ory_ak_v2_anything", prefixes)
    assert not sf.looks_issued("ory_akv1_anything", prefixes)
    assert not sf.looks_issued("sk_live_anything", prefixes)


def test_forged_means_our_prefix_with_a_wrong_checksum() -> None:
    starts = sf.issued_prefixes(("ory_ak", "ory_pk"))
    good = sf.new_secret("ory_ak")
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    assert not sf.forged(good, starts)
    assert sf.forged(bad, starts)
    assert not sf.forged("sk_live_" + bad, starts)  # not ours: left to the store lookup
