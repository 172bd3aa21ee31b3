"""What a busy neighbour CPU costs B's CPU on this machine, with and without the rest of the
machine moved off it (``bulk_import.machine_pinned``):

    .venv/bin/python load/gaps.py [--seconds 10 --cpus 0,1]

A CPU-bound spinner runs on A's CPU throughout. A gap meter on B's CPU (a loop reading the
clock) adds up the gaps of 0.1 ms or more between two readings: the time B's CPU went to
something else. It measures three times: the machine as it is, every thread that may move
pinned to A's CPU (as ``load/bulk_import.py`` does while a backend runs), and the machine
as it is again. On 2026-12-04: 1.5-2.6 % of B's CPU lost (worst gap 8-43 ms in 10 s) as
it is, 0.11-0.18 % pinned: with A's CPU busy, the scheduler moves the machine's other
work (RabbitMQ, MariaDB, Redis, PostgreSQL ...) onto B's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bulk_import


def gaps(cpu: int, seconds: float) -> dict[str, float]:
    """Gaps of 0.1 ms or more between clock readings on ``cpu`` over ``seconds``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        clock = time.perf_counter_ns
        last = clock()
        end = last + int(seconds * 1e9)
        lost = worst = count = 0
        while (now := clock()) < end:
            if (gap := now - last) >= 100_000:
                lost, worst, count = lost + gap, max(worst, gap), count + 1
            last = now
    finally:
        os.sched_setaffinity(0, before)
    return {"gaps": count, "lost_ms": round(lost / 1e6, 1),
            "lost_share": round(lost / (seconds * 1e9), 4), "worst_ms": round(worst / 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="of each measurement")
    parser.add_argument("--cpus", default="0,1", metavar="B,A",
                        help="B's CPU (measured), A's CPU (the spinner)")
    args = parser.parse_args(argv)
    cpu_b, cpu_a = bulk_import.cpu_pair(parser, args.cpus)
    with bulk_import.spinning(cpu_a):
        for label in ("as it is", "pinned", "as it is"):
            if label == "pinned":
                with bulk_import.machine_pinned(cpu_a):
                    found = gaps(cpu_b, args.seconds)
            else:
                found = gaps(cpu_b, args.seconds)
            print(f"cpu{cpu_b}, spinner on cpu{cpu_a}, the machine {label:8}: "
                  f"{found['gaps']:4} gaps, {found['lost_ms']:7.1f} ms lost "
                  f"({found['lost_share']:.2%}), worst {found['worst_ms']:.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
