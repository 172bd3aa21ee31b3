"""The installed version of the gateway (``gateway --version``, ``GET /version``)."""

from __future__ import annotations

import importlib.metadata

try:
    VERSION = importlib.metadata.version("gateway")
except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
    VERSION = "0+unknown"
