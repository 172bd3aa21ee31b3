"""Signing keys and key sets, framework-free.

    keyring.py        Keyring: the authorization server's keys (Okta lifecycle) and the
                      derived-token signer, in memory, shared through the store
    jwk_sets.py       JwkSets: Ory JWK admin key sets
    resource_keys.py  ResourceServerKeys: Okta resource-server encryption keys
    state.py          compare-and-set JSON documents in the store
    seal.py           AES-GCM sealing of private key material at rest
"""

from __future__ import annotations

from gateway.crypto.digests import Digester
from gateway.settings import Settings
from gateway.signing.jwk_sets import JwkSets
from gateway.signing.keyring import Generation, Keyring, Lifecycle, load_configured_keys
from gateway.signing.resource_keys import ResourceServerKeys
from gateway.signing.seal import SEAL_PURPOSE, Sealer
from gateway.signing.state import StateStore

__all__ = ["Generation", "JwkSets", "Keyring", "Lifecycle", "ResourceServerKeys", "Sealer",
           "build_keyring", "sealer_for"]


def sealer_for(digester: Digester, *retired: Digester) -> Sealer:
    """The sealer every replica derives from the shared pepper (and the retired ones)."""
    return Sealer(digester.subkey(SEAL_PURPOSE), *(d.subkey(SEAL_PURPOSE) for d in retired))


def build_keyring(settings: Settings, store: StateStore, digester: Digester,
                  *retired: Digester) -> Keyring:
    """The keyring as ``build_services`` makes it (configured keys loaded here, once)."""
    auto = settings.signing_rotation == "AUTO"
    return Keyring(store, sealer=sealer_for(digester, *retired),
                   configured=load_configured_keys(settings.signing_keys),
                   rotation_period_s=settings.signing_rotation_period_s if auto else None)
