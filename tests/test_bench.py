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


# -- the attack and flood rows (issue 12) ---------------------------------------------------


def test_status_lines_of_a_counting_script_are_read():
    text = WRK + "bench-status 401 12\nbench-status 429 40000\nbench-status 401 3\n"
    assert bench.parse_wrk(text).statuses == {401: 15, 429: 40000}
    assert bench.parse_wrk(WRK).statuses == {}


METRICS_BEFORE = """# HELP gateway_store_duration_seconds Store lookups on the verify path.
# TYPE gateway_store_duration_seconds histogram
gateway_store_duration_seconds_bucket{le="0.001",op="get_by_digest"} 3.0
gateway_store_duration_seconds_count{op="get_by_digest"} 3.0
gateway_store_duration_seconds_sum{op="get_by_digest"} 0.01
gateway_redis_duration_seconds_count{op="mget"} 5.0
gateway_cache_requests_total{level="L1",result="hit"} 100.0
gateway_cache_requests_total{level="L1",result="miss"} 3.0
gateway_verify_results_total{cache="L1",outcome="valid"} 100.0
"""
METRICS_AFTER = """gateway_store_duration_seconds_count{op="get_by_digest"} 3.0
gateway_redis_duration_seconds_count{op="mget"} 7.0
gateway_redis_duration_seconds_count{op="fill"} 1.0
gateway_redis_errors_total{op="mget"} 1.0
gateway_cache_requests_total{level="L1",result="hit"} 100.0
gateway_cache_requests_total{level="L1",result="miss"} 3.0
gateway_verify_results_total{cache="L1",outcome="valid"} 100.0
gateway_verify_results_total{cache="NONE",outcome="not_found"} 5000.0
"""


def test_probe_counts_are_metric_deltas_summed_over_labels_with_what_moved():
    before, after = bench.parse_metrics(METRICS_BEFORE), bench.parse_metrics(METRICS_AFTER)
    assert before['gateway_store_duration_seconds_count{op="get_by_digest"}'] == 3.0
    totals, detail = bench.metric_deltas(before, after)
    assert totals == {"store_reads": 0, "gateway_redis_calls": 4, "cache_lookups": 0,
                      "verify_answers": 5000}
    # what the non-zero counts are made of (the verify answers are the control, not listed)
    assert detail == {'gateway_redis_duration_seconds_count{op="fill"}': 1,
                      'gateway_redis_duration_seconds_count{op="mget"}': 2,
                      'gateway_redis_errors_total{op="mget"}': 1}


def _probed(id_: str, probe: dict[str, int], detail: dict[str, int] = ()):
    row = _row(id_, [1000.0], paired=[1000.0])
    row.probe, row.probe_detail = dict(probe), dict(detail)
    return row


def test_the_forged_flood_passes_only_with_no_store_read_and_no_redis_command():
    scenarios = {s.id: s for s in bench.SCENARIOS}
    zero = {"store_reads": 0, "gateway_redis_calls": 0, "cache_lookups": 0,
            "verify_answers": 9000, "redis_commands": 0}
    clean = _probed("forged-flood", zero)
    dirty = _probed("forged-flood", {**zero, "redis_commands": 2}, {"redis MGET": 2})
    base = _row("forged-flood-base", [1000.0])
    bench.score([base, clean], scenarios)
    assert clean.probe_met is True and clean.target_met is True
    bench.score([base, dirty], scenarios)
    assert dirty.probe_met is False
    lines = bench.render([dirty]).splitlines()
    assert lines[-1].startswith("forged-flood: store reads 0, ")
    assert "Redis commands on its db 2; store reads and Redis commands 0: MISS" in lines[-1]
    assert lines[-1].endswith("of which redis MGET 2")
    # a probed row without a zero target gets no verdict
    legit = _probed("forged-flood-legit", {**zero, "store_reads": 7})
    bench.score([legit], scenarios)
    assert legit.probe_met is None and "PASS" not in bench.details(legit)


def test_attack_rows_report_the_attackers_rate_and_status_mix():
    scenarios = {s.id: s for s in bench.SCENARIOS}
    rounds = []
    for rps, statuses in ((9000.0, {"401": 3, "429": 40000}), (11000.0, {"401": 2})):
        row = _row("admin-attack", [800.0], paired=[1000.0])
        row.beside, row.beside_requests_per_s = "attackers", [rps]
        row.beside_requests, row.beside_statuses = sum(statuses.values()), statuses
        rounds.append(row)
    combined = bench.combine(rounds)
    assert combined.beside_statuses == {"401": 5, "429": 40000}
    assert combined.beside_requests_per_s == [9000.0, 11000.0]
    bench.score([_row("admin-attack-base", [1000.0, 1000.0]), combined], scenarios)
    assert combined.target_rounds == pytest.approx([0.8, 0.8]) and combined.target_met
    assert bench.details(combined) == ("admin-attack: attackers 10,000 req/s (median; rounds "
                                       "9,000-11,000), 401: 5, 429: 40,000 of 40,005")


def test_only_a_new_row_brings_its_baselines_and_required_rows():
    ids = [s.id for s in bench.select("forged-flood")]
    assert ids == ["floor", "forged-flood-base", "forged-flood", "forged-flood-legit-base",
                   "forged-flood-legit", "forged-flood-junk"]
    assert [s.id for s in bench.select("admin-attack")] == [
        "floor", "admin-attack-base", "admin-attack"]
    assert "admin-attack-base" in {s.id for s in bench.select(None)}


def test_baseline_only_rows_are_measured_next_to_their_row_alone():
    by_id = {s.id: s for s in bench.SCENARIOS}
    chosen = [by_id[i] for i in ("floor", "admin-attack-base", "admin-attack")]
    order: list[str] = []
    speed = {"floor": 300.0, "admin-attack-base": 200.0, "admin-attack": 150.0}

    def measure(scenario):
        order.append(scenario.id)
        return _row(scenario.id, [speed[scenario.id]])

    measured = {s.id: [] for s in chosen}
    bench.run_rounds(chosen, 2, measure, measured)
    # the baseline before its row in odd rounds, after it in even ones; never on its own
    assert order == ["floor", "admin-attack-base", "admin-attack",
                     "floor", "admin-attack", "admin-attack-base"]
    assert len(measured["admin-attack-base"]) == 2
    assert [r.paired_baseline_rps for r in measured["admin-attack"]] == [[200.0], [200.0]]


def test_redis_urls_get_the_flood_db():
    assert bench.with_db("redis://127.0.0.1:6379/0", 13) == "redis://127.0.0.1:6379/13"
    assert bench.with_db("redis://:pw@h:6379", 13) == "redis://:pw@h:6379/13"
    assert bench.redis_db("redis://h:6379/13") == 13 and bench.redis_db("redis://h") == 0


def test_flood_credentials_are_distinct_and_refused_before_any_lookup():
    from gateway.crypto.digests import Digester
    from gateway.crypto.secrets_format import SecretFormat
    from gateway.secret import Secret

    gateway = SecretFormat(("ory_ak",), (Digester(Secret("a-pepper-of-this-gateway")),))
    forged = bench.forged_keys(500)
    malformed = bench.malformed_keys(500)
    junk = bench.junk_strings(500)
    for keys in (forged, malformed, junk):
        assert len(set(keys)) == 500 and {len(k) for k in keys} == {61}
    # our prefix and v2 shape, a checksum this gateway did not make: refused
    assert all(k.startswith("ory_ak_v2_") and k[10:].isalnum() for k in forged)
    assert all(gateway.generation(k) is None for k in forged)
    # prefix and length right, one character outside base62: the shape check refuses it
    assert all(k.startswith("ory_ak_v2_") and k.count("-") == 1 for k in malformed)
    assert all(gateway.generation(k) is None for k in malformed)
    assert all(k.startswith("x") and k.isalnum() for k in junk)


def test_usage_stall_target_is_p99_at_most_10x_p50_with_its_own_load():
    scenarios = {s.id: s for s in bench.SCENARIOS}
    stall = scenarios["usage-stall"]
    assert stall.connections == 32 and stall.max_p99_over_p50 == 10 and stall.target is None
    assert [s.id for s in bench.select("usage-stall")] == ["floor", "usage-stall"]
    ok = bench.Row("usage-stall", "stall", "stall", requests_per_s=5000.0, p50_ms=4.0,
                   p99_ms=36.0, rounds_requests_per_s=[5000.0], rounds_p99_over_p50=[9.0])
    stalled = bench.Row("usage-stall", "stall", "stall", requests_per_s=5000.0, p50_ms=4.0,
                        p99_ms=250.0, rounds_requests_per_s=[5000.0],
                        rounds_p99_over_p50=[62.5])
    bench.score([ok], scenarios)
    bench.score([stalled], scenarios)
    assert ok.target == "p99 ≤10x p50" and ok.target_met is True
    assert ok.target_value == pytest.approx(9.0)
    assert stalled.target_met is False and "62.50x MISS" in bench.render([stalled])


def test_usage_stall_rounds_count_a_round_met_when_at_most_the_limit():
    scenarios = {s.id: s for s in bench.SCENARIOS}
    rounds = [bench.Row("usage-stall", "stall", "stall", requests_per_s=rps, p50_ms=2.0,
                        p99_ms=p99, rounds_requests_per_s=[rps],
                        rounds_p99_over_p50=[p99 / 2.0])
              for rps, p99 in [(100.0, 8.0), (110.0, 30.0), (120.0, 12.0)]]
    row = bench.combine(rounds)
    bench.score([row], scenarios)
    assert row.target_rounds == [4.0, 15.0, 6.0] and row.target_value == 6.0
    assert "6.00x PASS (rounds 4.00-15.00, met in 2 of 3)" in bench.render([row])


def test_spread_verdict_and_a_zero_p50():
    assert bench.spread_verdict(1.0, 10.0, 10) == (10.0, True)
    assert bench.spread_verdict(1.0, 10.5, 10) == (10.5, False)
    assert bench.spread_verdict(0.0, 1.0, 10)[1] is False


def test_a_row_may_fix_its_connections_and_a_minimum_duration():
    runner = bench.Runner(None, "wrk", bench.Load(duration=5, connections=64, threads=4,
                                                   warmup=2))
    stall = {s.id: s for s in bench.SCENARIOS}["usage-stall"]
    load = runner.load_for(stall)
    assert (load.connections, load.duration, load.threads) == (32, 12, 4)
    runner.load = bench.Load(duration=20, connections=64, threads=4, warmup=2)
    assert runner.load_for(stall).duration == 20
    cached = {s.id: s for s in bench.SCENARIOS}["verify-cached"]
    assert runner.load_for(cached) == runner.load


def test_the_grpc_row_brings_its_floor_and_runs_the_grpc_load_generator_in_wrks_place(
        tmp_path: Path) -> None:
    assert [s.id for s in bench.select("grpc-check")] == ["floor", "grpc-floor", "grpc-check"]
    request = bench.HttpRequest("GET", "/v2alpha1/decisions", headers={"X-API-Key": "k"},
                                driver=bench.GRPC_LOAD,
                                script_env={"BENCH_GRPC_TARGET": "127.0.0.1:9"})
    cmd, env = bench.wrk_command("/usr/bin/wrk", "http://127.0.0.1:8", request, tmp_path, "g",
                                 connections=64, threads=2, seconds=3)
    assert cmd[:2] == [sys.executable, str(_PATH.with_name("grpc_load.py"))]
    assert cmd[2:8] == ["-t", "2", "-c", "64", "-d", "3s"]
    assert env["BENCH_GRPC_TARGET"] == "127.0.0.1:9"
    assert Path(env["BENCH_HEADERS_FILE"]).read_text() == "X-API-Key: k\n"


def test_the_grpc_load_generators_summary_reads_as_wrks() -> None:
    """load/grpc_load.py prints what parse_wrk reads: requests/s, p50/p99 (in wrk's units),
    denied answers as non-2xx, failed calls as socket errors."""
    sys.path.insert(0, str(_PATH.parent))
    try:
        import grpc_load
    finally:
        sys.path.remove(str(_PATH.parent))
    latencies = [0.0005] * 60 + [0.002] * 39 + [1.5]
    text = grpc_load.summary("grpc://x", 1, 64, 2.0, denied=3, failed=2, latencies=latencies)
    result = bench.parse_wrk(text)
    assert result.requests == 100 and result.requests_per_s == 50.0
    assert result.p50_ms == pytest.approx(0.5) and result.p99_ms == pytest.approx(1500.0)
    assert (result.non_2xx, result.socket_errors) == (3, 2)
    clean = bench.parse_wrk(grpc_load.summary("grpc://x", 1, 64, 1.0, 0, 0, [0.0123] * 4))
    assert (clean.non_2xx, clean.socket_errors, clean.p99_ms) == (0, 0, pytest.approx(12.3))
