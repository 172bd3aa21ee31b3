"""``GATEWAY_REDIS_URL``: a Redis URL as redis-py's ``from_url`` reads it (``redis://``,
``rediss://``, ``unix://``), or the address of a Sentinel-managed primary, which redis-py
has no URL for::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]…]/service_name[/db]
                     [?sentinel_password=…]

The hosts are the Sentinels (port 26379 when left out; ``[::1]:26379`` for IPv6), the
password (and username, for a Redis ACL user) is the primary's, and ``sentinel_password``
the Sentinels' own when they require one. Parsed here, without importing redis, so that
settings can refuse a malformed address at start with a reason; no message repeats a
password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

SENTINEL_SCHEME = "redis+sentinel://"
PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_SENTINEL_PORT = 26379
FORM = "redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]"
QUERY_KEYS = ("sentinel_password",)


class InvalidRedisUrl(ValueError):
    """Why a ``redis+sentinel://`` address cannot be used (never quoting a password)."""


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # the primary's
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel(url: str) -> bool:
    return url[:len(SENTINEL_SCHEME)].lower() == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` address; ``InvalidRedisUrl`` says what is wrong."""
    if not is_sentinel(url):
        raise InvalidRedisUrl(f"a Sentinel address starts with {SENTINEL_SCHEME}")
    rest = url[len(SENTINEL_SCHEME):]
    if "#" in rest:
        raise InvalidRedisUrl(f"a fragment (#…) has no meaning here; expected {FORM}")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        if not colon or not secret:
            raise InvalidRedisUrl(f"credentials before @ must be :password or "
                                  f"username:password; expected {FORM}")
        username, password = unquote(user) or None, unquote(secret)
    sentinels = tuple(_host_port(part) for part in hosts.split(",")) if hosts else ()
    if not sentinels:
        raise InvalidRedisUrl(f"no Sentinel host; expected {FORM}")
    segments = path.split("/") if slash else []
    if segments and segments[-1] == "":  # a trailing slash
        segments.pop()
    if not segments or not segments[0]:
        raise InvalidRedisUrl(f"no service name (the name Sentinel monitors, e.g. mymaster); "
                              f"expected {FORM}")
    if len(segments) > 2:
        raise InvalidRedisUrl(f"too many path segments; expected {FORM}")
    service = unquote(segments[0])
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise InvalidRedisUrl(f"the database must be a number, got {segments[1]!r}")
        db = int(segments[1])
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in QUERY_KEYS:
            raise InvalidRedisUrl(f"unknown parameter {key!r} (known: {', '.join(QUERY_KEYS)})")
        options[key] = value
    return SentinelUrl(sentinels, service, db, username, password,
                       options.get("sentinel_password") or None)


def _host_port(part: str) -> tuple[str, int]:
    if part.startswith("["):  # [IPv6]:port
        host, bracket, tail = part[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise InvalidRedisUrl(f"malformed Sentinel address {part!r}")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = part.partition(":")
    if not host or any(c.isspace() or c in "/@?[]" for c in host):
        raise InvalidRedisUrl(f"malformed Sentinel address {part!r}; expected host:port")
    if not port_text:
        if part.endswith(":"):
            raise InvalidRedisUrl(f"malformed Sentinel address {part!r}; expected host:port")
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidRedisUrl(f"bad port in Sentinel address {part!r} (1 to 65535)")
    return host, int(port_text)
