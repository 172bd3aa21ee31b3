"""Settings: read once from an injectable mapping (the environment by default).

A YAML file named by ``GATEWAY_CONFIG`` may set the same keys (either the
``GATEWAY_*`` names or their lower-case short forms); the environment wins.
Every error names the offending key.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.crypto.admin_tokens import parse_entries
from gateway.errors import ConfigError
from gateway.secret import Secret

DEFAULT_DATABASE_URL = "sqlite:///./gateway-data/gateway.db"
DEFAULT_ROTATION_PERIOD_S = 90 * 86_400.0
# AUTO rotation keeps every retired key published while tokens it signed may be valid, so
# a shorter period would only pile up keys.
MIN_ROTATION_PERIOD_S = 86_400.0

# every setting, by its name without the GATEWAY_ prefix (env, YAML and the k8s ConfigMap)
KEYS = (
    "DATABASE_URL",
    "REDIS_URL",
    "ADMIN_TOKENS",
    "PEPPER",
    "PEPPER_RETIRED",
    "HOST",
    "PORT",
    "KEY_PREFIX",
    "PUBLIC_KEY_PREFIX",
    "DEFAULT_KEY_TTL",
    "ISSUER",
    "CREDENTIAL_HEADER",
    "TRUSTED_PROXIES",
    "ADMIN_REFUSAL_DELAY",
    "L1_TTL",
    "L1_SIZE",
    "L2_TTL",
    "NEGATIVE_TTL",
    "SIGNING_KEYS",
    "SIGNING_ROTATION",
    "SIGNING_ROTATION_PERIOD",
    "LOG_LEVEL",
    "DRAIN_SECONDS",
    "STORE_GRACE",
    "WORKERS",
)


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
    key_prefix: str = "ory_ak"
    public_key_prefix: str = "ory_pk"
    default_key_ttl: str | None = None
    issuer: str = "http://127.0.0.1:4470"
    credential_header: str = "x-api-key"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    admin_refusal_delay: float = 5.0  # the longest a refused admin authentication waits
    l1_ttl: float = 10.0
    l1_size: int = 100_000
    l2_ttl: float = 300.0
    negative_ttl: float = 5.0
    signing_keys: tuple[str, ...] = ()
    signing_rotation: str = "MANUAL"  # Okta rotationMode: MANUAL or AUTO
    signing_rotation_period_s: float = DEFAULT_ROTATION_PERIOD_S  # AUTO: how often
    log_level: str = "info"
    drain_seconds: float = 5.0  # after SIGTERM: not ready, still answering (Connection: close)
    # how long cached answers outlive the last read of the change log, while the Redis
    # invalidation subscription is up (rides out a store outage; see gateway.cache.changes)
    store_grace: float = 15.0
    workers: int = 1  # processes serving one port (gateway serve --workers)
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


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"GATEWAY_CONFIG: {path} must hold a mapping")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).upper().removeprefix("GATEWAY_")
        if name not in KEYS:
            raise ConfigError(f"GATEWAY_CONFIG: unknown key {key!r} in {path}")
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out[name] = "" if value is None else str(value)
    return out


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _pepper(name: str, value: str) -> str:
    if len(value) < 16:
        raise ConfigError(f"GATEWAY_{name}: a pepper must be at least 16 characters")
    return value


def _number(name: str, raw: str, kind: type[int] | type[float]) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"GATEWAY_{name}: expected a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"GATEWAY_{name}: must not be negative")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``env`` (default ``os.environ``) and the optional YAML file."""
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    if env.get("GATEWAY_CONFIG"):
        values.update(_read_yaml(env["GATEWAY_CONFIG"]))
    for name in KEYS:
        if f"GATEWAY_{name}" in env:
            values[name] = env[f"GATEWAY_{name}"]

    kw: dict[str, Any] = {}
    if values.get("DATABASE_URL"):
        url = values["DATABASE_URL"]
        if not url.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ConfigError(
                "GATEWAY_DATABASE_URL: expected sqlite:///path or postgresql://…"
            )
        kw["database_url"] = url
    if values.get("REDIS_URL"):
        if not values["REDIS_URL"].startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("GATEWAY_REDIS_URL: expected redis://host:port/db")
        kw["redis_url"] = values["REDIS_URL"]
    if values.get("ADMIN_TOKENS"):
        kw["admin_tokens"] = tuple(Secret(t) for t in parse_entries(values["ADMIN_TOKENS"]))
    if values.get("PEPPER"):
        kw["pepper"] = Secret(_pepper("PEPPER", values["PEPPER"]))
    if values.get("PEPPER_RETIRED"):
        kw["pepper_retired"] = tuple(Secret(_pepper("PEPPER_RETIRED", p))
                                     for p in _split(values["PEPPER_RETIRED"]))
    if values.get("HOST"):
        kw["host"] = values["HOST"]
    if values.get("PORT"):
        port = _number("PORT", values["PORT"], int)
        if not 0 < port < 65536:
            raise ConfigError("GATEWAY_PORT: must be between 1 and 65535")
        kw["port"] = port
    for name in ("KEY_PREFIX", "PUBLIC_KEY_PREFIX"):
        if values.get(name):
            prefix = values[name]
            if not prefix.replace("_", "").isalnum() or len(prefix) > 16:
                raise ConfigError(f"GATEWAY_{name}: letters, digits and _ only, at most 16")
            kw[name.lower()] = prefix
    if values.get("DEFAULT_KEY_TTL"):
        kw["default_key_ttl"] = values["DEFAULT_KEY_TTL"]
    if values.get("ISSUER"):
        kw["issuer"] = values["ISSUER"]
    if values.get("CREDENTIAL_HEADER"):
        kw["credential_header"] = values["CREDENTIAL_HEADER"].lower()
    if "TRUSTED_PROXIES" in values:
        kw["trusted_proxies"] = _split(values["TRUSTED_PROXIES"])
        for entry in kw["trusted_proxies"]:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(f"GATEWAY_TRUSTED_PROXIES: {entry!r} is not an address "
                                  "or CIDR range") from None
    for name in ("ADMIN_REFUSAL_DELAY", "L1_TTL", "L2_TTL", "NEGATIVE_TTL", "DRAIN_SECONDS"):
        if values.get(name):
            kw[name.lower()] = _number(name, values[name], float)
    if values.get("STORE_GRACE"):
        kw["store_grace"] = _number("STORE_GRACE", values["STORE_GRACE"], float)
        if kw["store_grace"] < 1:
            raise ConfigError("GATEWAY_STORE_GRACE: must be at least 1 (seconds)")
    if values.get("WORKERS"):
        kw["workers"] = _number("WORKERS", values["WORKERS"], int)
    if values.get("L1_SIZE"):
        kw["l1_size"] = _number("L1_SIZE", values["L1_SIZE"], int)
    if values.get("SIGNING_KEYS"):
        kw["signing_keys"] = _split(values["SIGNING_KEYS"])
    if values.get("SIGNING_ROTATION"):
        mode = values["SIGNING_ROTATION"].upper()
        if mode not in ("MANUAL", "AUTO"):
            raise ConfigError(f"GATEWAY_SIGNING_ROTATION: expected MANUAL or AUTO, got "
                              f"{values['SIGNING_ROTATION']!r}")
        kw["signing_rotation"] = mode
    if values.get("SIGNING_ROTATION_PERIOD"):
        kw["signing_rotation_period_s"] = _rotation_period(values["SIGNING_ROTATION_PERIOD"])
    if values.get("LOG_LEVEL"):
        kw["log_level"] = values["LOG_LEVEL"].lower()
    settings = Settings(**kw)
    if settings.default_key_ttl:
        from gateway.keys.durations import parse_ttl

        try:
            parse_ttl(settings.default_key_ttl, "GATEWAY_DEFAULT_KEY_TTL")
        except Exception as exc:
            raise ConfigError(str(exc)) from exc
    check_workers(settings)
    return settings


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
