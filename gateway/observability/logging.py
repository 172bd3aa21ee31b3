"""Logging set-up. Log lines carry internal detail but never credentials or digests.

One handler on the root logger (stderr) formats every logger's lines, the gateway's and
uvicorn's (``gateway serve`` gives uvicorn no handlers of its own): ``text`` for
development, or ``json`` (``GATEWAY_LOG_FORMAT``), one object a line. Each line of a
request carries its id (``request_context``).

Database and Redis drivers log statements *with their parameters* at DEBUG (aiosqlite
does), and those parameters are digests: their loggers are held at INFO or above whatever
``GATEWAY_LOG_LEVEL`` says.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from gateway.observability.request_context import request_id

DRIVER_LOGGERS = ("aiosqlite", "asyncpg", "redis")
ACCESS_LOGGER = "gateway.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the id of the request being served (None outside one),
    unless the call gave it (``extra={"request_id": …}``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> [<request id>]: <message>``, the id when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        name = record.name if rid is None else f"{record.name} [{rid}]"
        return f"{record.asctime} {record.levelname} {name}: {record.message}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``,
    ``request_id`` (when there is one), ``exception`` (its traceback, when there is one)
    and the record's ``fields`` (a dict given as ``extra={"fields": …}``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": rfc3339(record.created), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        rid = getattr(record, "request_id", None)
        if rid is not None:
            line["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def rfc3339(created: float) -> str:
    """``2026-11-22T10:00:00.123Z``: a record's time, UTC, to the millisecond."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure_logging`` installs (and replaces when called again). It
    writes to whatever ``sys.stderr`` is when a line is written, not the stream of when it
    was made (one replaced since, as a test's captured stderr, may be closed)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it
        pass


def configure_logging(level: str, log_format: str = "text", access_log: bool = False) -> None:
    """Every logger's lines to stderr at ``level``, as ``log_format`` (``text`` or
    ``json``); with ``access_log``, the access log's lines whatever the level."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = _Handler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access_log else logging.NOTSET)
