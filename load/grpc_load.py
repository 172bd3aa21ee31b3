"""A small load generator for Envoy's ext_authz Check over gRPC, run by load/bench.py in
wrk's place: it takes wrk's arguments and prints wrk's summary, so the bench reads its
figures as it reads wrk's.

    BENCH_GRPC_TARGET=127.0.0.1:4471 BENCH_HEADERS_FILE=headers.txt \\
        .venv/bin/python load/grpc_load.py -t 1 -c 64 -d 5s --latency grpc://127.0.0.1:4471

``-t`` processes (each one gRPC channel, i.e. one HTTP/2 connection, as one Envoy worker
keeps), ``-c`` calls in flight in all, ``-d`` seconds. Each process repeats one
CheckRequest, built as Envoy builds one from the headers in ``BENCH_HEADERS_FILE`` (``name:
value`` lines; a GET /orders/42 from 127.0.0.1), pre-serialized; answers are kept as bytes
and parsed only when they differ from the first OK one. A DENIED answer counts as a non-2xx
response, a failed call (a gRPC error, a timeout) as a socket error.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path

import grpc

from gateway.ext_authz.protos.external_auth_pb2 import (
    AttributeContext,
    CheckRequest,
    CheckResponse,
)
from gateway.ext_authz.server import CHECK

START_DELAY_S = 1.0  # for the processes to start and connect before the common start


def check_request(headers: dict[str, str]) -> CheckRequest:
    """A CheckRequest as Envoy sends one for GET /orders/42 with ``headers``."""
    http = AttributeContext.HttpRequest(
        id="1", method="GET", path="/orders/42", host="app.example", scheme="http",
        protocol="HTTP/1.1",
        headers={":authority": "app.example", ":method": "GET", ":path": "/orders/42",
                 "x-forwarded-for": "127.0.0.1",
                 "x-request-id": "0b0e1d2c-3b4a-5968-7766-554433221100",
                 **{k.lower(): v for k, v in headers.items()}})
    attributes = AttributeContext(request=AttributeContext.Request(http=http))
    attributes.source.address.socket_address.address = "127.0.0.1"
    attributes.source.address.socket_address.port_value = 50000
    return CheckRequest(attributes=attributes)


def read_headers(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    lines = Path(path).read_text().splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if k}


def describe(answer: bytes) -> tuple[bool, int, dict[str, str]]:
    """(allowed, HTTP status, headers) of a serialized CheckResponse."""
    response = CheckResponse.FromString(answer)
    allowed = response.status.code == 0
    options = (response.ok_response.headers if allowed
               else response.denied_response.headers)
    return (allowed, 200 if allowed else response.denied_response.status.code,
            {o.header.key: o.header.value for o in options})


def check_once(target: str, headers: dict[str, str], timeout: float = 10.0
               ) -> tuple[bool, int, dict[str, str]]:
    """One Check to ``target``: (allowed, HTTP status, headers)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(CHECK)
        answer: bytes = call(check_request(headers).SerializeToString(), timeout=timeout)
    return describe(answer)


async def _load(target: str, payload: bytes, concurrency: int, start_at: float,
                duration: float, timeout: float) -> tuple[int, int, array[float]]:
    """(denied answers, failed calls, latencies of the calls that completed in time)."""
    latencies: array[float] = array("d")
    counts = [0, 0]
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(CHECK)
        first = await call(payload, timeout=timeout)
        allowed = first if describe(first)[0] else None
        await asyncio.sleep(max(0.0, start_at - time.time()))
        end = time.perf_counter() + duration

        async def worker() -> None:
            while (started := time.perf_counter()) < end:
                try:
                    answer = await call(payload, timeout=timeout)
                except grpc.aio.AioRpcError:
                    counts[1] += 1
                    continue
                done = time.perf_counter()
                if done <= end:
                    latencies.append(done - started)
                    if answer != allowed and not describe(answer)[0]:
                        counts[0] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts[0], counts[1], latencies


def _child(out: Connection, target: str, payload: bytes, concurrency: int, start_at: float,
           duration: float, timeout: float) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    denied, failed, latencies = asyncio.run(
        _load(target, payload, concurrency, start_at, duration, timeout))
    out.send((denied, failed, latencies.tobytes()))
    out.close()


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * units[unit]
    return float(text)


def _duration(seconds: float) -> str:
    """As wrk prints a latency: 912.00us, 1.80ms, 1.02s."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.2f}us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.2f}s"


def summary(url: str, processes: int, connections: int, duration: float, denied: int,
            failed: int, latencies: list[float]) -> str:
    """wrk's summary (what bench.parse_wrk reads) of a run."""
    latencies = sorted(latencies)
    lines = [f"Running {duration:g}s test @ {url}",
             f"  {processes} threads and {connections} connections", "  Latency Distribution"]
    for share in (50, 75, 90, 99):
        value = latencies[min(len(latencies) - 1, len(latencies) * share // 100)] \
            if latencies else 0.0
        lines.append(f"     {share}%  {_duration(value)}")
    lines.append(f"  {len(latencies)} requests in {duration:.2f}s, 0.00MB read")
    if denied:
        lines.append(f"  Non-2xx or 3xx responses: {denied}")
    if failed:
        lines.append(f"  Socket errors: connect 0, read 0, write 0, timeout {failed}")
    lines += [f"Requests/sec: {len(latencies) / duration:10.2f}", "Transfer/sec:      0.00B"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--threads", type=int, default=1, help="processes")
    parser.add_argument("-c", "--connections", type=int, default=64, help="calls in flight")
    parser.add_argument("-d", "--duration", default="10s")
    parser.add_argument("--timeout", default="5s")
    parser.add_argument("--latency", action="store_true", help="(always on)")
    parser.add_argument("-s", "--script", help="(wrk's Lua script: not used)")
    parser.add_argument("url", nargs="?", default="")
    args = parser.parse_args(argv)
    target = os.environ.get("BENCH_GRPC_TARGET")
    if not target:
        print("grpc_load: BENCH_GRPC_TARGET (host:port) is not set", file=sys.stderr)
        return 2
    processes = max(1, min(args.threads, args.connections))
    duration, timeout = _seconds(args.duration), _seconds(args.timeout)
    payload = check_request(read_headers(os.environ.get("BENCH_HEADERS_FILE"))
                            ).SerializeToString()
    start_at = time.time() + START_DELAY_S
    context = multiprocessing.get_context("spawn")
    children = []
    for n in range(processes):
        mine, theirs = context.Pipe(duplex=False)
        share = args.connections // processes + (n < args.connections % processes)
        proc = context.Process(target=_child, args=(theirs, target, payload, share, start_at,
                                                    duration, timeout))
        proc.start()
        theirs.close()
        children.append((proc, mine))
    denied = failed = 0
    latencies: list[float] = []
    for proc, pipe in children:
        try:
            got_denied, got_failed, raw = pipe.recv()
        except EOFError:
            print(f"grpc_load: a load process failed (exit {proc.join() or proc.exitcode})",
                  file=sys.stderr)
            return 1
        denied += got_denied
        failed += got_failed
        block: array[float] = array("d")
        block.frombytes(raw)
        latencies.extend(block)
        proc.join()
    print(summary(args.url or f"grpc://{target}{CHECK}", processes, args.connections, duration,
                  denied, failed, latencies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
