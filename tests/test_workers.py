"""``gateway serve --workers N`` (``GATEWAY_WORKERS``): N processes on one port, each with
its own L1. A revocation through one is seen by all before the admin call returns; a rate
limit holds across them (counters in Redis); without Redis more than one is refused; on
SIGTERM every worker drains and the parent exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import start_gateway
from verify.verify_helpers import ISSUED, VERIFY, issue

WORKERS = 2


def _fresh_verify(url: str, token: str, credential: str) -> httpx.Response:
    """A verify on a new connection: the kernel hands each to whichever worker accepts."""
    with httpx.Client(timeout=10) as client:
        return client.post(url + VERIFY, headers={"Authorization": f"Bearer {token}"},
                           json={"credential": credential})


def test_more_than_one_worker_without_redis_is_refused(tmp_path: Path) -> None:
    for argv, env in ((["--workers", "2"], {}), ([], {"GATEWAY_WORKERS": "2"})):
        run = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", *argv], capture_output=True,
            text=True, timeout=30,
            env={"PATH": "/usr/bin:/bin", "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/g.db",
                 **env})
        assert run.returncode == 2
        assert run.stderr.strip().splitlines() == [
            "gateway: GATEWAY_WORKERS: more than one worker needs GATEWAY_REDIS_URL "
            "(rate-limit counters are shared through Redis)"]


def test_every_worker_sees_a_revocation_and_shares_rate_limits(
        tmp_path: Path, redis_url: str) -> None:
    gw = start_gateway(tmp_path, {"GATEWAY_REDIS_URL": redis_url,
                                  "GATEWAY_WORKERS": str(WORKERS)})
    try:
        secret, key = issue(gw)
        # until a second worker has cached it: its first answer comes from L2 (Redis),
        # filled by the first worker's store read
        levels: list[str] = []
        for _ in range(200):
            r = _fresh_verify(gw.url, gw.token, secret)
            assert r.json()["is_valid"] is True
            levels.append(r.headers["x-cache"])
            if levels.count("L2") >= WORKERS - 1 and levels[-1] == "L1":
                break
        assert levels.count("STORE") == 1 and levels.count("L2") >= WORKERS - 1, levels
        r = httpx.post(f"{gw.url}{ISSUED}/{key['key_id']}:revoke", headers=gw.auth,
                       json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"}, timeout=10)
        assert r.status_code == 204, r.text
        answers = [_fresh_verify(gw.url, gw.token, secret).json() for _ in range(40)]
        assert not any(a["is_valid"] for a in answers)
        assert {a["error_code"] for a in answers} == {"VERIFICATION_ERROR_REVOKED"}

        limited, _ = issue(gw, rate_limit_policy={"quota": "5", "window": "3600s"})
        answers = [_fresh_verify(gw.url, gw.token, limited).json() for _ in range(20)]
        assert sum(a["is_valid"] for a in answers) == 5
        assert {a["error_code"] for a in answers if not a["is_valid"]} == {
            "VERIFICATION_ERROR_RATE_LIMITED"}
    finally:
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(30) == 0, gw.logs()
