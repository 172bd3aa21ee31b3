"""The HTTP floor: a bare ASGI app on exactly the gateway's uvicorn settings.

It reads the request body (like a verify does) and answers one fixed JSON body of about the
size of a verify response, so the difference between it and a gateway scenario is the
gateway's own work. Settings mirror ``gateway.cli._serve``: one worker, uvloop, httptools,
lifespan on, access log off, no proxy headers, no server header.

    .venv/bin/python load/floor.py --port 4480
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = (b'{"is_valid":true,"error_code":"VERIFICATION_ERROR_UNSPECIFIED",'
        b'"key_id":"01JBENCHFLOOR0000000000000","actor_id":"bench-actor","scopes":["read"],'
        b'"status":"KEY_STATUS_ACTIVE","visibility":"KEY_VISIBILITY_SECRET","metadata":{},'
        b'"issuer":"http://127.0.0.1:4470","audiences":[]}')
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"),
                (b"content-length", str(len(BODY)).encode())],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    await send(START)
    await send(RESPONSE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4480)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes on the port (uvicorn's supervisor), as the gateway's")
    args = parser.parse_args(argv)
    uvicorn.run(app if args.workers == 1 else "floor:app", host=args.host, port=args.port,
                workers=args.workers, app_dir=str(Path(__file__).resolve().parent),
                loop="uvloop", http="httptools", log_level="warning", access_log=False,
                lifespan="on", proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
