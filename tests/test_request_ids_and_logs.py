"""Request ids (``X-Request-ID``) on every answer and every log line of a request; the log
formats (``GATEWAY_LOG_FORMAT``) of every logger, uvicorn's too; the access log
(``GATEWAY_ACCESS_LOG``), which names route templates and never a credential."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN, Gateway, start_gateway
from test_request_bounds import raw_request

from gateway.errors import ConfigError
from gateway.http.access_log import route_template
from gateway.http.request_ids import MAX_LENGTH, RequestIds, accepted, request_id_of
from gateway.http.wire import RENDERED, head
from gateway.observability.logging import (
    DRIVER_LOGGERS,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    configure_logging,
    rfc3339,
)
from gateway.observability.request_context import current_request_id, request_id
from gateway.settings import load_settings

VERIFY = "/v2alpha1/admin/apiKeys:verify"
BATCH = "/v2alpha1/admin/apiKeys:batchVerify"
DECISIONS = "/v2alpha1/decisions"
ISSUED = "/v2alpha1/admin/issuedApiKeys"
ROTATE = "/api/v1/authorizationServers/default/credentials/lifecycle/keyRotate"
GENERATED = re.compile(r"[0-9a-f]{32}")
SAFE_IDS = ["abc", "req-1_2.3:4/5+6=7", "A" * MAX_LENGTH,
            "4bf92f3577b34da6a3ce929d0e0e4736", "00-4bf92f35-01"]
UNSAFE_IDS = [b"a b", b'a"b', b"a'b", b"a\tb", b"a,b", b"a;b", b"<script>", b"a\\b",
              b"caf\xc3\xa9", b"\xff", b"A" * (MAX_LENGTH + 1), b"x" * 10_240]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("request-ids"), {
        "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_ACCESS_LOG": "true"})
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def key(client: httpx.Client, gw: Gateway) -> dict[str, Any]:
    r = client.post(ISSUED, headers=gw.auth, json={"name": "ids", "actor_id": "actor-ids"})
    assert r.status_code == 201, r.text
    issued: dict[str, Any] = r.json()
    return issued


def json_lines(gw: Gateway) -> list[dict[str, Any]]:
    """Every line of the gateway's output, each parsed (a line that is not JSON fails)."""
    return [json.loads(line) for line in gw.logs().splitlines() if line.strip()]


def access_lines(gw: Gateway, *request_ids: str) -> dict[str, dict[str, Any]]:
    """The access-log lines of these requests, by request id. A request's line is written
    once its response is sent: a client may see the response first."""
    deadline = time.monotonic() + 10
    while True:
        found = {line["request_id"]: line for line in json_lines(gw)
                 if line["logger"] == "gateway.access" and line["request_id"] in request_ids}
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def header_of(answer: bytes, name: bytes) -> bytes | None:
    head = answer.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


# -- the id: echoed when safe, made otherwise ---------------------------------------------


def test_accepted_ids_are_bounded_and_plain() -> None:
    for value in SAFE_IDS:
        assert accepted(value.encode()), value
    for raw in [*UNSAFE_IDS, b"", b"a\x00b", b"a\r\nb", b"a\x7fb"]:
        assert not accepted(raw), raw
    assert request_id_of([(b"x-request-id", b"ok-1")]) == b"ok-1"
    assert GENERATED.fullmatch(request_id_of([(b"x-request-id", b"not ok")]).decode())
    assert GENERATED.fullmatch(request_id_of([]).decode())
    assert request_id_of([]) != request_id_of([])


@pytest.mark.parametrize("value", SAFE_IDS)
def test_a_safe_id_is_echoed(client: httpx.Client, gw: Gateway, key: dict[str, Any],
                             value: str) -> None:
    for _ in range(2):  # from the store, then from L1
        r = client.post(VERIFY, headers={**gw.auth, "X-Request-ID": value},
                        json={"credential": key["secret"]})
        assert r.status_code == 200 and r.headers["x-request-id"] == value
    assert r.headers["x-cache"] == "L1"
    r = client.get(DECISIONS, headers={"X-API-Key": key["secret"], "X-Request-ID": value})
    assert r.headers["x-request-id"] == value
    r = client.get("/health/alive", headers={"X-Request-ID": value})
    assert r.headers["x-request-id"] == value


@pytest.mark.parametrize("value", UNSAFE_IDS, ids=lambda v: repr(v[:16]) + f"({len(v)})")
def test_an_unsafe_or_long_id_is_replaced(client: httpx.Client, gw: Gateway,
                                          key: dict[str, Any], value: bytes) -> None:
    answers = [
        client.post(VERIFY, headers={**gw.auth, "X-Request-ID": value},
                    json={"credential": key["secret"]}),
        client.get(DECISIONS, headers={"X-API-Key": key["secret"], "X-Request-ID": value}),
        client.get(ISSUED, headers={**gw.auth, "X-Request-ID": value}),
        client.get("/nowhere", headers={"X-Request-ID": value}),
    ]
    for r in answers:
        assert r.status_code in (200, 404), r.text
        assert GENERATED.fullmatch(r.headers["x-request-id"]), r.headers["x-request-id"]


# -- on every kind of answer --------------------------------------------------------------


def test_every_kind_of_route_answers_with_an_id(client: httpx.Client, gw: Gateway,
                                                key: dict[str, Any]) -> None:
    secret, key_id = key["secret"], key["issued_api_key"]["key_id"]
    okta = {"Authorization": f"SSWS {ADMIN_TOKEN}"}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/health/alive", {}), ("GET", "/health/ready", {}), ("GET", "/version", {}),
        ("GET", "/metrics", {}), ("GET", "/openapi.json", {}),
        ("GET", "/.well-known/jwks.json", {}),
        ("GET", ISSUED, {"headers": gw.auth}),  # Ory admin
        ("GET", f"{ISSUED}/{key_id}", {"headers": gw.auth}),
        ("GET", f"{ISSUED}/unknown-key", {"headers": gw.auth}),  # 404 from the route
        ("GET", ISSUED, {}),  # 401
        ("POST", ISSUED, {"headers": gw.auth, "content": b"{"}),  # 400
        ("GET", "/admin/keys/no-such-set", {"headers": gw.auth}),  # JWK admin
        ("GET", "/api/v1/authorizationServers/default/credentials/keys", {"headers": okta}),
        ("GET", "/nowhere", {}),  # 404
        ("DELETE", "/metrics", {}),  # 405
        ("POST", VERIFY, {"headers": gw.auth, "json": {"credential": secret}}),  # L1
        ("POST", VERIFY, {"headers": gw.auth, "json": {"credential": "ory_ak_forged"}}),
        ("POST", VERIFY, {"headers": gw.auth, "content": b"{"}),  # 400 on a hot route
        ("POST", VERIFY, {"json": {"credential": secret}}),  # 401 on a hot route
        ("GET", VERIFY, {}),  # 405 on a hot route
        ("POST", BATCH, {"headers": gw.auth, "json": {"requests": [{"credential": secret}]}}),
        ("GET", DECISIONS, {"headers": {"X-API-Key": secret}}),  # L1
        ("GET", DECISIONS + "/app/page", {"headers": {"Authorization": f"Bearer {secret}"}}),
        ("GET", DECISIONS, {}),  # 401
    ]
    statuses = set()
    for i, (method, path, kwargs) in enumerate(calls):
        given = f"kind-{i}"
        r = client.request(method, path, **{**kwargs, "headers": {
            **kwargs.get("headers", {}), "X-Request-ID": given}})
        assert r.headers.get("x-request-id") == given, (method, path, r.status_code)
        r = client.request(method, path, **kwargs)
        assert GENERATED.fullmatch(r.headers.get("x-request-id", "")), (method, path)
        statuses.add(r.status_code)
    assert {200, 400, 401, 404, 405} <= statuses
    r = client.post(VERIFY, headers={**gw.auth, "X-Request-ID": "l1"},
                    json={"credential": secret})
    assert r.headers["x-cache"] == "L1" and r.headers["x-request-id"] == "l1"


def test_a_cors_preflight_answers_with_an_id(tmp_path_factory: pytest.TempPathFactory) -> None:
    gw = start_gateway(tmp_path_factory.mktemp("cors"),
                       {"GATEWAY_CORS_ORIGINS": "https://app.example.com"})
    try:
        headers = {"Origin": "https://app.example.com",
                   "Access-Control-Request-Method": "POST"}
        r = httpx.options(gw.url + VERIFY, headers={**headers, "X-Request-ID": "pre-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "pre-1"
        r = httpx.options(gw.url + VERIFY, headers=headers)
        assert GENERATED.fullmatch(r.headers["x-request-id"])
        r = httpx.get(gw.url + "/health/alive", headers={"Origin": "https://app.example.com"})
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    finally:
        gw.stop()


def test_the_servers_own_early_answers_carry_an_id(gw: Gateway) -> None:
    huge = b"GET /health/alive HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n"
    answer = raw_request(gw, huge)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert GENERATED.fullmatch((header_of(answer, b"x-request-id") or b"").decode())
    answer = raw_request(gw, b"GET /health/alive HTTP/1.1\r\nHost x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert GENERATED.fullmatch((header_of(answer, b"x-request-id") or b"").decode())


# -- logs ---------------------------------------------------------------------------------


def test_every_line_is_json_uvicorns_too(gw: Gateway, client: httpx.Client) -> None:
    client.get("/health/alive")
    lines = json_lines(gw)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
    uvicorn = [line["message"] for line in lines if line["logger"].startswith("uvicorn")]
    assert any("Application startup complete" in m for m in uvicorn), uvicorn
    assert any("Uvicorn running on" in m for m in uvicorn), uvicorn


def test_a_requests_lines_carry_its_id(gw: Gateway, client: httpx.Client) -> None:
    r = client.post(ROTATE, headers={"Authorization": f"SSWS {ADMIN_TOKEN}",
                                     "X-Request-ID": "rotate-42"}, json={"use": "sig"})
    assert r.status_code == 200, r.text
    assert access_lines(gw, "rotate-42")
    mine = [line for line in json_lines(gw) if line.get("request_id") == "rotate-42"]
    loggers = {line["logger"] for line in mine}
    assert {"gateway.signing", "gateway.access"} <= loggers, mine  # the route's, and after


def test_the_access_log_names_templates_and_never_a_credential(
        gw: Gateway, client: httpx.Client, key: dict[str, Any]) -> None:
    secret, key_id = key["secret"], key["issued_api_key"]["key_id"]
    other = client.post(ISSUED, headers=gw.auth, json={"name": "rotated", "actor_id": "a"})
    other_id = other.json()["issued_api_key"]["key_id"]
    marker = "query-marker-7f3a"
    client.post(VERIFY, headers={**gw.auth, "X-Request-ID": "acc-verify"},
                json={"credential": secret})
    client.get(f"{DECISIONS}?{marker}=1", headers={"Authorization": f"Bearer {secret}",
                                                   "X-Request-ID": "acc-bearer"})
    client.get(DECISIONS + "/some/" + marker,
               headers={"X-API-Key": secret, "X-Request-ID": "acc-below"})
    client.get(f"{ISSUED}/{key_id}?{marker}=1",
               headers={**gw.auth, "X-Request-ID": "acc-item"})
    client.post(f"{ISSUED}/{other_id}:rotate?{marker}=1",
                headers={**gw.auth, "X-Request-ID": "acc-rotate"}, json={})
    client.get("/no/" + marker, headers={"X-Request-ID": "acc-404"})

    access = access_lines(gw, "acc-verify", "acc-bearer", "acc-below", "acc-item",
                          "acc-rotate", "acc-404")
    verify = access["acc-verify"]
    assert verify["route"] == VERIFY and verify["method"] == "POST"
    assert verify["status"] == 200 and verify["cache"] == "L1"
    assert isinstance(verify["duration_ms"], float) and verify["duration_ms"] >= 0
    assert verify["client"] == "127.0.0.1" and verify["level"] == "INFO"
    assert access["acc-bearer"]["route"] == DECISIONS
    assert access["acc-below"]["route"] == DECISIONS + "/{path}"
    assert access["acc-item"]["route"] == ISSUED + "/{key_id}"
    assert access["acc-item"]["status"] == 200 and access["acc-item"]["cache"] is None
    assert access["acc-rotate"]["route"] == ISSUED + "/{key_id}:rotate"
    assert access["acc-404"]["route"] is None and access["acc-404"]["status"] == 404

    assert secret not in gw.logs() and ADMIN_TOKEN not in gw.logs()
    fields = {"time", "level", "logger", "message", "request_id", "method", "route", "status",
              "duration_ms", "cache", "client"}
    assert all(set(line) == fields for line in access.values())
    lines = json.dumps(list(access.values()))
    for text in (key_id, other_id, marker, "Bearer"):
        assert text not in lines, text


def test_text_is_the_default_and_the_access_log_is_off(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    gw = start_gateway(tmp_path_factory.mktemp("text-logs"), {"GATEWAY_LOG_LEVEL": "info"})
    try:
        r = httpx.post(gw.url + ROTATE, json={"use": "sig"}, headers={
            "Authorization": f"SSWS {ADMIN_TOKEN}", "X-Request-ID": "text-1"})
        assert r.status_code == 200, r.text
    finally:
        gw.stop()
    logs = gw.logs()
    assert re.search(r"^\S+ \S+ INFO uvicorn\.error: Application startup complete",
                     logs, re.M), logs
    assert re.search(r"^\S+ \S+ INFO gateway\.signing \[text-1\]: rotated", logs, re.M), logs
    assert "gateway.access" not in logs and not logs.lstrip().startswith("{")


# -- units: the formatters, the filter, the middleware, the settings -----------------------


def _record(exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, "hello %s",
                               ("world",), exc_info)
    record.__dict__.update(extra)
    return record


def test_the_json_formatter() -> None:
    record = _record(request_id="r-1", fields={"status": 200, "level": "forged"})
    record.created = 1_796_000_000.25
    line = json.loads(JsonFormatter().format(record))
    assert line == {"time": "2026-11-30T00:53:20.250Z", "level": "WARNING",
                    "logger": "gateway.test", "message": "hello world", "request_id": "r-1",
                    "status": 200}
    assert "request_id" not in json.loads(JsonFormatter().format(_record()))
    try:
        raise ValueError("boom")
    except ValueError:
        failed = _record(sys.exc_info())
    line = json.loads(JsonFormatter().format(failed))
    assert "Traceback" in line["exception"] and "ValueError: boom" in line["exception"]
    assert "\n" not in JsonFormatter().format(failed)
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"


def test_the_text_formatter_and_the_request_id_filter() -> None:
    token = request_id.set("ctx-9")
    try:
        record = _record()
        assert RequestIdFilter().filter(record) and record.request_id == "ctx-9"
        given = _record(request_id="given-1")
        RequestIdFilter().filter(given)
        assert given.request_id == "given-1"
    finally:
        request_id.reset(token)
    outside = _record()
    RequestIdFilter().filter(outside)
    assert outside.request_id is None
    assert TextFormatter().format(record).endswith(" WARNING gateway.test [ctx-9]: hello world")
    assert TextFormatter().format(outside).endswith(" WARNING gateway.test: hello world")


def test_configure_logging_formats_every_logger_and_holds_the_drivers() -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging("debug", "json", access_log=True)
        configure_logging("debug", "json", access_log=True)  # replaces, does not add
        ours = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(ours) == 1
        stream = io.StringIO()
        with contextlib.redirect_stderr(stream):  # the handler writes to sys.stderr of now
            logging.getLogger("uvicorn.error").info("started")
        assert json.loads(stream.getvalue())["logger"] == "uvicorn.error"
        for name in DRIVER_LOGGERS:
            assert logging.getLogger(name).level == logging.INFO
        configure_logging("warning", "text")
        assert logging.getLogger("gateway.access").level == logging.NOTSET
        configure_logging("error", "text", access_log=True)
        assert logging.getLogger("gateway.access").getEffectiveLevel() == logging.INFO
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])
        logging.getLogger("gateway.access").setLevel(logging.NOTSET)


def test_the_starlette_side_sets_the_id_for_the_request() -> None:
    seen: list[str | None] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_request_id())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def keep(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [
        (b"x-request-id", b"mw-1")]}
    asyncio.run(RequestIds(app)(scope, receive, keep))
    assert seen == ["mw-1"] and current_request_id() is None
    assert (b"x-request-id", b"mw-1") in sent[0]["headers"]


def test_route_templates_never_hold_the_path() -> None:
    class Route:
        path_format = "/v2alpha1/admin/issuedApiKeys/{tail}"

    def template(tail: str) -> str | None:
        return route_template({"route": Route(), "path_params": {"tail": tail}})

    assert template("01ABC") == "/v2alpha1/admin/issuedApiKeys/{key_id}"
    assert template("01ABC:revoke") == "/v2alpha1/admin/issuedApiKeys/{key_id}:revoke"
    assert template("01ABC/usage") == "/v2alpha1/admin/issuedApiKeys/{key_id}/usage"
    assert template("01ABC:secret-text") == "/v2alpha1/admin/issuedApiKeys/{key_id}"
    assert route_template({}) is None


@pytest.mark.parametrize(("name", "value", "attr", "expected"), [
    ("LOG_FORMAT", "JSON", "log_format", "json"), ("LOG_FORMAT", "text", "log_format", "text"),
    ("ACCESS_LOG", "true", "access_log", True), ("ACCESS_LOG", "False", "access_log", False),
])
def test_the_settings(name: str, value: str, attr: str, expected: object) -> None:
    assert getattr(load_settings({f"GATEWAY_{name}": value}), attr) == expected
    defaults = load_settings({})
    assert defaults.log_format == "text" and defaults.access_log is False


@pytest.mark.parametrize(("name", "value"), [("LOG_FORMAT", "yaml"), ("ACCESS_LOG", "yes"),
                                             ("ACCESS_LOG", "1")])
def test_a_bad_setting_is_one_clear_line(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({f"GATEWAY_{name}": value})
    assert str(caught.value).startswith(f"GATEWAY_{name}: expected ")
    assert "\n" not in str(caught.value)


def test_the_hot_routes_tag_their_answers_and_set_the_id_for_the_general_half() -> None:
    from gateway.http.hot import HotPath
    from gateway.http.wire import send_bytes

    seen: list[str | None] = []

    class Route:
        path, below, reads_body, methods = "/hot", False, False, None

        def observe(self, seconds: float) -> None:
            pass

        def observe_status(self, status: int, seconds: float) -> None:
            pass

        def fast(self, scope: Any, message: Any, now: float) -> Any:
            headers = dict(scope["headers"])
            if b"l1" in headers:  # an answer of the fast half, with the caller's id as sent
                return (200, head(((b"content-length", b"0"), (b"x-cache", b"L1"))),
                        {"type": "http.response.body", "body": b""},
                        headers.get(b"x-request-id"))
            return None

        async def general(self, scope: Any, message: Any, receive: Any, send: Any,
                          now: float, learned: Any) -> None:
            seen.append(current_request_id())
            await send_bytes(send, 200, b"{}")

    async def fallthrough(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not a hot route")

    def call(*headers: tuple[bytes, bytes]) -> dict[bytes, bytes]:
        sent: list[dict[str, Any]] = []

        async def keep(message: Any) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": "GET", "path": "/hot", "headers": list(headers)}
        asyncio.run(HotPath(fallthrough, [Route()])(scope, receive, keep))
        start = sent[0]
        if RENDERED in start:  # the same headers, as the lines our server writes
            lines, length = start[RENDERED]
            assert lines == b"".join(b"%s: %s\r\n" % pair for pair in start["headers"])
            assert length == int(dict(start["headers"])[b"content-length"])
        return dict(start["headers"])

    assert call((b"l1", b""), (b"x-request-id", b"fast-1"))[b"x-request-id"] == b"fast-1"
    replaced = call((b"l1", b""), (b"x-request-id", b"not safe"))[b"x-request-id"]
    assert GENERATED.fullmatch(replaced.decode())
    assert call((b"x-request-id", b"general-1"))[b"x-request-id"] == b"general-1"
    generated = call()[b"x-request-id"].decode()
    assert GENERATED.fullmatch(generated) and seen == ["general-1", generated]


def test_new_ids_are_unique_in_a_process_and_across_forked_workers() -> None:
    from gateway.http.request_ids import new_id

    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker forked from this process draws its own prefix
        os.write(write, new_id())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    os.close(write)
    assert child not in ids and child[:16] != next(iter(ids))[:16]


def test_the_openapi_document_declares_the_id_on_every_operation_and_answer() -> None:
    from gateway.http.openapi import document

    ops = [op for item in document()["paths"].values() for op in item.values()]
    assert len(ops) > 40
    for op in ops:
        assert [p for p in op["parameters"] if p["name"] == "X-Request-ID"] == [{
            "name": "X-Request-ID", "in": "header", "required": False,
            "schema": {"type": "string"}, "description": ANY_TEXT}], op["operationId"]
        for code, answer in op["responses"].items():
            header = answer["headers"]["X-Request-ID"]
            assert header["required"] is True, (op["operationId"], code)
            pattern = re.compile(header["schema"]["pattern"])
            assert pattern.match("4bf92f3577b34da6a3ce929d0e0e4736")
            assert pattern.match("req-1_2.3:4/5+6=7") and pattern.match("A" * MAX_LENGTH)
            assert not pattern.match("A" * (MAX_LENGTH + 1)) and not pattern.match("a b")


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT = _AnyText()
