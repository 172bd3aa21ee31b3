"""L1's entries are out of the garbage collector's sight as soon as they are put, so a full
collection does not walk a large L1 (``gateway/cache/_untrack.c``)."""

from __future__ import annotations

import gc
import time

from gateway.cache._untrack import untracked  # built by `pip install -e .` (setup.py)
from gateway.cache.entry import NOT_FOUND, Entry
from gateway.cache.l1 import L1
from gateway.crypto.secrets_format import DigestSet
from tests.cache.test_keycache_unit import make_key


def fresh(*items: object) -> tuple[object, ...]:
    return tuple(list(items))  # a tuple made at run time (constants are shared)


def test_tuples_of_atoms_are_untracked_at_once_nested_too() -> None:
    inner = fresh("scope", 1, 2.5, b"x", None, True)
    outer = fresh(1.0, inner, fresh(), "s")
    assert gc.is_tracked(outer) and gc.is_tracked(inner)
    assert untracked(outer) is outer
    assert not gc.is_tracked(outer) and not gc.is_tracked(inner)


def test_anything_that_can_hold_a_cycle_stays_tracked() -> None:
    class Holder:
        pass

    for holder in ([], {"a": []}, Holder(), fresh([])):
        value = fresh(1, fresh("a", holder))
        untracked(value)
        assert gc.is_tracked(value), holder  # the collector still sees what it holds
    cycle: list[object] = []
    cycle.append(fresh(cycle))
    untracked(cycle[0])
    assert gc.is_tracked(cycle[0])
    assert untracked(5) == 5 and untracked("s") == "s"
    deep: tuple[object, ...] = fresh("atom")
    for _ in range(100_000):  # nested deeper than it looks: left to the collector
        deep = fresh(deep)
    assert untracked(deep) is deep and gc.is_tracked(deep)


def test_l1_stays_untracked_as_entries_are_put() -> None:
    l1: L1[tuple[object, ...]] = L1(1000, 60.0, negative=NOT_FOUND)
    now = time.monotonic()
    packed = Entry.from_key(make_key()).packed()
    for i in range(100):
        l1.put(f"hs256:{i:064x}", packed if i % 2 else NOT_FOUND, 60.0, now)
    gc.collect()
    assert not gc.is_tracked(l1._data)  # untracked by the collection...
    l1.put("hs256:new", Entry.from_key(make_key()).packed(), 60.0, now)
    l1.put("hs256:gone", NOT_FOUND, 60.0, now)
    # ...and the new puts did not track it again: a full collection does not walk it
    assert not gc.is_tracked(l1._data)


def test_large_holders_of_atoms_are_never_tracked() -> None:
    """What grows with the keys (recent imported digests, digests due for a refresh) is
    held in dicts of atoms, which the collector never tracks; a set it always walks."""
    digests = DigestSet()
    digests.add_many([f"hs256:{i:064x}" for i in range(1000)])
    digests.add(f"hs256:{5000:064x}")
    assert not gc.is_tracked(digests._recent) and f"hs256:{7:064x}" in digests
    l1: L1[tuple[object, ...]] = L1(1000, 60.0, negative=NOT_FOUND)
    l1.on_due = lambda: None
    now = time.monotonic()
    l1.put("hs256:due", Entry.from_key(make_key()).packed(), 60.0, now)
    assert l1.get("hs256:due", now + 50.0)[0] and "hs256:due" in l1.due
    assert not gc.is_tracked(l1.due)
