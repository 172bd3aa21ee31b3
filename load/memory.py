"""RSS per cached key: a gateway (SQLite, no Redis, one worker) with N imported keys, RSS
measured idle (keys in the store, none cached) and again once every key has been verified
(each in L1: a second pass answers ``X-Cache: L1=100`` for every batch), then
(after - idle) / N against the budget (``gateway.cache.l1.ENTRY_BUDGET_BYTES``, 1 KiB).

    .venv/bin/python load/memory.py [--keys 100000] [--strict]

Writes ``load/results/memory-<UTC>.json``; exit 1 when a run fails (or, with --strict,
misses the budget).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gateway.cache.l1 import ENTRY_BUDGET_BYTES  # noqa: E402

IMPORT = "/v2alpha1/admin/importedApiKeys:batchCreate"
BATCH_VERIFY = "/v2alpha1/admin/apiKeys:batchVerify"
BATCH = 100  # batchVerify's limit
TOKEN = "memory-bench-admin-token-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settle(pid: int, seconds: float = 6.0) -> int:
    """RSS after the next usage flush (every 5 s), the lowest of a few readings."""
    time.sleep(seconds)
    return min(rss(pid) for _ in range(5) if time.sleep(0.2) is None)


def run(count: int, workdir: Path) -> dict[str, object]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_DATABASE_URL=f"sqlite:///{workdir}/gateway.db",
               GATEWAY_ADMIN_TOKENS=TOKEN, GATEWAY_PEPPER=secrets.token_urlsafe(32),
               GATEWAY_PORT=str(port), GATEWAY_LOG_LEVEL="warning",
               GATEWAY_L1_SIZE=str(count + count // 10), GATEWAY_L1_TTL="3600",
               GATEWAY_DRAIN_SECONDS="0")
    log = (workdir / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=120) as client:
            for _ in range(100):
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            keys = [f"sk_mem_{i}_{secrets.token_urlsafe(18)}" for i in range(count)]
            started = time.monotonic()
            for at in range(0, count, 1000):
                chunk = keys[at:at + 1000]
                r = client.post(IMPORT, json={"requests": [
                    {"raw_key": k, "name": "m", "actor_id": f"actor-{at + i}"}
                    for i, k in enumerate(chunk)]})
                if r.status_code != 200 or r.json().get("success_count") != len(chunk):
                    raise RuntimeError(f"import: HTTP {r.status_code} {r.text[:200]}")
            imported_s = time.monotonic() - started
            idle = settle(proc.pid)
            for rounds in (1, 2):
                for at in range(0, count, BATCH):
                    r = client.post(BATCH_VERIFY, json={"requests": [
                        {"credential": k} for k in keys[at:at + BATCH]]})
                    body = r.json()
                    if r.status_code != 200 or not all(x["is_valid"]
                                                       for x in body["results"]):
                        raise RuntimeError(f"batchVerify: HTTP {r.status_code} {r.text[:200]}")
                    if rounds == 2 and r.headers["x-cache"] != f"L1={len(body['results'])}":
                        raise RuntimeError(f"not all cached: X-Cache {r.headers['x-cache']}")
            cached = settle(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    per_key = (cached - idle) / count
    return {"keys": count, "imported_s": round(imported_s, 1), "rss_idle": idle,
            "rss_cached": cached, "bytes_per_key": round(per_key),
            "budget": ENTRY_BUDGET_BYTES, "met": per_key <= ENTRY_BUDGET_BYTES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--strict", action="store_true", help="exit 1 over the budget")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gw-memory-") as tmp:
        try:
            result = run(args.keys, Path(tmp))
        except (RuntimeError, httpx.HTTPError) as exc:
            print(f"memory: failed: {exc}", file=sys.stderr)
            return 1
    verdict = "PASS" if result["met"] else "MISS"
    print(f"| keys cached | RSS idle | RSS cached | per key | budget |\n|---|---|---|---|---|\n"
          f"| {args.keys:,} | {int(result['rss_idle']) >> 20} MiB | "  # type: ignore[call-overload]
          f"{int(result['rss_cached']) >> 20} MiB | {result['bytes_per_key']:,} B | "  # type: ignore[call-overload]
          f"≤ {ENTRY_BUDGET_BYTES:,} B: {verdict} |")
    out = ROOT / "load" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"memory-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["met"] or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
