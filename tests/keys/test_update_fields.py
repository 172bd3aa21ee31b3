"""``KeyService.update`` applies its mask's whole fields through ``FIELD_UPDATES``
(``gateway.keys.updates``): each path's reader reads and checks its field, and its value
sets one ``ApiKey`` attribute. Every path the table holds has a successful update here, on
the SQLite store, and a refusal naming what was wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.crypto.digests import Digester
from gateway.crypto.peppers import Peppers
from gateway.errors import InvalidArgument
from gateway.keys.masks import parse_mask
from gateway.keys.model import ApiKey, Kind, RateLimit, Visibility
from gateway.keys.service import KeyService, NoEvents
from gateway.keys.updates import FIELD_UPDATES
from gateway.secret import Secret
from gateway.store.sqlite import SqliteStore

Y2099 = 4_070_908_800 * 1_000_000  # 2099-01-01T00:00:00Z in microseconds

# path -> (the key's field as sent, the attribute's value after the update)
SUCCESSES: dict[str, tuple[dict[str, Any], object]] = {
    "name": ({"name": "renamed"}, "renamed"),
    "scopes": ({"scopes": ["read", "orders:write"]}, ("read", "orders:write")),
    "metadata": ({"metadata": {"team": "billing"}}, {"team": "billing"}),
    "ip_restriction": ({"ip_restriction": {"allowed_cidrs": ["10.0.0.0/8", "::1/128"]}},
                       ("10.0.0.0/8", "::1/128")),
    "rate_limit_policy": ({"rate_limit_policy": {"quota": "9", "window": "60s"}},
                          RateLimit(quota=9, window_s=60)),
    "expire_time": ({"expire_time": "2099-01-01T00:00:00Z"}, Y2099),
    # cannot change: naming them with the key's own value is a successful no-op
    "actor_id": ({"actor_id": "alice"}, "alice"),
    "visibility": ({"visibility": "KEY_VISIBILITY_SECRET"}, Visibility.SECRET),
}

# path -> (a bad value, the start of the 400's message)
REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "name": ({"name": 5}, "name: expected a string"),
    "scopes": ({"scopes": ["read write"]}, "scopes[0]: must not contain whitespace"),
    "metadata": ({"metadata": "team=billing"}, "metadata: expected a JSON object"),
    "ip_restriction": ({"ip_restriction": {"allowed_cidrs": ["10.0.0.1/8"]}},
                       "ip_restriction.allowed_cidrs[0]: 10.0.0.1/8 has host bits set"),
    "rate_limit_policy": ({"rate_limit_policy": {"quota": "0", "window": "60s"}},
                          "rate_limit_policy.quota: must be a positive integer"),
    "expire_time": ({"expire_time": "2001-01-01T00:00:00Z"},
                    "expire_time: must be in the future"),
    "actor_id": ({"actor_id": "mallory"}, "update_mask: field 'actor_id' cannot be changed"),
    "visibility": ({"visibility": "KEY_VISIBILITY_PUBLIC"},
                   "update_mask: field 'visibility' cannot be changed"),
}


class Recorder(NoEvents):
    def __init__(self) -> None:
        self.changed: list[ApiKey] = []

    async def key_changed(self, key: ApiKey, *old_digests: str) -> None:
        self.changed.append(key)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[KeyService]:
    store = SqliteStore(tmp_path / "keys.db")
    await store.open()
    peppers = Peppers(Digester(Secret("test-pepper-0123456789abcdef")), (), ("ory_ak", "ory_pk"))
    try:
        yield KeyService(store, peppers, events=Recorder())
    finally:
        await store.close()


async def _issue(service: KeyService) -> ApiKey:
    issued = await service.issue({"name": "n", "actor_id": "alice", "scopes": ["read"],
                                  "metadata": {"team": "core"}})
    return issued.key


def test_the_table_holds_exactly_the_paths_a_mask_may_name_whole() -> None:
    assert tuple(FIELD_UPDATES) == parse_mask("*", {}).fields
    assert set(SUCCESSES) == set(REFUSALS) == set(FIELD_UPDATES)


@pytest.mark.parametrize("path", FIELD_UPDATES)
async def test_each_path_of_the_table_updates_its_attribute(service: KeyService, path: str
                                                            ) -> None:
    if path not in SUCCESSES:
        pytest.fail(f"no successful update covers the field path {path!r}")
    body, expected = SUCCESSES[path]
    attribute = FIELD_UPDATES[path].attribute
    before = await _issue(service)
    for key, mask in ((body, path), ({"issued_api_key": body, "update_mask": path}, None)):
        current = await service.get(Kind.ISSUED, before.key_id)
        updated = await service.update(Kind.ISSUED, before.key_id, key, mask)
        assert getattr(updated, attribute) == expected
        assert updated.update_time > current.update_time
        # the named attribute and update_time change; nothing else does
        assert updated == current.with_changes(update_time=updated.update_time,
                                               **{attribute: expected})
        assert await service.get(Kind.ISSUED, before.key_id) == updated
        assert isinstance(service.events, Recorder)
        assert service.events.changed[-1] == updated


@pytest.mark.parametrize("path", FIELD_UPDATES)
async def test_each_path_of_the_table_refuses_a_bad_value_naming_it(service: KeyService,
                                                                    path: str) -> None:
    body, message = REFUSALS[path]
    before = await _issue(service)
    with pytest.raises(InvalidArgument) as info:
        await service.update(Kind.ISSUED, before.key_id, body, path)
    assert info.value.message.startswith(message), info.value.message
    assert await service.get(Kind.ISSUED, before.key_id) == before


@pytest.mark.parametrize("mask", ["colour", "name,colour"])
async def test_an_unknown_path_is_refused_and_nothing_is_written(service: KeyService,
                                                                 mask: str) -> None:
    before = await _issue(service)
    with pytest.raises(InvalidArgument) as info:
        await service.update(Kind.ISSUED, before.key_id, {"name": "x"}, mask)
    assert info.value.message == ("update_mask: unknown field 'colour'; updatable: name, "
                                  "scopes, metadata, ip_restriction, rate_limit_policy, "
                                  "expire_time")
    assert info.value.http_status == 400
    assert await service.get(Kind.ISSUED, before.key_id) == before
