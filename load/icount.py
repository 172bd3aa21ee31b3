"""Instructions per request of the hot routes, in-process, counted by valgrind (callgrind).

    .venv/bin/python load/icount.py [--calls 5000] [--only floor,verify,forward-auth,batch]

wrk's requests/s on a shared 2-core VM move by tens of percent from one minute to the
next, and even between two processes of the same code; a change worth 3 % cannot be seen
there. An instruction count can: for the same code and inputs it is the same on every
run. This script builds the real app (SQLite, in-process cache) in a child process under
callgrind, calls one route N times with fake ``receive``/``send`` (no sockets, no uvicorn)
and prints the instructions per call, beside the floor app's (``load/floor.py``) in the
same harness. Use it to compare commits; use ``load/bench.py`` for the real figures.

``--uvicorn``: each call's ``send`` is that of a fresh uvicorn request-response cycle
(writing to a transport that drops the bytes), the class the servers run: uvicorn's for
the floor, ``gateway.http.server.GatewayCycle`` for the gateway (uvicorn's before it
existed). That counts uvicorn's handling of the response too (its cycle, the checks and
joins of the head), still without sockets, parsing or the event loop.

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
CASES = ("floor", "verify", "forward-auth", "batch")
BATCH = 100
TOKEN = "icount-admin-token-" + "x" * 16


class _Dropped:
    """A transport that takes the bytes and drops them."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _cycle_sends(floor_case: bool, scope: dict[str, Any]) -> Callable[[], Any]:
    """A new cycle's ``send`` per call, as the server runs it."""
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    cycle_class: Any = RequestResponseCycle
    if not floor_case:
        with contextlib.suppress(ImportError):  # before GatewayCycle: uvicorn's
            from gateway.http.server import GatewayCycle as cycle_class
    transport, event = _Dropped(), asyncio.Event()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    headers = [(b"date", b"Thu, 03 Dec 2026 21:00:00 GMT")]

    def send() -> Any:
        return cycle_class(
            scope=scope, transport=transport, flow=flow, logger=None, access_logger=None,
            access_log=False, default_headers=headers, message_event=event,
            expect_100_continue=False, keep_alive=True, on_response=lambda: None).send
    return send


async def _harness(case: str, calls: int, through_uvicorn: bool = False) -> None:
    """The child: build the app, warm L1, then run ``calls`` calls inside sorted()."""
    import orjson

    sys.path.insert(0, str(LOAD))
    import floor

    from gateway.app import create_app
    from gateway.services import build_services
    from gateway.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(load_settings({
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/gateway.db",
            "GATEWAY_PEPPER": "p" * 32, "GATEWAY_ADMIN_TOKENS": TOKEN}))
        app: Any = create_app(services)
        await services.start()
        try:
            keys = [(await services.keys.issue({"name": f"k{i}", "actor_id": "actor",
                                                 "scopes": ["read"]})).secret
                    for i in range(BATCH)]
            headers = [(b"host", b"127.0.0.1:4470"),
                       (b"authorization", f"Bearer {TOKEN}".encode()),
                       (b"content-type", b"application/json")]
            method, path, body = "POST", "/v2alpha1/admin/apiKeys:verify", orjson.dumps(
                {"credential": keys[0]})
            if case == "floor":
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
                await app(scope, receive, keep)
            status = sent[-2]["status"]
            if status != 200:
                raise SystemExit(f"{case}: HTTP {status} {sent[-1].get('body', b'')[:200]!r}")

            async def drop(m: dict[str, Any]) -> None:
                pass

            fresh_send = _cycle_sends(case == "floor", scope) if through_uvicorn else None

            def one(_: int) -> int:
                coroutine = app(scope, receive, drop if fresh_send is None else fresh_send())
                try:
                    coroutine.send(None)  # nothing here suspends: one send runs it all
                except StopIteration:
                    return 0
                raise SystemExit(f"{case}: the route suspended (not answered from L1)")

            # L1's lease (gateway.cache.changes) is renewed by a task that cannot run
            # while the calls do, and under valgrind they outlast it
            services.cache.trust_until(float("inf"))
            sorted(range(calls), key=one)
        finally:
            await services.stop()


def count(case: str, calls: int, through_uvicorn: bool = False) -> float:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    out = subprocess.run(
        [valgrind, "--tool=callgrind", "--collect-atstart=no",
         "--toggle-collect=builtin_sorted", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", case, "--calls", str(calls),
         *(["--uvicorn"] if through_uvicorn else [])],
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
    parser.add_argument("--uvicorn", action="store_true",
                        help="send through a uvicorn request-response cycle (see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(_harness(args.child, args.calls, args.uvicorn))
        return
    cases = [c for c in args.only.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(CASES)}")
    results = {}
    for case in cases:
        calls = max(1, args.calls // 10) if case == "batch" else args.calls
        results[case] = count(case, calls, args.uvicorn)
        print(f"icount: {case} done", file=sys.stderr, flush=True)
    floor = results.get("floor")
    print(f"{'route':<14} {'instructions/call':>18} {'x floor':>8}")
    for case, value in results.items():
        ratio = f"{value / floor:8.2f}" if floor else ""
        extra = f"   ({value / BATCH:,.0f} per credential)" if case == "batch" else ""
        print(f"{case:<14} {value:>18,.0f} {ratio}{extra}")


if __name__ == "__main__":
    main()
