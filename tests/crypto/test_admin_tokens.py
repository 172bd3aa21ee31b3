"""Admin bearer tokens: every documented form of GATEWAY_ADMIN_TOKENS, and nothing else.

Forms: a generated token's verifier (``gateway hash-token``), a plain token, an argon2id
hash, several of each, separated by commas, whitespace or newlines, or a YAML list. A
wrong token never costs argon2 work on the event loop, and argon2 guesses are budgeted.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.crypto import admin_tokens
from gateway.crypto.admin_tokens import AdminTokens, hash_token, new_token, parse_entries
from gateway.errors import ConfigError, ResourceExhausted
from gateway.secret import Secret
from gateway.settings import load_settings

PLAIN = "plain-admin-token-0123"


@pytest.fixture(scope="module")
def hashed() -> str:
    return hash_token("hashed-admin-token", "test")


@pytest.fixture(scope="module")
def production_hash() -> str:
    """A hash with the default profile's parameters (commas in it: m=…,t=3,p=4)."""
    return hash_token("production-admin-token", "default")


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every argon2 verification, by presented token, and whether it ran off the loop."""
    calls: list[tuple[str, bool]] = []
    real = admin_tokens.PasswordHasher.verify

    def counting(self: object, stored: str, presented: str) -> bool:
        calls.append((presented, threading.current_thread() is not threading.main_thread()))
        return real(self, stored, presented)  # type: ignore[arg-type]

    monkeypatch.setattr(admin_tokens.PasswordHasher, "verify", counting)
    return calls


def _tokens(*entries: str, **kw: float) -> AdminTokens:
    kw.setdefault("delay_base", 0.001)  # refusals are answered late; not much, here
    kw.setdefault("delay_max", 0.01)
    return AdminTokens(tuple(Secret(e) for e in entries), **kw)  # type: ignore[arg-type]


async def _auth(tokens: AdminTokens, presented: str, client: str = "10.0.0.1") -> str | None:
    return await tokens.authenticate(presented, lambda: client)


# -- parsing ------------------------------------------------------------------------------


def test_the_readme_setup_with_a_production_hash_parses_whole(production_hash: str) -> None:
    """The bug: the list was split on commas, so ``t=3`` and ``p=4$…`` became tokens."""
    assert "m=65536,t=3,p=4" in production_hash
    settings = load_settings({"GATEWAY_ADMIN_TOKENS": production_hash})
    assert [s.reveal() for s in settings.admin_tokens] == [production_hash]


async def test_fragments_of_a_hash_never_authenticate(production_hash: str) -> None:
    tokens = AdminTokens(load_settings({"GATEWAY_ADMIN_TOKENS": production_hash}).admin_tokens,
                         argon2_rate=1000.0, argon2_burst=1000.0, delay_base=0.001)
    for fragment in ("t=3", "p=4", production_hash.split(",")[-1], "$argon2id$v=19$m=65536",
                     production_hash):
        assert await _auth(tokens, fragment, f"client-{fragment}") is None
    assert await _auth(tokens, "production-admin-token") == "argon2:1"


def test_several_of_each_form_separated_every_documented_way(production_hash: str,
                                                             hashed: str) -> None:
    _, verifier = new_token()
    _, verifier2 = new_token()
    value = f"{production_hash},{verifier}, {PLAIN}\n{hashed}\n{verifier2},plain-token-two-xxxx"
    assert parse_entries(value) == (production_hash, hashed, verifier, PLAIN, verifier2,
                                    "plain-token-two-xxxx")


def test_a_yaml_list_of_hashes_parses_whole(tmp_path: Path, production_hash: str,
                                            hashed: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"admin_tokens:\n  - '{production_hash}'\n  - '{hashed}'\n")
    settings = load_settings({"GATEWAY_CONFIG": str(config)})
    assert [s.reveal() for s in settings.admin_tokens] == [production_hash, hashed]


@pytest.mark.parametrize("value", [
    "t=3",                                            # a fragment: too short for a token
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ",     # a hash cut short
    "$argon2id$garbage",
    "gwa_0123456789ab_" + "A" * 43,                   # a generated token instead of its verifier
    "gwa_0123456789ab.00.11",                         # a verifier cut short
    "short",
])
def test_an_entry_that_is_no_form_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_TOKENS"):
        load_settings({"GATEWAY_ADMIN_TOKENS": value})


# -- each form authenticates exactly its token -------------------------------------------


async def test_a_generated_token_matches_its_verifier_only() -> None:
    token, verifier = new_token()
    other, _ = new_token()
    tokens = _tokens(verifier)
    token_id = token.split("_")[1]
    assert await _auth(tokens, token) == token_id
    assert await _auth(tokens, other) is None
    assert await _auth(tokens, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert await _auth(tokens, verifier) is None  # the verifier is not a credential
    forged_same_id = f"gwa_{token_id}_" + "A" * 43
    assert await _auth(tokens, forged_same_id) is None


async def test_plain_tokens_are_accepted_exactly() -> None:
    tokens = _tokens(PLAIN, "plain-token-two-xxxx")
    assert tokens.configured
    assert (await _auth(tokens, PLAIN) or "").startswith("plain:")
    assert await _auth(tokens, "plain-token-two-xxxx") != await _auth(tokens, PLAIN)
    for wrong in (PLAIN + " ", PLAIN[:-1], PLAIN.upper(), ""):
        assert await _auth(tokens, wrong) is None


async def test_an_argon2_hash_accepts_its_token_only(hashed: str) -> None:
    tokens = _tokens(hashed, argon2_burst=10.0)
    assert await _auth(tokens, "hashed-admin-token") == "argon2:1"
    assert await _auth(tokens, "wrong-token", "a") is None
    assert await _auth(tokens, hashed, "b") is None


async def test_all_forms_side_by_side(hashed: str) -> None:
    token, verifier = new_token()
    tokens = _tokens(PLAIN, hashed, verifier, argon2_burst=10.0)
    assert await _auth(tokens, PLAIN)
    assert await _auth(tokens, "hashed-admin-token")
    assert await _auth(tokens, token)
    assert await _auth(tokens, "neither-of-these-tokens") is None


async def test_no_tokens_means_not_configured_and_nothing_accepted() -> None:
    tokens = _tokens()
    assert not tokens.configured
    assert await _auth(tokens, "anything-at-all-here") is None


# -- what a wrong token costs ------------------------------------------------------------


async def test_wrong_generated_and_plain_tokens_never_reach_argon2(
        hashed: str, argon2_calls: list[tuple[str, bool]]) -> None:
    token, verifier = new_token()
    tokens = _tokens(PLAIN, verifier, hashed)
    assert await _auth(tokens, PLAIN)
    assert await _auth(tokens, token)
    for _ in range(20):
        other, _ = new_token()
        assert await _auth(tokens, other) is None  # gwa_ shape: decided by its id
    assert argon2_calls == []


async def test_argon2_runs_on_a_worker_thread_once_per_accepted_token(
        hashed: str, argon2_calls: list[tuple[str, bool]]) -> None:
    tokens = _tokens(hashed)
    for _ in range(5):
        assert await _auth(tokens, "hashed-admin-token") == "argon2:1"
    assert argon2_calls == [("hashed-admin-token", True)]


async def test_a_client_whose_guess_failed_waits_before_the_next_is_computed(
        hashed: str, argon2_calls: list[tuple[str, bool]]) -> None:
    tokens = _tokens(hashed, argon2_rate=1000.0, argon2_burst=1000.0, delay_base=0.5,
                     delay_max=1.0)
    first = asyncio.create_task(_auth(tokens, "guess-number-one", "10.9.9.9"))
    await asyncio.sleep(0.2)  # its argon2 is done; its refusal is being held back
    with pytest.raises(ResourceExhausted, match="retry later"):
        await _auth(tokens, "guess-number-two", "10.9.9.9")
    assert await first is None
    assert [c for c, _ in argon2_calls] == ["guess-number-one"]
    # another client is not held up by this one
    assert await _auth(tokens, "hashed-admin-token", "10.1.1.1") == "argon2:1"


async def test_refusals_are_answered_later_each_time_and_a_right_token_at_once() -> None:
    token, verifier = new_token()
    tokens = _tokens(verifier, PLAIN, delay_base=0.05, delay_max=10.0)
    waits = []
    for wrong in (new_token()[0], "wrong-plain-token-xxxx", new_token()[0]):
        started = asyncio.get_running_loop().time()
        assert await _auth(tokens, wrong, "10.7.7.7") is None
        waits.append(asyncio.get_running_loop().time() - started)
    assert waits[0] >= 0.05 and waits[1] >= 0.1 and waits[2] >= 0.2
    started = asyncio.get_running_loop().time()
    assert await _auth(tokens, token, "10.7.7.7")
    assert await _auth(tokens, PLAIN, "10.7.7.7")
    assert asyncio.get_running_loop().time() - started < 0.05
    # a flood from many clients: every refusal waits the longest delay
    flood = _tokens(verifier, delay_base=0.01, delay_max=0.3, flood_rate=5)
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(_auth(flood, "wrong-token-of-a-flood", f"10.8.0.{i}")
                           for i in range(10)))
    assert asyncio.get_running_loop().time() - started >= 0.3


async def test_the_global_argon2_budget_refuses_without_computing(
        hashed: str, argon2_calls: list[tuple[str, bool]]) -> None:
    tokens = _tokens(hashed, argon2_rate=0.001, argon2_burst=3.0)
    outcomes = await asyncio.gather(*(_auth(tokens, f"distinct-guess-{i}", f"10.0.1.{i}")
                                      for i in range(16)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
    assert len(argon2_calls) == 3 and len(refused) == 13
    assert all(off_loop for _, off_loop in argon2_calls)


async def test_a_remembered_admin_passes_while_the_budget_is_spent(hashed: str) -> None:
    tokens = _tokens(hashed, argon2_rate=0.001, argon2_burst=1.0)
    assert await _auth(tokens, "hashed-admin-token") == "argon2:1"
    with pytest.raises(ResourceExhausted):
        await _auth(tokens, "an-attacker-guess", "10.6.6.6")
    assert await _auth(tokens, "hashed-admin-token") == "argon2:1"


async def test_a_broken_stored_hash_refuses_instead_of_raising() -> None:
    tokens = AdminTokens((Secret("$argon2id$v=19$m=8,t=1,p=1$garbage$garbage"),))
    assert await _auth(tokens, "anything-at-all-here") is None


def test_repr_of_configured_tokens_does_not_leak_them() -> None:
    secret = Secret(PLAIN)
    assert PLAIN not in repr(secret) + str(secret)


# -- what the docs tell operators to do ----------------------------------------------------


async def test_hash_token_prints_a_token_and_the_verifier_that_accepts_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["hash-token"]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines()[:2])
    token, verifier = lines["token"].strip(), lines["verifier"].strip()
    settings = load_settings({"GATEWAY_ADMIN_TOKENS": verifier})
    tokens = AdminTokens(settings.admin_tokens)
    assert await _auth(tokens, token) == token.split("_")[1]
    assert token not in verifier


async def test_hash_token_argon2_prints_a_hash_that_parses_whole(
        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["hash-token", "--argon2", "an-operator-password"]) == 0
    out = capsys.readouterr().out
    hashed = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                  if line.startswith("hash:"))
    tokens = AdminTokens(load_settings({"GATEWAY_ADMIN_TOKENS": hashed}).admin_tokens)
    assert await _auth(tokens, "an-operator-password") == "argon2:1"
    assert main(["hash-token", "--argon2", "short"]) == 2


def test_the_k8s_secret_example_placeholder_fails_closed() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((root / "k8s/examples/secret.example.yaml").read_text())["stringData"]
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_TOKENS"):
        load_settings({"GATEWAY_ADMIN_TOKENS": data["GATEWAY_ADMIN_TOKENS"]})
