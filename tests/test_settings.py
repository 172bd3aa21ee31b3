"""Settings: each key parsed and checked, errors naming the key."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.settings import DEFAULT_ROTATION_PERIOD_S, load_settings


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
