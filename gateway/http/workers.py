"""``gateway serve --workers N``: N processes accepting on one listening socket.

The parent binds the socket, starts the workers (each a whole gateway: its own L1, its own
row in the store's ``replicas`` table, its own Redis subscription; an admin change is
confirmed by every worker as by every replica) and supervises them: a worker that dies is
replaced; SIGTERM or SIGINT is passed on to every worker, which drains as a single process
does (``GatewayServer``), and the parent exits once they all have, 0 when they all did.
Workers build their app from the environment (``worker_app``): the app is not shared.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from uvicorn._subprocess import get_subprocess
from uvicorn.config import Config

from gateway.http.server import GatewayServer

log = logging.getLogger("gateway.workers")
RESTART_PAUSE_S = 1.0  # between replacing workers that die at once (a crash loop)


def _run_worker(config: Config, drain_seconds: float, sockets: list[socket.socket]) -> None:
    GatewayServer(config, drain_seconds=drain_seconds).run(sockets=sockets)


class Workers:
    def __init__(self, config: Config, count: int, drain_seconds: float) -> None:
        self.config = config
        self.count = count
        self.target = functools.partial(_run_worker, config, drain_seconds)
        self.processes: list[BaseProcess] = []
        self.stopping = threading.Event()
        self.signals: list[int] = []

    def _start_one(self, sock: socket.socket) -> BaseProcess:
        process = get_subprocess(self.config, target=self.target, sockets=[sock])
        process.start()
        log.info("started worker [%s]", process.pid)
        return process

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        self.stopping.set()

    def _bind(self) -> socket.socket:
        """A listening socket of the port with SO_REUSEPORT, one per worker: the kernel
        spreads new connections evenly over them (on one shared socket, whichever worker
        wakes first takes the connection, and one worker can get most of them)."""
        host = self.config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, self.config.port))
        sock.set_inheritable(True)
        return sock

    def run(self) -> int:
        sockets = [self._bind() for _ in range(self.count)]
        for handled in (signal.SIGTERM, signal.SIGINT):
            signal.signal(handled, self._signal)
        self.processes = [self._start_one(sock) for sock in sockets]
        log.info("%d workers on %s:%d", self.count, self.config.host, self.config.port)
        while not self.stopping.wait(0.5):
            for i, process in enumerate(self.processes):
                if not process.is_alive() and not self.stopping.is_set():
                    log.error("worker [%s] exited with %s; starting another", process.pid,
                              process.exitcode)
                    self.processes[i] = self._start_one(sockets[i])
                    self.stopping.wait(RESTART_PAUSE_S)
        forwarded = 0
        while True:
            for signum in self.signals[forwarded:]:  # a second signal ends the drain
                for process in self.processes:
                    if process.is_alive() and process.pid is not None:
                        os.kill(process.pid, signum)
            forwarded = len(self.signals)
            if not any(p.is_alive() for p in self.processes):
                break
            time.sleep(0.1)
        for sock in sockets:
            sock.close()
        codes = [p.exitcode for p in self.processes]
        log.info("workers exited: %s", codes)
        return 0 if all(code == 0 for code in codes) else 1
