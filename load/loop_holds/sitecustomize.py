"""Times every event-loop callback of a gateway process started with ``LOOP_HOLDS_DIR`` set
(``load/bulk_import.py --loop-holds``): which steps hold the loop, and how long.

Python imports ``sitecustomize`` at start from ``PYTHONPATH``; this one acts only in a
``gateway ... serve`` process with ``LOOP_HOLDS_DIR`` set, and does nothing otherwise. It
runs the server on asyncio's own loop (uvloop's callbacks cannot be timed from Python: the
figures are those of the slower loop, for finding what holds it, not for its speed) and
wraps ``asyncio.events.Handle._run``. A callback of at least ``LOOP_HOLDS_MS`` (0.3) is
counted under its name: a task's step by its coroutine chain where it stopped
(``outer:line>...>inner:line``, the outer three and the inner two), other callbacks by
their qualified name, prefixed ``PREEMPTED`` when the thread had under 70 % of the wall
time on a CPU (the step waited for the CPU, not for its own work). Every 5 s
(``LOOP_HOLDS_EVERY_S``) the totals so far are appended to
``<LOOP_HOLDS_DIR>/holds-<pid>.jsonl``: ``{"t", "busy_s", "callbacks", "holds": {name:
[count, seconds, max_seconds, [count per bucket: <0.5, <1, <2, <5, <20, >=20 ms]]}}``.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("LOOP_HOLDS_DIR") and "serve" in sys.argv:
    import asyncio
    import asyncio.events
    import json
    import threading
    import time
    from typing import Any

    import uvicorn.config

    _config_init = uvicorn.config.Config.__init__

    def _asyncio_loop(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["loop"] = "asyncio"
        _config_init(self, *args, **kwargs)

    uvicorn.config.Config.__init__ = _asyncio_loop  # type: ignore[method-assign]

    _MIN_S = float(os.environ.get("LOOP_HOLDS_MS", "0.3")) / 1000
    _EVERY_S = float(os.environ.get("LOOP_HOLDS_EVERY_S", "5"))
    _EDGES_S = (0.0005, 0.001, 0.002, 0.005, 0.02)
    _holds: dict[str, list[Any]] = {}
    _busy = [0.0, 0]
    _wall, _cpu = time.perf_counter, time.thread_time

    def _name(handle: asyncio.Handle) -> str:
        callback = handle._callback  # type: ignore[attr-defined]
        task = getattr(callback, "__self__", None)
        if isinstance(task, asyncio.Task):
            chain, coro = [], task.get_coro()
            while coro is not None and hasattr(coro, "cr_frame"):
                frame = coro.cr_frame
                chain.append(f"{coro.__qualname__}:{frame.f_lineno if frame else '-'}")
                coro = coro.cr_await
            return "task " + ">".join(chain if len(chain) <= 5 else
                                      [*chain[:3], "..", *chain[-2:]])
        return str(getattr(callback, "__qualname__", repr(callback)))[:120]

    _run = asyncio.events.Handle._run

    def _timed_run(self: asyncio.Handle) -> None:
        started, cpu = _wall(), _cpu()
        _run(self)
        took = _wall() - started
        _busy[0] += took
        _busy[1] += 1
        if took >= _MIN_S:
            name = _name(self)
            if _cpu() - cpu < 0.7 * took:
                name = "PREEMPTED " + name
            hold = _holds.setdefault(name, [0, 0.0, 0.0, [0] * (len(_EDGES_S) + 1)])
            hold[0] += 1
            hold[1] += took
            hold[2] = max(hold[2], took)
            hold[3][sum(took >= edge for edge in _EDGES_S)] += 1

    asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]

    def _write() -> None:
        path = os.path.join(os.environ["LOOP_HOLDS_DIR"], f"holds-{os.getpid()}.jsonl")
        while True:
            time.sleep(_EVERY_S)
            try:
                line = json.dumps({"t": time.time(), "busy_s": _busy[0],
                                   "callbacks": _busy[1], "holds": _holds})
            except RuntimeError:  # changed while being read: the next one
                continue
            with open(path, "a") as out:
                out.write(line + "\n")

    threading.Thread(target=_write, name="loop-holds", daemon=True).start()
