"""load/bulk_import.py's own arithmetic and machinery: the pooled p99 of wrk's histograms,
the summary of the event-loop holds that load/loop_holds/sitecustomize.py writes, the
machine pinned to A's CPU and given back, and load/gaps.py's report."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "load" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


if "bench" not in sys.modules:
    _load("bench")
bulk = _load("bulk_import")


def _window(phase: str, latencies: dict[int, int]) -> Any:
    return bulk.Window(phase, 0.0, 10.0, 1.0, 1.0, 1.0, 1.0, sum(latencies.values()), 0,
                       latencies=latencies)


def test_the_pooled_p99_counts_every_verify_of_the_windows_together() -> None:
    calm = _window("import", {500: 990, 900: 10})        # its own p99: 0.5 ms
    stalled = _window("import", {500: 900, 9_000: 100})  # its own p99: 9 ms
    assert bulk.pooled_p99_ms([calm]) == 0.5
    assert bulk.pooled_p99_ms([stalled]) == 9.0
    # 2,000 verifies, 110 over 0.5 ms: the 1,980th is among the 100 of 9 ms
    assert bulk.pooled_p99_ms([calm, stalled]) == 9.0
    assert bulk.pooled_p99_ms([calm, _window("import", {500: 3000})]) == 0.5
    assert bulk.pooled_p99_ms([]) is None and bulk.pooled_p99_ms([_window("x", {})]) is None


def test_the_json_leaves_the_histograms_out() -> None:
    run = {"windows": [{"phase": "import", "latencies": {500: 1}}]}
    assert bulk._without_latencies(run) == {"windows": [{"phase": "import"}]}


def test_loop_holds_are_the_difference_between_the_totals_nearest_the_import(
        tmp_path: Path) -> None:
    def totals(t: float, holds: dict[str, list[Any]]) -> str:
        return json.dumps({"t": t, "busy_s": 1.0, "callbacks": 10, "holds": holds})

    (tmp_path / "holds-1.jsonl").write_text("\n".join([
        totals(100.0, {"a": [2, 0.002, 0.001, [2, 0, 0, 0, 0, 0]]}),
        totals(105.0, {"a": [5, 0.010, 0.004, [3, 1, 0, 1, 0, 0]],
                       "b": [1, 0.030, 0.030, [0, 0, 0, 0, 0, 1]]}),
        totals(110.0, {"a": [9, 0.020, 0.004, [5, 2, 1, 1, 0, 0]],
                       "b": [1, 0.030, 0.030, [0, 0, 0, 0, 0, 1]]}),
    ]) + "\n")
    summary = bulk.loop_holds(tmp_path, since=101.0, until=109.0)
    assert summary == {"seconds": 10.0, "top": [
        ("b", (1, 30.0, 30.0, [0, 0, 0, 0, 0, 1])),
        ("a", (7, 18.0, 4.0, [3, 2, 1, 1, 0, 0]))]}
    assert bulk.loop_holds(tmp_path / "none", 0.0, 1.0) == {}


def test_the_loop_holds_hook_does_nothing_unless_asked(tmp_path: Path) -> None:
    """load/loop_holds/sitecustomize.py on PYTHONPATH: inert in any process but a gateway
    ``serve`` with LOOP_HOLDS_DIR set (it would otherwise slow every Python there)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "load" / "loop_holds")}
    env.pop("LOOP_HOLDS_DIR", None)
    probe = ("import asyncio.events, sys; "
             "print(asyncio.events.Handle._run.__qualname__, 'sitecustomize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["Handle._run", "True"]
    env["LOOP_HOLDS_DIR"] = str(tmp_path)  # set, but not a serve: still inert
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["Handle._run", "True"]


def test_the_loop_holds_hook_times_a_serve_process_callbacks(tmp_path: Path) -> None:
    """In a ``serve`` process with LOOP_HOLDS_DIR: a step that holds the loop 3 ms is
    counted under its coroutine chain, one of 0.1 ms is not."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "load" / "loop_holds"),
           "LOOP_HOLDS_DIR": str(tmp_path), "LOOP_HOLDS_EVERY_S": "0.2"}
    script = """
import asyncio, time
def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
async def holding():
    for _ in range(3):
        busy(0.003)
        await asyncio.sleep(0)
async def brief():
    for _ in range(3):
        busy(0.0001)
        await asyncio.sleep(0)
async def main():
    await asyncio.gather(holding(), brief())
    time.sleep(0.5)
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", script, "serve"], env=env, check=True, timeout=60)
    lines = [json.loads(line) for path in tmp_path.glob("holds-*.jsonl")
             for line in path.read_text().splitlines()]
    holds = lines[-1]["holds"]
    # (marked PREEMPTED if the machine took the CPU away meanwhile)
    mine = [hold for name, hold in holds.items()
            if name.removeprefix("PREEMPTED ").startswith("task holding:")]
    assert mine and all("brief" not in name for name in holds)
    # three steps of at least 3 ms: each in a bucket from 2 ms up (<2, <5, <20, >=20 ms)
    assert sum(count for count, _, _, _ in mine) == 3
    assert sum(sum(buckets[3:]) for _, _, _, buckets in mine) == 3
    assert all(top_s >= 0.003 for _, _, top_s, _ in mine)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours that sleeps (a thread to find and to pin), killed afterwards."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_machine_threads_include_every_process(child: subprocess.Popen[bytes]) -> None:
    found = bulk.machine_threads()
    everything = {tid for tids in found.values() for tid in tids}
    assert child.pid in found["other"] and os.getpid() in everything


def test_the_machine_is_pinned_to_a_cpu_and_given_back(
        tmp_path: Path, monkeypatch: Any, child: subprocess.Popen[bytes]) -> None:
    cpu = max(os.sched_getaffinity(0))
    gone = subprocess.Popen(["true"])
    gone.wait()
    mask = tmp_path / "cpumask"
    mask.write_text("ff\n")
    monkeypatch.setattr(bulk, "WORKQUEUE_CPUMASK", str(mask))
    monkeypatch.setattr(bulk, "machine_threads",
                        lambda: {"other": [child.pid, gone.pid], "postgres": []})
    before = os.sched_getaffinity(child.pid)
    with bulk.machine_pinned(cpu) as done:
        assert os.sched_getaffinity(child.pid) == {cpu}
        assert mask.read_text() == f"{1 << cpu:x}"
        assert done["threads"] == {"other": 1, "postgres": 0}
        assert done["unmovable"] == 1 and done["workqueues"] and not done["note"]
    assert os.sched_getaffinity(child.pid) == before
    assert mask.read_text() == "ff"


def test_threads_of_other_users_are_counted_and_the_rest_still_pinned(
        tmp_path: Path, monkeypatch: Any, child: subprocess.Popen[bytes]) -> None:
    cpu = max(os.sched_getaffinity(0))
    other_user = 1  # refused below, as for another user's process when we are not root
    real = os.sched_setaffinity

    def setaffinity(tid: int, cpus: Any) -> None:
        if tid == other_user:
            raise PermissionError(1, "Operation not permitted")
        real(tid, cpus)
    monkeypatch.setattr(bulk.os, "sched_setaffinity", setaffinity)
    monkeypatch.setattr(bulk, "WORKQUEUE_CPUMASK", str(tmp_path / "absent" / "cpumask"))
    monkeypatch.setattr(bulk, "machine_threads",
                        lambda: {"other": [other_user, child.pid]})
    before = os.sched_getaffinity(child.pid)
    with bulk.machine_pinned(cpu) as done:
        assert os.sched_getaffinity(child.pid) == {cpu}
        assert done["threads"] == {"other": 1} and done["not_permitted"] == 1
        assert "1 threads of other users not moved" in done["note"] and not done["workqueues"]
    assert os.sched_getaffinity(child.pid) == before


def test_the_gap_meter_reports_each_measurement(capsys: Any) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    gaps = _load("gaps")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    assert gaps.main(["--seconds", "0.05", "--cpus", f"{cpus[0]},{cpus[1]}"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "spinner" in ln]
    assert [ln.split("machine ")[1].split(":")[0].strip() for ln in lines] == [
        "as it is", "pinned", "as it is"]
    found = gaps.gaps(cpus[0], 0.02)
    assert set(found) == {"gaps", "lost_ms", "lost_share", "worst_ms"}
    assert 0 <= found["lost_share"] <= 1
