"""The gRPC floor: Envoy's ext_authz Check answered by a bare ``grpc.aio`` server, on the
gateway's settings (in the event loop of a uvicorn server with uvloop, started by its
lifespan, the same message-size limit) and nothing else: the request is not parsed, and the
answer is one fixed serialized CheckResponse (OK, three identity headers), so the
difference between it and the ``grpc-check`` row is the gateway's own work. The HTTP port
answers 200 to anything (readiness for load/bench.py).

    .venv/bin/python load/grpc_floor.py --port 4480 --grpc-port 4481
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from gateway.ext_authz.protos.base_pb2 import HeaderValue, HeaderValueOption
from gateway.ext_authz.protos.external_auth_pb2 import CheckResponse, OkHttpResponse
from gateway.ext_authz.server import MAX_MESSAGE, SERVICE

ANSWER = CheckResponse(ok_response=OkHttpResponse(headers=[
    HeaderValueOption(header=HeaderValue(key=key, value=value),
                      append_action=HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                      keep_empty_value=True)
    for key, value in (("x-actor-id", "bench-actor"), ("x-key-id", "01JBENCHFLOOR0000000000000"),
                       ("x-scopes", "read"))])).SerializeToString()


async def check(request: bytes, context: Any) -> bytes:
    return ANSWER


def app(grpc_port: int) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                          ("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(check)}),))
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        try:
            yield
        finally:
            await server.stop(1)

    async def ok(request: Any) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/{path:path}", ok)], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4480, help="HTTP (readiness)")
    parser.add_argument("--grpc-port", type=int, default=4481)
    args = parser.parse_args(argv)
    uvicorn.run(app(args.grpc_port), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False, lifespan="on",
                proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
