"""Settings: read once from an injectable mapping (the environment by default).

A YAML file named by ``GATEWAY_CONFIG`` may set the same keys (either the
``GATEWAY_*`` names or their lower-case short forms); the environment wins.
``SETTINGS`` is the table of them: each ``GATEWAY_<NAME>``, the Settings field it fills and
how its text is parsed and checked. Every error names the offending key.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gateway.crypto.admin_tokens import parse_entries
from gateway.errors import ConfigError
from gateway.secret import Secret

DEFAULT_DATABASE_URL = "sqlite:///./gateway-data/gateway.db"
DEFAULT_ROTATION_PERIOD_S = 90 * 86_400.0
# AUTO rotation keeps every retired key published while tokens it signed may be valid, so
# a shorter period would only pile up keys.
MIN_ROTATION_PERIOD_S = 86_400.0


class _Invalid(Exception):
    """A parser's or check's reason to refuse a value; load_settings names the variable."""


# Parsers (the text → the value) and checks (the value → None) for the SETTINGS table, which
# follows the Settings dataclass. Each raises _Invalid(reason); load_settings names the key.

def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_N = TypeVar("_N", int, float)


def _number(raw: str, kind: type[_N]) -> _N:
    try:
        value = kind(raw)
    except ValueError:
        raise _Invalid(f"expected a number, got {raw!r}") from None
    if value < 0:
        raise _Invalid("must not be negative")
    return value


def _int(raw: str) -> int:
    return _number(raw, int)


def _float(raw: str) -> float:
    return _number(raw, float)


def _pepper(raw: str) -> Secret:
    if len(raw) < 16:
        raise _Invalid("a pepper must be at least 16 characters")
    return Secret(raw)


def _peppers(raw: str) -> tuple[Secret, ...]:
    return tuple(_pepper(part) for part in _split(raw))


def _admin_tokens(raw: str) -> tuple[Secret, ...]:
    return tuple(Secret(token) for token in parse_entries(raw))  # ConfigError names the key


def _rotation_mode(raw: str) -> str:
    if raw.upper() not in ("MANUAL", "AUTO"):
        raise _Invalid(f"expected MANUAL or AUTO, got {raw!r}")
    return raw.upper()


def _rotation_period(raw: str) -> float:
    from gateway.keys.durations import parse_duration

    name = "GATEWAY_SIGNING_ROTATION_PERIOD"
    try:
        seconds = parse_duration(raw, name)
    except Exception as exc:
        raise ConfigError(str(exc)) from exc
    if seconds < MIN_ROTATION_PERIOD_S:
        raise ConfigError(f"{name}: at least 1d (24h), got {raw!r}")
    return seconds


def _retention(name: str) -> Callable[[str], float | None]:
    """How long records are kept: a duration (``90d``), or ``0`` for ever."""

    def parse(raw: str) -> float | None:
        from gateway.keys.durations import parse_duration

        try:
            seconds = parse_duration(raw, name)
        except Exception as exc:
            raise ConfigError(str(exc)) from exc
        if 0 < seconds < 3600:
            raise ConfigError(f"{name}: at least 1h (or 0: for ever), got {raw!r}")
        return seconds or None

    return parse


def _log_format(raw: str) -> str:
    if raw.lower() not in ("text", "json"):
        raise _Invalid(f"expected text or json, got {raw!r}")
    return raw.lower()


def _bool(raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise _Invalid(f"expected true or false, got {raw!r}")
    return raw.lower() == "true"


def _database_url(url: str) -> None:
    if not url.startswith(("sqlite:", "postgresql://", "postgres://")):
        raise _Invalid("expected sqlite:///path or postgresql://…")


def _redis_url(url: str) -> None:
    from gateway.cache.redis_url import InvalidRedisUrl, is_sentinel, parse_sentinel_url

    if is_sentinel(url):
        try:
            parse_sentinel_url(url)
        except InvalidRedisUrl as exc:
            raise _Invalid(f"redis+sentinel: {exc}") from None
    elif not url.startswith(("redis://", "rediss://", "unix://")):
        raise _Invalid("expected redis://host:port/db, rediss://…, unix://… or "
                       "redis+sentinel://host:port[,host:port…]/service_name[/db]")


def _port(port: int) -> None:
    if not 0 < port < 65536:
        raise _Invalid("must be between 1 and 65535")


def _key_prefix(prefix: str) -> None:
    if not prefix.replace("_", "").isalnum() or len(prefix) > 16:
        raise _Invalid("letters, digits and _ only, at most 16")


def _networks(entries: tuple[str, ...]) -> None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise _Invalid(f"{entry!r} is not an address or CIDR range") from None


def _otel_endpoint(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise _Invalid("expected an OTLP/HTTP URL, e.g. http://collector:4318")
    from importlib.util import find_spec

    try:  # without importing OpenTelemetry itself
        installed = all(find_spec(name) is not None for name in (
            "opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"))
    except ImportError:
        installed = False
    if not installed:
        raise _Invalid("tracing needs the otel extra: pip install 'gateway[otel]'")


def _grpc_port(port: int) -> None:
    _port(port)
    from importlib.util import find_spec

    try:  # without importing grpc itself
        installed = all(find_spec(name) is not None for name in ("grpc", "google.rpc.status_pb2"))
    except ImportError:
        installed = False
    if not installed:
        raise _Invalid("gRPC ext_authz needs the grpc extra: pip install 'gateway[grpc]'")


def _at_least_one_second(seconds: float) -> None:
    if seconds < 1:
        raise _Invalid("must be at least 1 (seconds)")


@dataclass(frozen=True)
class Settings:
    """Everything the gateway is configured with. Secrets are masked in repr."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_tokens: tuple[Secret, ...] = ()
    pepper: Secret | None = None
    pepper_retired: tuple[Secret, ...] = ()  # still accepted; keys move off them on use
    host: str = "127.0.0.1"
    port: int = 4470
    grpc_port: int | None = None  # Envoy ext_authz over gRPC listens here (none: off)
    grpc_host: str | None = None  # its address (none: GATEWAY_HOST's)
    key_prefix: str = "ory_ak"
    public_key_prefix: str = "ory_pk"
    default_key_ttl: str | None = None
    max_key_ttl: str = "8760h"
    issuer: str = "http://127.0.0.1:4470"
    credential_header: str = "x-api-key"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    cors_origins: tuple[str, ...] = ()  # browsers' origins allowed to call (none: CORS off)
    admin_refusal_delay: float = 5.0  # the longest a refused admin authentication waits
    l1_ttl: float = 10.0
    l1_size: int = 100_000
    l2_ttl: float = 300.0
    negative_ttl: float = 5.0
    signing_keys: tuple[str, ...] = ()
    signing_rotation: str = "MANUAL"  # Okta rotationMode: MANUAL or AUTO
    signing_rotation_period_s: float = DEFAULT_ROTATION_PERIOD_S  # AUTO: how often
    log_level: str = "info"
    log_format: str = "text"  # every logger's lines: "text" (development) or "json"
    access_log: bool = False  # one line per request on the gateway.access logger
    drain_seconds: float = 5.0  # after SIGTERM: not ready, still answering (Connection: close)
    # how long cached answers outlive the last read of the change log, while the Redis
    # invalidation subscription is up (rides out a store outage; see gateway.cache.changes)
    store_grace: float = 15.0
    workers: int = 1  # processes serving one port (gateway serve --workers)
    otel_endpoint: str | None = None  # OTLP/HTTP collector: traces exported there (none: off)
    audit_retention_s: float | None = 90 * 86_400  # audit events kept (None: for ever)
    usage_retention_s: float | None = 30 * 86_400  # per-minute usage counts kept
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def data_dir(self) -> Path:
        """Directory for generated local state (pepper, bootstrap admin token)."""
        if self.is_sqlite:
            return sqlite_path(self.database_url).parent
        return Path("./gateway-data")


@dataclass(frozen=True)
class Setting:
    """One row of SETTINGS: the variable ``GATEWAY_<name>`` fills ``Settings.<attr>``."""

    name: str  # without the GATEWAY_ prefix, as in the environment, YAML and the k8s ConfigMap
    attr: str
    # the text → the value; raises _Invalid(reason), or a ConfigError that names the key
    parse: Callable[[str], Any] = str
    check: Callable[[Any], None] | None = None  # the parsed value; raises _Invalid(reason)
    keep_empty: bool = False  # an empty value is a value; otherwise it means unset

    @property
    def default(self) -> Any:
        """The value when unset: the Settings dataclass's default."""
        return Settings.__dataclass_fields__[self.attr].default


# Every setting, checked in this order (the first bad one is reported). An unset or empty
# value leaves the default. Checks across settings come after, in load_settings.
SETTINGS: tuple[Setting, ...] = (
    #       GATEWAY_<name>             Settings.<attr>              parse   check
    Setting("DATABASE_URL",            "database_url",              str,    _database_url),
    Setting("REDIS_URL",               "redis_url",                 str,    _redis_url),
    Setting("ADMIN_TOKENS",            "admin_tokens",              _admin_tokens),
    Setting("PEPPER",                  "pepper",                    _pepper),
    Setting("PEPPER_RETIRED",          "pepper_retired",            _peppers),
    Setting("HOST",                    "host"),
    Setting("PORT",                    "port",                      _int,   _port),
    Setting("GRPC_PORT",               "grpc_port",                 _int,   _grpc_port),
    Setting("GRPC_HOST",               "grpc_host"),
    Setting("KEY_PREFIX",              "key_prefix",                str,    _key_prefix),
    Setting("PUBLIC_KEY_PREFIX",       "public_key_prefix",         str,    _key_prefix),
    Setting("DEFAULT_KEY_TTL",         "default_key_ttl"),  # parse_ttl after the loop
    Setting("MAX_KEY_TTL",             "max_key_ttl"),  # likewise
    Setting("ISSUER",                  "issuer"),
    Setting("CREDENTIAL_HEADER",       "credential_header",         str.lower),
    Setting("TRUSTED_PROXIES",         "trusted_proxies",           _split, _networks,
            keep_empty=True),  # empty: trust no proxy
    Setting("CORS_ORIGINS",            "cors_origins",              _split),
    Setting("ADMIN_REFUSAL_DELAY",     "admin_refusal_delay",       _float),
    Setting("L1_TTL",                  "l1_ttl",                    _float),
    Setting("L2_TTL",                  "l2_ttl",                    _float),
    Setting("NEGATIVE_TTL",            "negative_ttl",              _float),
    Setting("DRAIN_SECONDS",           "drain_seconds",             _float),
    Setting("STORE_GRACE",             "store_grace",               _float, _at_least_one_second),
    Setting("WORKERS",                 "workers",                   _int),  # see check_workers
    Setting("L1_SIZE",                 "l1_size",                   _int),
    Setting("SIGNING_KEYS",            "signing_keys",              _split),
    Setting("SIGNING_ROTATION",        "signing_rotation",          _rotation_mode),
    Setting("SIGNING_ROTATION_PERIOD", "signing_rotation_period_s", _rotation_period),
    Setting("AUDIT_RETENTION",         "audit_retention_s",
            _retention("GATEWAY_AUDIT_RETENTION")),
    Setting("USAGE_RETENTION",         "usage_retention_s",
            _retention("GATEWAY_USAGE_RETENTION")),
    Setting("LOG_LEVEL",               "log_level",                 str.lower),
    Setting("LOG_FORMAT",              "log_format",                _log_format),
    Setting("ACCESS_LOG",              "access_log",                _bool),
    Setting("OTEL_ENDPOINT",           "otel_endpoint",             str,    _otel_endpoint),
)

# every setting, by its name without the GATEWAY_ prefix (env, YAML and the k8s ConfigMap)
KEYS = tuple(setting.name for setting in SETTINGS)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``env`` (default ``os.environ``) and the optional YAML file."""
    values = _read_values(os.environ if env is None else env)
    kw: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = values.get(setting.name)
        if raw is None or (raw == "" and not setting.keep_empty):
            continue
        try:
            value = setting.parse(raw)
            if setting.check is not None:
                setting.check(value)
        except _Invalid as exc:
            raise ConfigError(f"GATEWAY_{setting.name}: {exc}") from None
        kw[setting.attr] = value
    settings = Settings(**kw)
    _check_key_ttls(settings)
    check_workers(settings)
    if settings.grpc_port is not None and settings.grpc_port == settings.port:
        raise ConfigError("GATEWAY_GRPC_PORT: must differ from GATEWAY_PORT")
    return settings


def _read_values(env: Mapping[str, str]) -> dict[str, str]:
    """The text of every setting given, by name: the YAML file's, the environment's over it."""
    values = _read_yaml(env["GATEWAY_CONFIG"]) if env.get("GATEWAY_CONFIG") else {}
    values.update({name: env[f"GATEWAY_{name}"] for name in KEYS if f"GATEWAY_{name}" in env})
    return values


def _read_yaml(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"GATEWAY_CONFIG: {path} must hold a mapping")
    out: dict[str, str] = {}
    for key, value in data.items():
        name = str(key).upper().removeprefix("GATEWAY_")
        if name not in KEYS:
            raise ConfigError(f"GATEWAY_CONFIG: unknown key {key!r} in {path}")
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out[name] = "" if value is None else str(value)
    return out


def _check_key_ttls(settings: Settings) -> None:
    """The key lifetimes are kept as written (``KeyService`` parses them); here they are
    checked: each a duration, ``GATEWAY_MAX_KEY_TTL=0`` turning the limit off, and the
    default no longer than the limit."""
    from gateway.keys.durations import parse_ttl

    try:
        longest = parse_ttl(settings.max_key_ttl, "GATEWAY_MAX_KEY_TTL")
        default = (parse_ttl(settings.default_key_ttl, "GATEWAY_DEFAULT_KEY_TTL")
                   if settings.default_key_ttl else None)
    except Exception as exc:
        raise ConfigError(str(exc)) from exc
    if longest is not None and default is not None and default > longest:
        raise ConfigError(f"GATEWAY_DEFAULT_KEY_TTL: {settings.default_key_ttl} is longer "
                          f"than GATEWAY_MAX_KEY_TTL ({settings.max_key_ttl})")


MAX_WORKERS = 64


def check_workers(settings: Settings) -> None:
    """More than one worker needs Redis: without it rate-limit counters are per process, so
    each worker would allow the whole quota (revocation alone would hold, through the
    store's change log)."""
    if not 1 <= settings.workers <= MAX_WORKERS:
        raise ConfigError(f"GATEWAY_WORKERS: must be between 1 and {MAX_WORKERS}")
    if settings.workers > 1 and settings.redis_url is None:
        raise ConfigError("GATEWAY_WORKERS: more than one worker needs GATEWAY_REDIS_URL "
                          "(rate-limit counters are shared through Redis)")


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``."""
    rest = url.removeprefix("sqlite://")
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest:
        raise ConfigError("GATEWAY_DATABASE_URL: sqlite URL names no file")
    return Path(rest)
