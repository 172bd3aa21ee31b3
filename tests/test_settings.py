"""Settings: each key parsed and checked, errors naming the key."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.secret import Secret
from gateway.settings import (
    DEFAULT_ROTATION_PERIOD_S,
    KEYS,
    SETTINGS,
    Settings,
    load_settings,
)


def test_signing_rotation_is_manual_unless_asked():
    settings = load_settings({})
    assert settings.signing_rotation == "MANUAL"
    assert settings.signing_rotation_period_s == DEFAULT_ROTATION_PERIOD_S


def test_auto_signing_rotation_with_a_period():
    settings = load_settings({"GATEWAY_SIGNING_ROTATION": "auto",
                              "GATEWAY_SIGNING_ROTATION_PERIOD": "30d"})
    assert settings.signing_rotation == "AUTO"
    assert settings.signing_rotation_period_s == 30 * 86_400


@pytest.mark.parametrize(("env", "message"), [
    ({"GATEWAY_SIGNING_ROTATION": "weekly"}, "GATEWAY_SIGNING_ROTATION: expected MANUAL or AUTO"),
    ({"GATEWAY_SIGNING_ROTATION_PERIOD": "soon"}, "GATEWAY_SIGNING_ROTATION_PERIOD: 'soon' is not"),
    ({"GATEWAY_SIGNING_ROTATION_PERIOD": "12h"}, "GATEWAY_SIGNING_ROTATION_PERIOD: at least 1d"),
    ({"GATEWAY_SIGNING_ROTATION_PERIOD": "-1d"}, "GATEWAY_SIGNING_ROTATION_PERIOD: must not be"),
])
def test_bad_rotation_settings_name_the_key(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


# --- the SETTINGS table ----------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"
PEPPER = "0123456789abcdef"


def _documented() -> set[str]:
    """The variables in the first column of README's configuration table."""
    rows = (line.split("|")[1] for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `GATEWAY_"))
    return {name for cell in rows for name in re.findall(r"`GATEWAY_(\w+)`", cell)}


def test_the_table_fills_every_field_once():
    attrs = [setting.attr for setting in SETTINGS]
    assert sorted(attrs) == sorted(f.name for f in fields(Settings) if f.name != "extra")
    assert len(set(KEYS)) == len(KEYS) == len(SETTINGS)
    assert tuple(setting.name for setting in SETTINGS) == KEYS


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_every_setting_is_documented_in_the_readme(name):
    assert name in _documented()


def test_the_readme_documents_no_unknown_setting():
    assert _documented() <= set(KEYS)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_unset_or_empty_leaves_the_default(setting):
    assert getattr(load_settings({}), setting.attr) == setting.default
    empty = getattr(load_settings({f"GATEWAY_{setting.name}": ""}), setting.attr)
    assert empty == (() if setting.keep_empty else setting.default)


@pytest.mark.parametrize(("name", "raw", "attr", "value"), [
    ("DATABASE_URL", "postgres://u@db/gw", "database_url", "postgres://u@db/gw"),
    ("REDIS_URL", "rediss://cache:6380/1", "redis_url", "rediss://cache:6380/1"),
    ("ADMIN_TOKENS", "a" * 16 + ", " + "b" * 16, "admin_tokens",
     (Secret("a" * 16), Secret("b" * 16))),
    ("PEPPER", PEPPER, "pepper", Secret(PEPPER)),
    ("PEPPER_RETIRED", f"{PEPPER}, {PEPPER[::-1]},", "pepper_retired",
     (Secret(PEPPER), Secret(PEPPER[::-1]))),
    ("HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("PORT", "65535", "port", 65535),
    ("KEY_PREFIX", "acme_sk", "key_prefix", "acme_sk"),
    ("PUBLIC_KEY_PREFIX", "x" * 16, "public_key_prefix", "x" * 16),
    ("DEFAULT_KEY_TTL", "30d", "default_key_ttl", "30d"),
    ("ISSUER", "https://auth.example", "issuer", "https://auth.example"),
    ("CREDENTIAL_HEADER", "X-Token", "credential_header", "x-token"),
    ("TRUSTED_PROXIES", "10.0.0.0/8, fd00::1", "trusted_proxies", ("10.0.0.0/8", "fd00::1")),
    ("ADMIN_REFUSAL_DELAY", "0.5", "admin_refusal_delay", 0.5),
    ("L1_TTL", "0", "l1_ttl", 0.0),
    ("L2_TTL", "60", "l2_ttl", 60.0),
    ("NEGATIVE_TTL", "1.5", "negative_ttl", 1.5),
    ("DRAIN_SECONDS", "0", "drain_seconds", 0.0),
    ("STORE_GRACE", "1", "store_grace", 1.0),
    ("L1_SIZE", "0", "l1_size", 0),
    ("SIGNING_KEYS", "file:///k.pem, base64://AAAA", "signing_keys",
     ("file:///k.pem", "base64://AAAA")),
    ("SIGNING_ROTATION", "Manual", "signing_rotation", "MANUAL"),
    ("LOG_LEVEL", "DEBUG", "log_level", "debug"),
])
def test_each_setting_is_parsed(name, raw, attr, value):
    assert getattr(load_settings({f"GATEWAY_{name}": raw}), attr) == value


def test_more_workers_with_redis():
    settings = load_settings({"GATEWAY_WORKERS": "4", "GATEWAY_REDIS_URL": "redis://cache"})
    assert settings.workers == 4


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("DATABASE_URL", "mysql://db", "expected sqlite:///path or postgresql://…"),
    ("REDIS_URL", "http://cache", "expected redis://host:port/db, rediss://…, unix://… or "
                                  "redis+sentinel://host:port[,host:port…]/service_name[/db]"),
    ("ADMIN_TOKENS", "short", "entry 1 is 5 characters; a plain token needs at least 16"),
    ("PEPPER", "short", "a pepper must be at least 16 characters"),
    ("PEPPER_RETIRED", f"{PEPPER},short", "a pepper must be at least 16 characters"),
    ("PORT", "http", "expected a number, got 'http'"),
    ("PORT", "1.5", "expected a number, got '1.5'"),
    ("PORT", "-1", "must not be negative"),
    ("PORT", "0", "must be between 1 and 65535"),
    ("PORT", "65536", "must be between 1 and 65535"),
    ("KEY_PREFIX", "a-b", "letters, digits and _ only, at most 16"),
    ("PUBLIC_KEY_PREFIX", "x" * 17, "letters, digits and _ only, at most 16"),
    ("DEFAULT_KEY_TTL", "0.5s", "'0.5s' is out of range; allowed 1s to 315360000s"),
    ("TRUSTED_PROXIES", "10.0.0.0/8,proxy", "'proxy' is not an address or CIDR range"),
    ("ADMIN_REFUSAL_DELAY", "soon", "expected a number, got 'soon'"),
    ("L1_TTL", "-1", "must not be negative"),
    ("L2_TTL", "x", "expected a number, got 'x'"),
    ("NEGATIVE_TTL", "-0.5", "must not be negative"),
    ("DRAIN_SECONDS", "-5", "must not be negative"),
    ("STORE_GRACE", "0.5", "must be at least 1 (seconds)"),
    ("STORE_GRACE", "-1", "must not be negative"),
    ("WORKERS", "many", "expected a number, got 'many'"),
    ("WORKERS", "0", "must be between 1 and 64"),
    ("WORKERS", "65", "must be between 1 and 64"),
    ("WORKERS", "2", "more than one worker needs GATEWAY_REDIS_URL "
                     "(rate-limit counters are shared through Redis)"),
    ("L1_SIZE", "1.5", "expected a number, got '1.5'"),
    ("SIGNING_ROTATION", "weekly", "expected MANUAL or AUTO, got 'weekly'"),
    ("SIGNING_ROTATION_PERIOD", "12h", "at least 1d (24h), got '12h'"),
])
def test_each_error_names_the_variable(name, raw, message):
    with pytest.raises(ConfigError) as caught:
        load_settings({f"GATEWAY_{name}": raw})
    assert str(caught.value) == f"GATEWAY_{name}: {message}"


def test_the_first_bad_setting_in_the_table_is_reported():
    env = {"GATEWAY_LOG_LEVEL": "x", "GATEWAY_WORKERS": "0", "GATEWAY_DEFAULT_KEY_TTL": "soon",
           "GATEWAY_L1_SIZE": "x", "GATEWAY_DRAIN_SECONDS": "x"}
    with pytest.raises(ConfigError, match=r"^GATEWAY_DRAIN_SECONDS: "):
        load_settings(env)
    del env["GATEWAY_DRAIN_SECONDS"], env["GATEWAY_L1_SIZE"]
    with pytest.raises(ConfigError, match=r"^GATEWAY_DEFAULT_KEY_TTL: "):  # then cross checks
        load_settings(env)


# --- GATEWAY_CONFIG --------------------------------------------------------------------------

def test_yaml_takes_short_or_full_names_and_lists_and_the_environment_wins(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("port: 8080\nGATEWAY_HOST: 0.0.0.0\n"
                      "trusted_proxies: [10.0.0.0/8, '::1']\nsigning_keys:\n")
    settings = load_settings({"GATEWAY_CONFIG": str(config), "GATEWAY_PORT": "9090"})
    assert (settings.port, settings.host) == (9090, "0.0.0.0")
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1")
    assert settings.signing_keys == ()


def test_an_empty_yaml_list_trusts_no_proxy(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("trusted_proxies: []\n")
    assert load_settings({"GATEWAY_CONFIG": str(config)}).trusted_proxies == ()


@pytest.mark.parametrize(("text", "message"), [
    ("bogus: 1\n", "unknown key 'bogus' in {path}"),
    ("- port\n", "{path} must hold a mapping"),
    ("port: [\n", "{path} is not valid YAML: "),
    ("port: x\n", None),  # the key's own error, not the file's
])
def test_yaml_errors_name_the_file(tmp_path, text, message):
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(config)})
    if message is None:
        assert str(caught.value) == "GATEWAY_PORT: expected a number, got 'x'"
    else:
        assert str(caught.value).startswith("GATEWAY_CONFIG: " + message.format(path=config))


def test_a_missing_yaml_file_is_named(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"^GATEWAY_CONFIG: cannot read {missing}: "):
        load_settings({"GATEWAY_CONFIG": str(missing)})


def test_the_readme_links_nothing_outside_the_repository() -> None:
    """A clone holds everything the README points at (the wire references: docs/wire)."""
    text = README.read_text(encoding="utf-8")
    assert "../" not in text
    root = README.parent
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (root / target).exists(), target
