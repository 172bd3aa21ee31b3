"""The benchmark's own arithmetic (load/bench.py): reading wrk, pairing rounds, verdicts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "load" / "bench.py"
_spec = importlib.util.spec_from_file_location("bench", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)

WRK = """Running 5s test @ http://127.0.0.1:4470/v2alpha1/admin/apiKeys:verify
  1 threads and 64 connections
  Latency Distribution
     50%  912.00us
     75%    1.80ms
     90%    2.10ms
     99%    2.81ms
  186530 requests in 5.00s, 60.12MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  37306.12
Transfer/sec:     12.02MB
"""


def test_wrk_output_is_read_with_units_and_errors():
    result = bench.parse_wrk(WRK)
    assert result.requests_per_s == 37306.12 and result.requests == 186530
    assert result.p50_ms == pytest.approx(0.912) and result.p99_ms == 2.81
    assert (result.non_2xx, result.socket_errors) == (3, 0)


def test_wrk_output_without_a_latency_distribution_is_refused():
    with pytest.raises(bench.BenchError, match="--latency"):
        bench.parse_wrk(WRK.replace("     50%  912.00us\n", ""))


def _row(id_: str, rounds: list[float], paired: list[float] = (), per: int = 1):
    return bench.Row(id_, id_, "sqlite", requests_per_s=sorted(rounds)[len(rounds) // 2],
                     p50_ms=1.0, p99_ms=2.0, rounds_requests_per_s=list(rounds),
                     paired_baseline_rps=list(paired), credentials_per_request=per)


def test_targets_are_the_median_of_ratios_to_the_baseline_paired_in_each_round():
    scenarios = {s.id: s for s in bench.SCENARIOS}
    floor = _row("floor", [100.0, 200.0, 100.0])
    cached = _row("verify-cached", [70.0, 190.0, 90.0], paired=[100.0, 200.0, 100.0])
    bench.score([floor, cached], scenarios)
    assert cached.target_rounds == pytest.approx([0.70, 0.95, 0.90])
    assert cached.target_value == pytest.approx(0.90) and cached.target_met is True
    table = bench.render([floor, cached])
    assert "0.90x PASS (rounds 0.70-0.95, met in 2 of 3)" in table


def test_batch_target_counts_credentials_against_single_verify():
    scenarios = {s.id: s for s in bench.SCENARIOS}
    floor = _row("floor", [100.0])
    single = _row("verify-cached", [1000.0], paired=[100.0])
    batch = _row("batch-cached", [150.0], paired=[1000.0], per=100)
    bench.score([floor, single, batch], scenarios)
    assert batch.credentials_per_s == 15_000
    assert batch.target_value == pytest.approx(15.0) and batch.target_met is False
    assert "15.00x MISS" in bench.render([batch]) and "rounds" not in bench.render([batch])


@pytest.mark.parametrize("case", ["floor", "verify", "forward-auth", "batch"])
def test_icount_harness_answers_every_call_from_l1(case: str) -> None:
    """load/icount.py's child (what callgrind runs), without valgrind: it exits non-zero
    when a route does not answer 200 or when a call suspends (is not answered from L1)."""
    import subprocess

    script = _PATH.with_name("icount.py")
    out = subprocess.run([sys.executable, str(script), "--child", case, "--calls", "20"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
