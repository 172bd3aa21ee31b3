"""Logging set-up. Log lines carry internal detail but never credentials or digests.

Database and Redis drivers log statements *with their parameters* at DEBUG (aiosqlite
does), and those parameters are digests: their loggers are held at INFO or above whatever
``GATEWAY_LOG_LEVEL`` says.
"""

from __future__ import annotations

import logging

DRIVER_LOGGERS = ("aiosqlite", "asyncpg", "redis")


def configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(level=numeric,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(numeric)
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
