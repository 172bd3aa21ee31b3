"""Issued secrets: ``<prefix>_v2_<43 base62 random><8 base62 keyed checksum>``, and the v1
format before it (``<prefix>_v1_<43 random><6 base62 CRC32>``), which keeps verifying."""

from __future__ import annotations

import asyncio
import random
import re
from array import array
from collections import Counter
from typing import Any

import pytest
from conftest import built

from gateway.crypto import secrets_format as sf
from gateway.crypto.digests import Digester
from gateway.crypto.peppers import Peppers
from gateway.secret import Secret

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIXES = ("ory_ak", "ory_pk")
OLD = Digester(Secret("the-old-pepper-0123456789"))
NEW = Digester(Secret("the-new-pepper-01234567"))


def _decode62(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + ALPHABET.index(char)
    return number


@pytest.fixture
def fmt() -> sf.SecretFormat:
    return sf.SecretFormat(PREFIXES, (NEW,))


def _changes(secret: str, start: int) -> list[str]:
    """Every one-character change and adjacent swap after ``start``."""
    out = []
    for position in range(start, len(secret)):
        original = secret[position]
        for replacement in {"0", "Z", "z", ALPHABET[(ALPHABET.find(original) + 1) % 62]}:
            if replacement != original:
                out.append(secret[:position] + replacement + secret[position + 1:])
        if position + 1 < len(secret) and secret[position] != secret[position + 1]:
            out.append(secret[:position] + secret[position + 1] + secret[position]
                       + secret[position + 2:])
    return out


def test_new_secret_has_prefix_version_and_51_base62_characters(fmt: sf.SecretFormat) -> None:
    secret = fmt.new_secret("ory_ak")
    assert re.fullmatch(r"ory_ak_v2_[0-9A-Za-z]{51}", secret)  # the documented scanner regex
    assert fmt.generation(secret) == 0


def test_the_checksum_digits_are_base62_of_the_checksum_width() -> None:
    rng = random.Random(7)
    modulus = 62**sf.CHECKSUM_LEN
    for number in [0, 1, 61, 62, 62**4 - 1, 62**4, modulus - 1,
                   *(rng.randrange(modulus) for _ in range(2_000))]:
        assert sf._checksum_digits(number) == sf.base62(number, sf.CHECKSUM_LEN)


def test_fresh_secrets_differ(fmt: sf.SecretFormat) -> None:
    assert len({fmt.new_secret("ory_ak") for _ in range(50)}) == 50


@pytest.mark.parametrize("material", [b"\x00" * 32, b"\xff" * 32, bytes(range(32)),
                                      b"\x80" + b"\x00" * 31])
def test_body_carries_all_256_bits_of_material(material: bytes) -> None:
    body = sf.body_from_bytes(material)
    assert len(body) == sf.RANDOM_LEN == 43
    assert _decode62(body) == int.from_bytes(material, "big")


def test_material_makes_the_secret_deterministic(fmt: sf.SecretFormat) -> None:
    material = bytes(range(32))
    assert fmt.new_secret("ory_ak", material) == fmt.new_secret("ory_ak", material)
    assert fmt.new_secret("ory_ak", material) != fmt.new_secret("ory_ak", bytes(32))


def test_the_checksum_is_keyed_by_the_pepper(fmt: sf.SecretFormat) -> None:
    """A CRC anyone can compute; this MAC only the gateway's pepper can make."""
    other = sf.SecretFormat(PREFIXES, (OLD,))
    material = bytes(range(32))
    assert fmt.new_secret("ory_ak", material) != other.new_secret("ory_ak", material)
    assert fmt.generation(other.new_secret("ory_ak")) is None


def test_every_one_character_change_or_swap_fails_the_checksum(fmt: sf.SecretFormat) -> None:
    secret = fmt.new_secret("ory_ak", bytes(range(32)))
    for changed in _changes(secret, len("ory_ak_v2_")):
        assert fmt.generation(changed) is None, changed


@pytest.mark.parametrize("credential", ["", "ory_ak_v2_", "ory_ak_v2_short",
                                        "ory_ak_v2_" + "!" * 51, "ory_ak_v2_" + "A" * 51])
def test_malformed_or_made_up_credentials_fail_the_checksum(fmt: sf.SecretFormat,
                                                            credential: str) -> None:
    assert fmt.generation(credential) is None


def test_truncated_or_extended_secret_fails_the_checksum(fmt: sf.SecretFormat) -> None:
    secret = fmt.new_secret("ory_ak")
    assert fmt.generation(secret[:-1]) is None
    assert fmt.generation(secret + "0") is None


def test_a_retired_pepper_s_checksum_passes_and_names_its_generation() -> None:
    before = sf.SecretFormat(PREFIXES, (OLD,)).new_secret("ory_pk")
    after = sf.SecretFormat(PREFIXES, (NEW, OLD))
    assert after.generation(before) == 1
    assert after.generation(after.new_secret("ory_pk")) == 0
    assert sf.SecretFormat(PREFIXES, (NEW,)).generation(before) is None


def test_issued_prefixes_cover_both_formats() -> None:
    starts = sf.SecretFormat(PREFIXES, (NEW,)).starts
    assert set(starts) == {"ory_ak_v2_", "ory_pk_v2_", "ory_ak_v1_", "ory_pk_v1_"}


# -- v1 ------------------------------------------------------------------------------------


def test_v1_secrets_keep_their_format_and_crc() -> None:
    secret = sf.legacy_secret("ory_ak", bytes(range(32)))
    assert re.fullmatch(r"ory_ak_v1_[0-9A-Za-z]{49}", secret)
    assert sf.crc_ok(secret)
    assert not any(sf.crc_ok(c) for c in _changes(secret, len("ory_ak_v1_")))


async def test_a_digest_set_holds_eight_bytes_a_key_and_answers_membership(
        monkeypatch: pytest.MonkeyPatch) -> None:
    digests = [NEW.digest(sf.legacy_secret("ory_ak")) for _ in range(1000)]
    known = sf.DigestSet(digests)
    assert len(known) == 1000 and known._sorted.itemsize == 8
    assert all(d in known for d in digests)
    assert NEW.digest(sf.legacy_secret("ory_ak")) not in known
    monkeypatch.setattr(sf.DigestSet, "MERGE_AT", 10)
    fresh = [NEW.digest(f"imported-{i}") for i in range(25)]
    for digest in fresh[:9]:
        known.add(digest)
    assert not known.merge_due
    for digest in fresh[9:]:
        known.add(digest)
    assert known.merge_due and all(d in known for d in fresh + digests)
    monkeypatch.setattr(sf, "MERGE_SLICE", 100)
    merging = asyncio.ensure_future(known.merge())
    await asyncio.sleep(0)  # part-way: every digest still answers
    assert not merging.done() and len(known._merging) == 25  # held meanwhile
    assert all(d in known for d in fresh + digests)
    await merging
    assert len(known) == 1025 and not known._recent and not known._merging
    assert list(known._sorted) == sorted(known._sorted)
    assert all(d in known for d in fresh + digests)


async def test_digests_added_twice_are_merged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The importing replica adds its keys, then again from its own broadcast: each is
    queued for the merge once (the sorted run held each imported key twice)."""
    monkeypatch.setattr(sf.DigestSet, "MERGE_AT", 20)
    known = sf.DigestSet()
    digests = [NEW.digest(f"imported-{i}") for i in range(15)]
    known.add_many(digests)
    known.add_many(digests)  # the broadcast
    assert len(known) == 15 and not known.merge_due
    known.add_many([NEW.digest(f"more-{i}") for i in range(5)])
    assert known.merge_due
    await known.merge()
    assert len(known) == 20 and len(set(known._sorted)) == 20
    assert all(d in known for d in digests)


@pytest.mark.parametrize(("size_a", "size_b"), [(0, 0), (0, 5), (5, 0), (1000, 3),
                                                (3, 1000), (5000, 5000)])
async def test_merged_is_the_sorted_union_in_slices(size_a: int, size_b: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sf, "MERGE_SLICE", 64)
    monkeypatch.setattr(sf, "_native", None)  # the Python path, where the C one is built
    rng = random.Random(size_a * 7919 + size_b)
    a = sorted(rng.randrange(2**64) for _ in range(size_a))
    b = sorted(rng.choice(a) if a and rng.random() < 0.2 else rng.randrange(2**64)
               for _ in range(size_b))
    slices: list[int] = []

    def sorting(values: list[int]) -> list[int]:
        slices.append(len(values))
        return sorted(values)

    monkeypatch.setattr(sf, "sorted", sorting, raising=False)  # the module's global first
    out = await sf.merged(array("Q", a), array("Q", b))
    assert list(out) == sorted(a + b)
    # at most a slice of each run (and the repeats of one value) between two yields,
    # whatever the sizes: 3 merged into 1,000 was one slice of 1,000 (8 into 65,536 held
    # the loop 7.8 ms)
    repeats = max(Counter(a + b).values(), default=0)
    assert max(slices, default=0) <= 2 * 64 + repeats


@pytest.fixture
def native_merge() -> Any:
    return built(sf._native, "gateway.crypto._merge",
                 "imported digests would be merged on the event loop")


@pytest.mark.parametrize(("size_a", "size_b"), [(0, 0), (0, 5), (5, 0), (1000, 3),
                                                (3, 1000), (5000, 5000)])
async def test_the_c_merge_and_sort_give_what_the_python_slices_give(
        native_merge: Any, size_a: int, size_b: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(size_a * 104729 + size_b)
    a = sorted(rng.randrange(2**64) for _ in range(size_a))
    b = sorted(rng.choice(a) if a and rng.random() < 0.2 else rng.randrange(2**64)
               for _ in range(size_b))
    unsorted = [rng.choice([0, 2**64 - 1, rng.randrange(2**64)]) for _ in range(size_b)]
    native = (await sf.merged(array("Q", a), array("Q", b)),
              await sf.sorted_array(array("Q", unsorted)))
    # what the C merge made is merged again: it takes its own output (a memoryview)
    again = await sf.merged(native[0], array("Q", b))
    monkeypatch.setattr(sf, "_native", None)
    python = (await sf.merged(array("Q", a), array("Q", b)),
              await sf.sorted_array(array("Q", unsorted)))
    assert [list(x) for x in native] == [list(x) for x in python]
    assert list(native[0]) == sorted(a + b) and list(native[1]) == sorted(unsorted)
    assert list(again) == sorted(a + b + b)
    assert list(await sf.merged(native[0], array("Q", b))) == list(again)  # Python takes it


def test_the_c_merge_checks_its_arguments(native_merge: Any) -> None:
    a, b = array("Q", [1, 3]), array("Q", [2])
    with pytest.raises(TypeError, match="merge"):
        native_merge.merge(array("Q", [0, 0, 0]), a, b)
    with pytest.raises(TypeError, match="array"):
        native_merge.merge(array("q", [1, 2]), b)
    with pytest.raises(TypeError, match="array"):
        native_merge.merge(a, bytes(8))  # format B, not Q
    with pytest.raises(TypeError, match="array"):
        native_merge.sort(array("I", [3, 1]))
    with pytest.raises(BufferError):
        native_merge.sort(memoryview(bytes(16)).cast("Q"))  # not writable
    out = native_merge.merge(a, b)
    assert isinstance(out, bytes) and list(memoryview(out).cast("Q")) == [1, 2, 3]
    assert list(memoryview(native_merge.merge(array("Q"), array("Q"))).cast("Q")) == []


# -- what a presented credential may be (Peppers.candidates) ------------------------------


def test_candidates_refuse_forgeries_without_a_lookup() -> None:
    peppers = Peppers(NEW, (), PREFIXES)
    real = peppers.format.new_secret("ory_ak")
    assert peppers.candidates(real) == (NEW.digest(real),)
    assert peppers.candidates(real[:-1] + ("A" if real[-1] != "A" else "B")) == ()
    assert peppers.candidates(sf.SecretFormat(PREFIXES, (OLD,)).new_secret("ory_ak")) == ()
    # a v1 secret with a good CRC, or anything else (an imported key), is looked up only
    # when the store holds such a key with that digest
    known, unknown = sf.legacy_secret("ory_ak"), sf.legacy_secret("ory_ak")
    peppers.unkeyed.replace([NEW.digest(known), NEW.digest("sk_live_imported")])
    assert peppers.candidates(known) == (NEW.digest(known),)
    assert peppers.candidates(unknown) == ()
    assert peppers.candidates("sk_live_imported") == (NEW.digest("sk_live_imported"),)
    assert peppers.candidates("sk_live_made_up") == ()


def test_candidates_after_a_pepper_rotation() -> None:
    before = Peppers(OLD, (), PREFIXES)
    v2 = before.format.new_secret("ory_ak")
    v1 = sf.legacy_secret("ory_ak")
    after = Peppers(NEW, (OLD,), PREFIXES)
    after.unkeyed.replace([OLD.digest(v1), OLD.digest("raw")])
    assert after.candidates(v2) == (NEW.digest(v2), OLD.digest(v2))
    assert after.candidates(v1) == (NEW.digest(v1), OLD.digest(v1))
    assert after.candidates("raw") == (NEW.digest("raw"), OLD.digest("raw"))
    assert after.candidates(after.format.new_secret("ory_ak"))[1:] == ()


def test_checksum_verdicts_are_kept_by_digest_and_only_when_they_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The checksum is asked once per secret (the memo holds digests, never a secret);
    a forged secret is asked every time, and the memo is bounded."""
    from gateway.crypto import peppers as peppers_module

    monkeypatch.setattr(peppers_module, "CHECKED_MEMO", 3)
    before = Peppers(OLD, (), PREFIXES)
    peppers = Peppers(NEW, (OLD,), PREFIXES)
    asked: list[str] = []
    real_generation = peppers.format.generation

    def generation(credential: str) -> int | None:
        asked.append(credential)
        return real_generation(credential)

    peppers.format.generation = generation  # type: ignore[method-assign]
    current, retired = peppers.format.new_secret("ory_ak"), before.format.new_secret("ory_ak")
    forged = current[:-1] + ("A" if current[-1] != "A" else "B")
    for _ in range(3):
        assert peppers.candidates(current) == (NEW.digest(current),)
        assert peppers.candidates(retired) == (NEW.digest(retired), OLD.digest(retired))
        assert peppers.candidates(forged) == ()
    assert asked == [current, retired, forged, forged, forged]
    assert current not in peppers._checked and retired not in peppers._checked
    assert set(peppers._checked.values()) == {0, 1}
    for _ in range(4):  # more than the bound: emptied, then filled again
        peppers.candidates(peppers.format.new_secret("ory_ak"))
        assert len(peppers._checked) <= 3
