"""``untracked``: a tuple of atoms (and such tuples) taken out of the garbage collector's
sight at once, by the optional C extension ``_untrack`` (see its header); where it was not
built, the object as it is, which the collector untracks itself a few full passes later."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

try:
    from gateway.cache._untrack import untracked as untracked
except ImportError:  # not built (setup.py)
    def untracked(obj: T) -> T:
        return obj
