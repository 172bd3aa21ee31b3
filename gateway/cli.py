"""``gateway serve | migrate | hash-token`` — the command-line entry point; ``gateway keys |
tokens | audit | usage`` talk to a running gateway's API (``gateway.admin_cli``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway import admin_cli
from gateway.errors import ConfigError, GatewayError
from gateway.observability.logging import configure_logging
from gateway.settings import Settings, check_workers, load_settings
from gateway.version import VERSION

if TYPE_CHECKING:
    from gateway.store.base import Store


def _serve(settings: Settings, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT, then drain (GATEWAY_DRAIN_SECONDS), shut down
    gracefully (in-flight requests, usage flush) and return 0 (gateway/http/server.py);
    with more than one worker, the workers do (gateway/http/workers.py)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from gateway.app import create_app
    from gateway.http.server import SHUTDOWN_TIMEOUT_S, BoundedHttpToolsProtocol, GatewayServer
    from gateway.services import build_services, resolve_admin_tokens, resolve_pepper

    options: dict[str, Any] = dict(
        host=host, port=port, loop="uvloop", http=BoundedHttpToolsProtocol,
        # uvicorn's loggers get no handlers of their own: the root's (configure_logging)
        # formats their lines as the gateway's; its access log stays off (GATEWAY_ACCESS_LOG
        # is the gateway's own, gateway.http.access_log)
        log_config=None, log_level=settings.log_level, access_log=False, lifespan="on",
        proxy_headers=False, server_header=False, timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S)
    if settings.workers > 1:
        from gateway.http.workers import Workers

        # made once here (the SQLite default's generated pepper and admin token), read by
        # every worker
        resolve_pepper(settings)
        resolve_admin_tokens(settings)
        config = uvicorn.Config("gateway.app:worker_app", factory=True,
                                workers=settings.workers, **options)
        return Workers(config, settings.workers, settings.drain_seconds).run()
    app = create_app(build_services(settings))
    server = GatewayServer(uvicorn.Config(app, **options), drain_seconds=settings.drain_seconds)
    with contextlib.suppress(KeyboardInterrupt):  # a SIGINT before the server handles them
        server.run()
    return 0 if server.started else STARTUP_FAILURE


def _on_store(settings: Settings, use: Callable[[Store], Awaitable[list[str]]]) -> list[str]:
    """``use`` of the configured store, opened for it and closed after."""
    from gateway.store import build_store

    async def run() -> list[str]:
        store = build_store(settings)
        await store.open()
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _preflight(settings: Settings) -> None:
    """The store reachable and its schema migrated, checked before serving: what stops
    the start is one line naming what to fix (ConfigError, GatewayError), not a traceback
    from the server's start-up."""
    pending = _on_store(settings, lambda store: store.pending_migrations())
    if pending:
        raise ConfigError(f"GATEWAY_DATABASE_URL: the schema is not migrated "
                          f"({', '.join(pending)} pending): run `gateway migrate`")
    if settings.grpc_port is not None and settings.workers == 1:  # workers share it
        _port_free("GATEWAY_GRPC_PORT", settings.grpc_host or settings.host, settings.grpc_port)


def _port_free(name: str, host: str, port: int) -> None:
    """A ConfigError naming ``name`` when ``host``:``port`` cannot be listened on now (in
    use, or an address not of this machine)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"{name}: cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from exc


def _migrate(settings: Settings) -> int:
    applied = _on_store(settings, lambda store: store.migrate())
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _hash_token(token: str | None, argon2: bool) -> int:
    from gateway.crypto.admin_tokens import MIN_PLAIN, hash_token, new_token

    if token is None and not argon2:
        token, verifier = new_token()
        print(f"token:    {token}")
        print(f"verifier: {verifier}")
        print("give the token to the admin client; put the verifier in GATEWAY_ADMIN_TOKENS "
              "(its id, the part after gwa_, names this token; the verifier is not a credential)")
        return 0
    token = token or secrets.token_urlsafe(32)
    if len(token) < MIN_PLAIN:
        print(f"gateway: a token needs at least {MIN_PLAIN} characters", file=sys.stderr)
        return 2
    print(f"token: {token}")
    print(f"hash:  {hash_token(token)}")
    print("put the hash in GATEWAY_ADMIN_TOKENS (quote it: it holds $ and commas); each "
          "wrong guess costs argon2 work, rate-limited off the event loop")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", help="listen address (default GATEWAY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default GATEWAY_PORT or 4470)")
    serve.add_argument("--workers", type=int,
                       help="processes serving the port (default GATEWAY_WORKERS or 1; more "
                            "than one needs GATEWAY_REDIS_URL)")
    sub.add_parser("migrate", help="apply pending schema migrations (idempotent)")
    tok = sub.add_parser("hash-token", help="make an admin token and the verifier to configure")
    tok.add_argument("token", nargs="?",
                     help="an operator-chosen token to hash with argon2id (implies --argon2)")
    tok.add_argument("--argon2", action="store_true",
                     help="an argon2id hash (of TOKEN, or of a new random token) instead of "
                          "a generated gwa_ token's verifier")
    admin_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if admin_cli.handles(args):  # HTTP clients of a running gateway: no server settings
        return admin_cli.run(args)
    configure_logging("info")
    try:
        if args.command == "hash-token":
            return _hash_token(args.token, args.argon2)
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format, settings.access_log)
        if args.command == "migrate":
            return _migrate(settings)
        if args.workers is not None:
            settings = dataclasses.replace(settings, workers=args.workers)
            check_workers(settings)
        _preflight(settings)
        return _serve(settings, args.host or settings.host, args.port or settings.port)
    except (ConfigError, GatewayError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
