"""``GATEWAY_REDIS_URL`` with a Sentinel address: what is read from it, and the reason each
malformed one is refused at start (never quoting the password)."""

from __future__ import annotations

import pytest

from gateway.cache.redis_backend import RedisBackend, _PrimaryPool
from gateway.cache.redis_url import SentinelUrl, parse_sentinel_url
from gateway.errors import ConfigError
from gateway.observability.metrics import Metrics
from gateway.settings import load_settings

FORM = "expected redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]"


@pytest.mark.parametrize(("url", "parsed"), [
    ("redis+sentinel://127.0.0.1:26400/mymaster",
     SentinelUrl((("127.0.0.1", 26400),), "mymaster")),
    ("redis+sentinel://s1:26379,s2:26380,s3/mymaster/2",
     SentinelUrl((("s1", 26379), ("s2", 26380), ("s3", 26379)), "mymaster", 2)),
    ("redis+sentinel://:p%40ss@s1:1/cache/",
     SentinelUrl((("s1", 1),), "cache", 0, None, "p@ss")),
    ("redis+sentinel://gateway:secret@[::1]:26379,[fe80::1]/svc/15",
     SentinelUrl((("::1", 26379), ("fe80::1", 26379)), "svc", 15, "gateway", "secret")),
    ("REDIS+SENTINEL://s1:26379/mymaster?sentinel_password=sp",
     SentinelUrl((("s1", 26379),), "mymaster", 0, None, None, "sp")),
])
def test_a_sentinel_address_is_read(url: str, parsed: SentinelUrl) -> None:
    got = parse_sentinel_url(url)
    assert got == parsed
    assert (got.password, got.sentinel_password) == (parsed.password, parsed.sentinel_password)


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+sentinel://", f"no Sentinel host; {FORM}"),
    ("redis+sentinel:///mymaster", f"no Sentinel host; {FORM}"),
    ("redis+sentinel://s1:26379", "no service name (the name Sentinel monitors, e.g. "
                                  f"mymaster); {FORM}"),
    ("redis+sentinel://s1:26379/", "no service name (the name Sentinel monitors, e.g. "
                                   f"mymaster); {FORM}"),
    ("redis+sentinel://s1:26379//0", "no service name (the name Sentinel monitors, e.g. "
                                     f"mymaster); {FORM}"),
    ("redis+sentinel://s1:26379/mymaster/x", "the database must be a number, got 'x'"),
    ("redis+sentinel://s1:26379/mymaster/-1", "the database must be a number, got '-1'"),
    ("redis+sentinel://s1:26379/mymaster/0/extra", f"too many path segments; {FORM}"),
    ("redis+sentinel://s1:port/mymaster", "bad port in Sentinel address 's1:port' (1 to 65535)"),
    ("redis+sentinel://s1:0/mymaster", "bad port in Sentinel address 's1:0' (1 to 65535)"),
    ("redis+sentinel://s1:70000/mymaster",
     "bad port in Sentinel address 's1:70000' (1 to 65535)"),
    ("redis+sentinel://s1:26379,,s2/mymaster",
     "malformed Sentinel address ''; expected host:port"),
    ("redis+sentinel://s1:26379,/mymaster", "malformed Sentinel address ''; expected host:port"),
    ("redis+sentinel://s1:/mymaster", "malformed Sentinel address 's1:'; expected host:port"),
    ("redis+sentinel://[::1/mymaster", "malformed Sentinel address '[::1'"),
    ("redis+sentinel://[::1]x/mymaster", "malformed Sentinel address '[::1]x'"),
    ("redis+sentinel://pass-without-colon@s1/mymaster",
     f"credentials before @ must be :password or username:password; {FORM}"),
    ("redis+sentinel://user:@s1/mymaster",
     f"credentials before @ must be :password or username:password; {FORM}"),
    ("redis+sentinel://s1/mymaster?db=3",
     "unknown parameter 'db' (known: sentinel_password)"),
    ("redis+sentinel://s1/mymaster#frag", f"a fragment (#…) has no meaning here; {FORM}"),
])
def test_a_malformed_sentinel_address_is_refused_with_its_reason(url: str, reason: str
                                                                 ) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_REDIS_URL": url})
    assert str(caught.value) == f"GATEWAY_REDIS_URL: redis+sentinel: {reason}"


def test_no_refusal_quotes_the_password() -> None:
    for url in ("redis+sentinel://:hunter2-secret@s1:x/mymaster",
                "redis+sentinel://:hunter2-secret@s1/mymaster/x",
                "redis+sentinel://u:hunter2-secret@/mymaster"):
        with pytest.raises(ConfigError) as caught:
            load_settings({"GATEWAY_REDIS_URL": url})
        assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "rediss://cache:6380/1", "unix:///run/redis.sock?db=2",
    "redis+sentinel://s1,s2,s3/mymaster",
])
def test_plain_and_sentinel_urls_are_accepted(url: str) -> None:
    assert load_settings({"GATEWAY_REDIS_URL": url}).redis_url == url


async def test_a_sentinel_backend_asks_the_named_service_for_its_primary() -> None:
    """Nothing is connected to until a command runs: the client is a Sentinel-managed
    pool for the service, on the database of the address, and the invalidation channel is
    that database's."""
    backend = RedisBackend("redis+sentinel://:pw@127.0.0.1:26499,127.0.0.1:26498/svc/3",
                           Metrics())
    try:
        pool = backend._client.connection_pool
        assert isinstance(pool, _PrimaryPool)
        assert pool.service_name == "svc"
        assert pool.connection_kwargs["db"] == 3
        assert pool.connection_kwargs["password"] == "pw"
        assert backend.channel == "gateway:invalidate:3"
        assert backend._sentinel is not None
        assert [(s.connection_pool.connection_kwargs["host"],
                 s.connection_pool.connection_kwargs["port"])
                for s in backend._sentinel.sentinels] == [("127.0.0.1", 26499),
                                                          ("127.0.0.1", 26498)]
        assert backend.l2_ready
    finally:
        await backend.close()


async def test_a_new_primary_holds_l2_until_released_and_fails_calls_across_it() -> None:
    backend = RedisBackend("redis+sentinel://127.0.0.1:26499/svc", Metrics())
    switched: list[int] = []
    backend.on_switch = lambda: switched.append(backend.epoch)
    try:
        backend._primary_named(("10.0.0.1", 6379))  # the first primary: no change
        assert (backend.epoch, backend.l2_held, switched) == (0, None, [])

        async def across_a_failover() -> str:
            backend._primary_named(("10.0.0.2", 6379))
            return "the old primary's answer"

        assert await backend._call("mget", across_a_failover()) is None
        assert (backend.epoch, backend.l2_held, switched) == (1, 1, [1])
        assert not backend.l2_ready
        assert await backend.get("gw:k:x") is None  # held: no read at all
        backend._primary_named(("10.0.0.3", 6379))  # again, before the replay finished
        assert not backend.release_l2(1)
        assert backend.l2_held == 2
        assert backend.release_l2(2)
        assert backend.l2_ready
        assert backend.metrics.registry.get_sample_value(
            "gateway_redis_primary_changes_total") == 2
    finally:
        await backend.close()
