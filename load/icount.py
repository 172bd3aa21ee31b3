"""Instructions per request of the hot routes, in-process, counted by valgrind (callgrind).

    .venv/bin/python load/icount.py [--calls 5000] [--only floor,verify,forward-auth,batch]

wrk's requests/s on a shared 2-core VM move by tens of percent from one minute to the
next, and even between two processes of the same code; a change worth 3 % cannot be seen
there. An instruction count can: for the same code and inputs it is the same on every
run. This script builds the real app (SQLite, in-process cache) in a child process under
callgrind, calls one route N times with fake ``receive``/``send`` (no sockets, no uvicorn)
and prints the instructions per call, beside the floor app's (``load/floor.py``) in the
same harness. Use it to compare commits; use ``load/bench.py`` for the real figures.

``--wire``: each call is a whole HTTP/1.1 request handed to the server's protocol on one
kept-alive connection (a transport that keeps the current response's writes, uvloop):
uvicorn's ``HttpToolsProtocol`` with the floor app, as ``load/floor.py`` runs it, and the
gateway's ``BoundedHttpToolsProtocol`` with the gateway (before it existed, uvicorn's).
That counts the parsing, the protocol's callbacks, the request-response cycle, the task
and the event loop's turns too (no sockets, no system calls); the loop's own timers may
add a little, so counts repeat to about 0.01 %.

Callgrind counts only inside the measured loop: each call runs as the key function of a
``sorted()``, and collection is toggled on ``builtin_sorted``. Hash randomisation is fixed
(``PYTHONHASHSEED=0``) so dict layouts repeat. One caveat: valgrind's CPU has no SHA
instructions, so OpenSSL's SHA-256 runs its generic code there (about 2,000 instructions a
block, 3 blocks a digest); on the real CPU the same digest costs a few hundred.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOAD = Path(__file__).resolve().parent
CASES = ("floor", "verify", "forward-auth", "batch", "protocol", "l2")
L2_REDIS = os.environ.get("ICOUNT_REDIS_URL", "redis://127.0.0.1:6379/13")
BATCH = 100
TOKEN = "icount-admin-token-" + "x" * 16


class _Kept:
    """A transport that keeps the writes of the current response, and sets ``done`` when
    the response ends (a write ending with ``end``)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.done: asyncio.Future[None] | None = None
        self.end = b""

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.done is not None and data.endswith(self.end) and not self.done.done():
            self.done.set_result(None)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def set_protocol(self, protocol: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _wire_calls(app: Any, floor_case: bool, method: str, path: str,
                headers: list[tuple[bytes, bytes]], body: bytes,
                loop: asyncio.AbstractEventLoop) -> Callable[[int], Any]:
    """A coroutine function running ``n`` requests through the server's protocol."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    protocol_class: Any = HttpToolsProtocol
    if not floor_case:
        with contextlib.suppress(ImportError):  # before it: uvicorn's
            from gateway.http.server import BoundedHttpToolsProtocol as protocol_class
    config = Config(app, http="httptools", lifespan="off", log_config=None,
                    access_log=False, server_header=False, proxy_headers=False)
    config.load()
    protocol = protocol_class(config, ServerState(), {}, loop)
    transport = _Kept()
    transport.end = b"}" if method == "POST" else b"\r\n\r\n"  # a JSON body, or none
    protocol.connection_made(transport)
    request = b"".join([f"{method} {path} HTTP/1.1\r\n".encode(),
                        *(name + b": " + value + b"\r\n" for name, value in headers),
                        b"content-length: %d\r\n\r\n" % len(body), body])

    async def requests(n: int) -> bytes:
        for _ in range(n):
            transport.written.clear()
            transport.done = loop.create_future()
            protocol.data_received(request)
            await transport.done
        return b"".join(transport.written)
    return requests


def _harness(case: str, calls: int, wire: bool = False) -> None:
    """The child: build the app, warm L1, then run ``calls`` calls inside sorted()."""
    import orjson
    import uvloop

    sys.path.insert(0, str(LOAD))
    import floor

    from gateway.app import create_app
    from gateway.services import build_services
    from gateway.settings import load_settings

    # the servers run uvloop; the in-process calls keep asyncio's loop they were counted on
    loop = uvloop.new_event_loop() if wire else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    run = loop.run_until_complete
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/gateway.db",
               "GATEWAY_PEPPER": "p" * 32, "GATEWAY_ADMIN_TOKENS": TOKEN}
        if case == "l2":  # verify with L1 off: every answer from Redis (bench's verify-l2)
            if not wire:
                raise SystemExit("l2: the route waits for Redis; count it with --wire")
            env |= {"GATEWAY_REDIS_URL": L2_REDIS, "GATEWAY_L1_TTL": "0"}
        services = build_services(load_settings(env))
        app: Any = create_app(services)
        run(services.start())
        try:
            keys = [run(services.keys.issue({"name": f"k{i}", "actor_id": "actor",
                                             "scopes": ["read"]})).secret
                    for i in range(BATCH)]
            headers = [(b"host", b"127.0.0.1:4470"),
                       (b"authorization", f"Bearer {TOKEN}".encode()),
                       (b"content-type", b"application/json")]
            method, path, body = "POST", "/v2alpha1/admin/apiKeys:verify", orjson.dumps(
                {"credential": keys[0]})
            if case in ("floor", "protocol"):  # protocol: the gateway's, with the floor app
                app = floor.app
            elif case == "forward-auth":
                method, path, body = "GET", "/v2alpha1/decisions", b""
                headers = [(b"host", b"127.0.0.1:4470"), (b"x-api-key", keys[0].encode())]
            elif case == "batch":
                path = "/v2alpha1/admin/apiKeys:batchVerify"
                body = orjson.dumps({"requests": [{"credential": k} for k in keys]})
            message = {"type": "http.request", "body": body, "more_body": False}
            scope = {"type": "http", "method": method, "path": path, "headers": headers,
                     "query_string": b"", "client": ("127.0.0.1", 40000)}

            async def receive() -> dict[str, Any]:
                return message

            sent: list[dict[str, Any]] = []

            async def keep(m: dict[str, Any]) -> None:
                sent.append(m)

            for _ in range(3):  # the store, then L1
                run(app(scope, receive, keep))
            status = sent[-2]["status"]
            if status != 200:
                raise SystemExit(f"{case}: HTTP {status} {sent[-1].get('body', b'')[:200]!r}")
            # L1's lease (gateway.cache.changes) is renewed by a task that cannot run
            # while the calls do, and under valgrind they outlast it
            services.cache.trust_until(float("inf"))
            if wire:
                requests = _wire_calls(app, case == "floor", method, path, headers, body, loop)
                answer = run(requests(3))
                if not answer.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"{case}: over the wire: {answer[:300]!r}")
                level = b"x-cache: L2" if case == "l2" else b"x-cache: L1"
                if case not in ("floor", "protocol") and level not in answer:
                    raise SystemExit(f"{case}: not answered from {level[9:].decode()}: "
                                     f"{answer[:300]!r}")
                sorted([calls], key=lambda n: run(requests(n)))
                return

            async def drop(m: dict[str, Any]) -> None:
                pass

            def one(_: int) -> int:
                coroutine = app(scope, receive, drop)
                try:
                    coroutine.send(None)  # nothing here suspends: one send runs it all
                except StopIteration:
                    return 0
                raise SystemExit(f"{case}: the route suspended (not answered from L1)")

            async def calls_in_the_loop() -> None:
                sorted(range(calls), key=one)
            run(calls_in_the_loop())
        finally:
            run(services.stop())
            loop.close()


def count(case: str, calls: int, wire: bool = False) -> float:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    out = subprocess.run(
        [valgrind, "--tool=callgrind", "--collect-atstart=no",
         "--toggle-collect=builtin_sorted", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", case, "--calls", str(calls),
         *(["--wire"] if wire else [])],
        env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True,
        timeout=1800)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"{case}: callgrind failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return int(found[1]) / calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per route (batch: /10)")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--wire", action="store_true",
                        help="whole requests through the server's protocol (see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _harness(args.child, args.calls, args.wire)
        return
    cases = [c for c in args.only.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(CASES)}")
    results = {}
    for case in cases:
        calls = max(1, args.calls // 10) if case == "batch" else args.calls
        results[case] = count(case, calls, args.wire)
        print(f"icount: {case} done", file=sys.stderr, flush=True)
    floor = results.get("floor")
    print(f"{'route':<14} {'instructions/call':>18} {'x floor':>8}")
    for case, value in results.items():
        ratio = f"{value / floor:8.2f}" if floor else ""
        extra = f"   ({value / BATCH:,.0f} per credential)" if case == "batch" else ""
        print(f"{case:<14} {value:>18,.0f} {ratio}{extra}")


if __name__ == "__main__":
    main()
