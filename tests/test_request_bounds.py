"""Every request is bounded before it is parsed: huge heads, many headers, huge bodies and
over-limit arrays, sent by anyone, raise the gateway's RSS by less than 100 MB, and another
client's requests keep answering meanwhile (timings are the benchmark's business; here,
that they answer at all, and correctly).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN_TOKEN, Gateway, start_gateway

from gateway.http.decisions import DECISIONS
from gateway.http.server import MAX_HEAD_BYTES, MAX_HEADERS
from gateway.http.verify_routes import VERIFY
from gateway.http.wire import SECURITY_HEADERS

MB = 1 << 20
AUTH = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("bounds"), {})
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    r = httpx.post(gw.url + "/v2alpha1/admin/issuedApiKeys", headers=gw.auth, timeout=10,
                   json={"name": "bounds", "actor_id": "actor-1"})
    secret: str = r.json()["secret"]
    return secret


def rss_mb(gw: Gateway) -> float:
    for line in Path(f"/proc/{gw.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def raw_request(gw: Gateway, head: bytes, body_chunks: Iterable[bytes] = (),
                timeout: float = 30.0) -> bytes:
    """Send a request as raw bytes, as far as the server takes them (it may stop reading
    once it has answered); its answer, or b""."""
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(2.0)  # a server that stopped reading: stop sending, read the answer
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        sock.settimeout(timeout)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


class Bystander:
    """Verifies a valid key in a loop on another connection while an attack runs."""

    def __init__(self, gw: Gateway, key: str) -> None:
        self.gw, self.key = gw, key
        self.answers: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.gw.url, headers=self.gw.auth, timeout=30) as client:
            while not self._stop.is_set():
                r = client.post("/v2alpha1/admin/apiKeys:verify", json={"credential": self.key})
                self.answers.append(r.status_code if r.json().get("is_valid") else -1)

    def _wait_for(self, count: int) -> None:
        for _ in range(600):
            if len(self.answers) >= count:
                return
            threading.Event().wait(0.05)
        raise AssertionError("the bystander got no answer")

    def __enter__(self) -> Bystander:
        self._thread.start()
        self._wait_for(1)  # answering before the attack
        return self

    def __exit__(self, *exc: object) -> None:
        self._wait_for(len(self.answers) + 2)  # and after it
        self._stop.set()
        self._thread.join(60)
        assert set(self.answers) == {200}


def _attack(gw: Gateway, key: str, head: bytes, body: Iterable[bytes] = ()) -> bytes:
    before = rss_mb(gw)
    with Bystander(gw, key):
        answer = raw_request(gw, head, body)
    assert rss_mb(gw) - before < 100, f"RSS {before:.0f} -> {rss_mb(gw):.0f} MB"
    return answer


def _repeat(piece: bytes, total: int, chunk: int = MB) -> Iterator[bytes]:
    block = piece * (chunk // len(piece))
    for _ in range(total // len(block)):
        yield block


def test_a_huge_header_to_the_public_decisions_route_is_refused_431(gw: Gateway,
                                                                    key: str) -> None:
    head = b"GET /v2alpha1/decisions HTTP/1.1\r\nHost: x\r\nX-Big: "
    answer = _attack(gw, key, head, _repeat(b"a", 96 * MB))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert b"request header fields too large" in answer


def test_a_huge_url_is_refused_431(gw: Gateway, key: str) -> None:
    answer = _attack(gw, key, b"GET /v2alpha1/decisions/", _repeat(b"a", 8 * MB))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_too_many_headers_are_refused_431(gw: Gateway, key: str) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    answer = _attack(gw, key, b"GET /v2alpha1/decisions HTTP/1.1\r\nHost: x\r\n" + headers
                     + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_a_request_at_the_limits_passes(gw: Gateway, key: str) -> None:
    headers = {f"X-H{i}": "v" for i in range(MAX_HEADERS - 10)}
    headers["X-Big"] = "a" * (MAX_HEAD_BYTES - 8 * 1024)
    headers["Authorization"] = f"Bearer {key}"
    r = httpx.get(gw.url + "/v2alpha1/decisions", headers=headers, timeout=10)
    assert r.status_code == 200
    # and the connection after a refused one is unaffected: a new request is answered
    assert httpx.get(gw.url + "/health/alive", timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/v2alpha1/admin/importedApiKeys:batchCreate",
                                  "/v2alpha1/admin/importedApiKeys:batchImport"])
def test_a_huge_body_to_batch_import_is_refused_before_it_is_parsed(gw: Gateway, key: str,
                                                                    path: str) -> None:
    size = 74 * MB
    declared = (f"POST {path} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {size}\r\n\r\n"
                ).encode()
    answer = _attack(gw, key, declared, _repeat(b"[]", size))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    chunked = (f"POST {path} HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n"
               ).encode()
    body = (b"%x\r\n%s\r\n" % (MB, c) for c in _repeat(b"[]", size))
    answer = _attack(gw, key, chunked, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


def test_many_small_values_under_the_byte_limit_are_refused_unparsed(gw: Gateway, key: str
                                                                     ) -> None:
    """16 MiB of ``[]`` would be 8 million lists (over 500 MB) once parsed."""
    body = b'{"requests":[' + b"[]," * (5 * MB) + b"[]]}"
    head = (f"POST /v2alpha1/admin/importedApiKeys:batchCreate HTTP/1.1\r\nHost: x\r\n{AUTH}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    answer = _attack(gw, key, head, iter([body]))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"JSON values" in answer


@pytest.mark.parametrize(("path", "limit"), [("/v2alpha1/admin/apiKeys:verify", 64 << 10),
                                             ("/v2alpha1/admin/apiKeys:batchVerify", MB),
                                             ("/v2alpha1/admin/issuedApiKeys", MB)])
def test_each_route_reads_at_most_its_limit(gw: Gateway, key: str, path: str, limit: int
                                            ) -> None:
    body = b'{"credential":"' + b"a" * limit + b'"}'
    r = httpx.post(gw.url + path, headers=gw.auth, content=body, timeout=30)
    assert r.status_code == 413, r.text
    assert f"exceeds {limit} bytes" in r.json()["message"]


def test_an_over_limit_batch_verify_is_refused(gw: Gateway, key: str) -> None:
    r = httpx.post(gw.url + "/v2alpha1/admin/apiKeys:batchVerify", headers=gw.auth,
                   json={"requests": [{"credential": key}] * 101}, timeout=10)
    assert r.status_code == 400 and "exceeds the limit of 100" in r.json()["message"]


def test_wrong_admin_tokens_against_argon2_are_refused_and_others_keep_answering(
        tmp_path: Path) -> None:
    """16 clients with distinct wrong tokens, the README's production argon2 set-up beside a
    generated token: every wrong one is 401 or 429, the real admin and a health probe answer."""
    from concurrent.futures import ThreadPoolExecutor

    from gateway.crypto.admin_tokens import hash_token, new_token

    token, verifier = new_token()
    gw = start_gateway(tmp_path, {"GATEWAY_ADMIN_TOKENS":
                                  f"{hash_token('operator-password-1', 'default')},{verifier}"})
    try:
        def guess(i: int) -> int:
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                return client.get("/v2alpha1/admin/issuedApiKeys",
                                  headers={"Authorization": f"Bearer wrong-guess-{i:04d}-xx"}
                                  ).status_code

        with ThreadPoolExecutor(16) as pool:
            guesses = pool.map(guess, range(64))
            real = httpx.get(gw.url + "/v2alpha1/admin/issuedApiKeys", timeout=30,
                             headers={"Authorization": f"Bearer {token}"})
            alive = httpx.get(gw.url + "/health/alive", timeout=30)
            statuses = list(guesses)
        assert real.status_code == 200 and alive.status_code == 200
        assert set(statuses) <= {401, 429} and 429 in statuses
    finally:
        gw.stop()


def _read_until(sock: socket.socket, needle: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while needle not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_a_response_is_one_write_and_an_interim_100_continue_is_not_held(
        gw: Gateway, key: str) -> None:
    """The server sends a response's head with its body (gateway.http.server): pipelined
    requests still get every answer, in order, and a client that waits for ``100
    Continue`` before its body gets it at once."""
    port = int(gw.url.rsplit(":", 1)[1])
    body = f'{{"credential":"{key}"}}'.encode()
    verify = (f"POST /v2alpha1/admin/apiKeys:verify HTTP/1.1\r\nHost: x\r\n{AUTH}"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((verify + b"\r\n" + body) * 3)  # pipelined
        answers = _read_until(sock, b"HTTP/1.1 200", 10)
        while answers.count(b'"is_valid":true') < 3:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
        assert answers.count(b"HTTP/1.1 200 OK\r\n") == 3
        sock.sendall(verify + b"Expect: 100-continue\r\n\r\n")
        interim = _read_until(sock, b"\r\n\r\n", 0.5)  # curl waits 1 s before it gives up
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(body)
        final = _read_until(sock, b'"is_valid":true', 10)
        assert b"HTTP/1.1 200 OK\r\n" in final


def test_a_request_with_the_most_headers_and_a_bad_body_is_a_400_not_a_431() -> None:
    """431 is for a head over the limits only: MAX_HEADERS headers are allowed, and a
    request the server then refuses (a URL it cannot parse, found once the head is
    complete; or a body the parser refuses) is a plain 400."""
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from gateway.http.server import BoundedHttpToolsProtocol

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 1234) if name in ("peername", "sockname") else default

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    def answer(headers: int, target: bytes = b"/x",
               body: bytes = b"Transfer-Encoding: chunked\r\n\r\nzz\r\n") -> bytes:
        async def run() -> bytes:
            config = Config(app, http="httptools", lifespan="off", log_config=None)
            config.load()
            protocol = BoundedHttpToolsProtocol(config, ServerState(), {})
            transport = Transport()
            protocol.connection_made(transport)  # type: ignore[arg-type]
            protocol.data_received(
                b"POST " + target + b" HTTP/1.1\r\n"
                + b"".join(b"X-H%d: v\r\n" % i for i in range(headers)) + body)
            return b"".join(transport.written)
        return asyncio.run(run())

    # "zz" is not a chunk size; with Transfer-Encoding, MAX_HEADERS headers
    assert answer(MAX_HEADERS - 1).startswith(b"HTTP/1.1 400")
    assert answer(MAX_HEADERS).startswith(b"HTTP/1.1 431")
    # a port out of range: refused when the head is complete (a callback's error)
    bad_url = {"target": b"http://a:99999999/", "body": b"\r\n"}
    assert answer(MAX_HEADERS, **bad_url).startswith(b"HTTP/1.1 400")
    assert answer(MAX_HEADERS + 1, **bad_url).startswith(b"HTTP/1.1 431")


def test_the_uvicorn_callbacks_copied_into_our_protocol_are_uvicorns() -> None:
    """BoundedHttpToolsProtocol carries copies of three of uvicorn's parser callbacks (a
    call to uvicorn's cost thousands of instructions a request): when the installed
    uvicorn's differ from those they were copied from, copy them again and update
    ``UVICORN_COPIED``."""
    import hashlib
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from gateway.http.server import UVICORN_COPIED, BoundedHttpToolsProtocol

    for name, digest in UVICORN_COPIED.items():
        source = inspect.getsource(getattr(HttpToolsProtocol, name))
        assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
            f"uvicorn's HttpToolsProtocol.{name} changed: copy it into "
            f"BoundedHttpToolsProtocol.{name} again and update UVICORN_COPIED")
        ours = inspect.getsource(getattr(BoundedHttpToolsProtocol, name))
        assert "# uvicorn's (UVICORN_COPIED)" in ours


def test_only_a_response_head_waits_for_the_write_that_follows_it() -> None:
    from gateway.http.server import CoalescingTransport

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.sent.append(data)

        def close(self) -> None:
            self.closed = True

    raw = Recorder()
    transport = CoalescingTransport(raw)  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it: at once
    assert raw.sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")  # a head: held for its body
    assert len(raw.sent) == 1
    transport.write(b"body")
    assert raw.sent[1] == b"HTTP/1.1 200 OK\r\n\r\nbody"
    transport.write(b"chunk")  # a streamed body chunk is never held
    assert raw.sent[2] == b"chunk"
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    transport.flush()  # the response completed with no body write
    assert raw.sent[3] == b"HTTP/1.1 204 No Content\r\n\r\n"
    transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
    transport.close()  # a close sends what is held first
    assert raw.sent[4].startswith(b"HTTP/1.1 431") and raw.closed


def exchange(sock: socket.socket, request: bytes) -> tuple[list[bytes], bytes]:
    """One request on a kept-alive connection: the answer's head lines and its body."""
    sock.sendall(request)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    head_bytes, body = got.split(b"\r\n\r\n", 1)
    lines = head_bytes.split(b"\r\n")
    length = int(next(v for n, _, v in (line.partition(b": ") for line in lines[1:])
                      if n == b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    assert len(body) == length
    return lines, body


def test_fast_answers_on_the_wire_carry_each_header_once(gw: Gateway, key: str) -> None:
    """A cached verify and a cached forward-auth decision from the running server: every
    header uvicorn would send (its date among them), each once, the request id echoed,
    and the connection kept for the next request."""
    port = int(gw.url.rsplit(":", 1)[1])
    body = f'{{"credential":"{key}"}}'.encode()
    verify = (f"POST {VERIFY} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
              f"X-Request-ID: heads-1\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    decide = (f"GET {DECISIONS} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
              "X-Request-ID: heads-2\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for request, cached_names in ((verify, [b"content-type", b"ory-talos-cache"]),
                                      (decide, [b"x-actor-id", b"x-key-id", b"x-scopes"])):
            exchange(sock, request)  # fills L1
            lines, answer_body = exchange(sock, request)
            assert lines[0] == b"HTTP/1.1 200 OK"
            names = [line.split(b": ", 1)[0] for line in lines[1:]]
            assert len(names) == len(set(names)), names
            fields = dict(line.split(b": ", 1) for line in lines[1:])
            assert fields[b"x-cache"] == b"L1"
            assert b"date" in fields and b"connection" not in fields
            for name, value in SECURITY_HEADERS:
                assert fields[name] == value
            for name in cached_names:
                assert name in fields
            expected_id = b"heads-1" if request is verify else b"heads-2"
            assert fields[b"x-request-id"] == expected_id
            if request is verify:
                assert b'"is_valid":true' in answer_body
            else:
                assert fields[b"x-actor-id"] == b"actor-1" and answer_body == b""
