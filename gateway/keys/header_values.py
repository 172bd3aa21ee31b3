"""Identity values made safe for an HTTP response header (forward auth's X-Actor-Id,
X-Key-Id, X-Scopes).

The admin API refuses control characters in these fields (``gateway.keys.fields``), but a
key stored before that check, or written to the store by other means, may still hold
them. Each value is sent as its UTF-8 bytes with every byte outside visible ASCII
(``0x21`` to ``0x7E``) or an inner space percent-encoded (``%0D``, ``%C3%A9``), and ``%``
itself as ``%25``, so a CR/LF can never end a header and percent-decoding gives the exact
stored value back. A leading or trailing space is encoded too: HTTP drops it otherwise.
An ordinary value (visible ASCII, no ``%``) is sent unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Bytes that are sent as they are: visible ASCII but "%", and the space.
_UNSAFE = re.compile(rb"[^\x20-\x24\x26-\x7e]")
# In X-Scopes a scope's own "," or space would split it: encode those as well.
_UNSAFE_IN_LIST = re.compile(rb"[^\x21-\x24\x26-\x2b\x2d-\x7e]")


def _escape(match: re.Match[bytes]) -> bytes:
    return b"".join(b"%%%02X" % byte for byte in match[0])


def _encode(value: str, unsafe: re.Pattern[bytes]) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    if unsafe.search(raw) is None and not raw.startswith(b" ") and not raw.endswith(b" "):
        return raw
    out = unsafe.sub(_escape, raw)
    if out.startswith(b" "):
        out = b"%20" + out[1:]
    if out.endswith(b" "):
        out = out[:-1] + b"%20"
    return out


def header_value(value: str) -> bytes:
    """``value`` as the bytes of a safe header value (X-Actor-Id, X-Key-Id)."""
    return _encode(value, _UNSAFE)


def scopes_value(scopes: Iterable[str]) -> bytes:
    """The X-Scopes value: each scope encoded (its own "," and spaces too), joined by ","."""
    return b",".join(_encode(scope, _UNSAFE_IN_LIST) for scope in scopes)
