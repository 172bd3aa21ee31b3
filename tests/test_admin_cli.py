"""``gateway keys | tokens | audit | usage`` end to end: the CLI run as a subprocess and in
process (``gateway.cli.main``), against a real gateway on SQLite.

Every run is recorded, and after each test no secret it saw (issued secrets, raw keys,
derived tokens, the admin token) may appear in any run's stderr.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN, Gateway, free_port, start_gateway

from gateway.cli import main

ISSUED = "/v2alpha1/admin/issuedApiKeys"
IMPORTED = "/v2alpha1/admin/importedApiKeys"
VERIFY = "/v2alpha1/admin/apiKeys:verify"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def line(self, prefix: str) -> str:
        """The one stdout line starting with ``prefix``, without it."""
        found = [line for line in self.out.splitlines() if line.startswith(prefix)]
        assert len(found) == 1, self.out
        return found[0].removeprefix(prefix)


RUNS: list[Ran] = []
SECRETS: set[str] = set()


@pytest.fixture(autouse=True)
def no_secret_on_stderr() -> Iterator[None]:
    yield
    seen = SECRETS | {ADMIN_TOKEN}
    leaked = [(s, r.err) for s in seen for r in RUNS if s in r.err]
    RUNS.clear()
    SECRETS.clear()
    assert not leaked


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("admin-cli"), {})
    try:
        yield gateway
    finally:
        gateway.stop()


def cli_env(url: str, token: str | None = ADMIN_TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_URL"] = url
    if token is not None:
        env["GATEWAY_ADMIN_TOKEN"] = token
    return env


def cli(url: str, *args: str, token: str | None = ADMIN_TOKEN, stdin: str = "",
        cwd: Path | None = None) -> Ran:
    """``gateway …`` as a subprocess, as a person or a script runs it."""
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin,
                          env=cli_env(url, token), cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    ran = Ran(proc.returncode, proc.stdout, proc.stderr)
    RUNS.append(ran)
    return ran


Run = Callable[..., Ran]


@pytest.fixture
def run(gw: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> Run:
    """``gateway.cli.main([...])`` in this process, with GATEWAY_URL and the token set."""
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_URL", gw.url)
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)

    def call(*args: str, stdin: str = "") -> Ran:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(args))
        out, err = capsys.readouterr()
        ran = Ran(code, out, err)
        RUNS.append(ran)
        return ran

    return call


def api(gw: Gateway, method: str, path: str, body: Any = None) -> Any:
    resp = httpx.request(method, gw.url + path, headers=gw.auth, json=body, timeout=10)
    assert resp.is_success, resp.text
    return resp.json() if resp.content else None


def issue(gw: Gateway, actor: str, **fields: Any) -> tuple[str, str]:
    """(key_id, secret) of a key issued through the API."""
    doc = api(gw, "POST", ISSUED, {"name": "k", "actor_id": actor, **fields})
    SECRETS.add(doc["secret"])
    return doc["issued_api_key"]["key_id"], doc["secret"]


def import_(gw: Gateway, actor: str) -> tuple[str, str]:
    raw = "sk_live_" + secrets.token_hex(16)
    SECRETS.add(raw)
    doc = api(gw, "POST", IMPORTED, {"raw_key": raw, "name": "i", "actor_id": actor})
    return doc["key_id"], raw


def verify(gw: Gateway, credential: str, **fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = api(gw, "POST", VERIFY, {"credential": credential, **fields})
    return result


def actor() -> str:
    return "user_" + secrets.token_hex(6)


# -- issue, import ---------------------------------------------------------------------


def test_issue_table_prints_the_secret_once_on_its_own_line(gw: Gateway) -> None:
    who = actor()
    ran = cli(gw.url, "keys", "issue", "--name", "ci", "--actor-id", who, "--scope", "read",
              "--scope", "write", "--ttl", "30d", "--metadata", '{"team": "a"}')
    assert ran.code == 0, ran.err
    assert ran.err == ""
    secret = ran.line("secret (shown only now, keep it): ")
    SECRETS.add(secret)
    assert secret.startswith("ory_ak_v2_")
    assert ran.out.count(secret) == 1
    header, row = ran.out.splitlines()[:2]
    assert header.split() == ["KEY_ID", "NAME", "ACTOR_ID", "STATUS", "SCOPES", "EXPIRE_TIME"]
    key_id, name, actor_id, status, scopes, _expire = row.split()
    assert (name, actor_id, status, scopes) == ("ci", who, "KEY_STATUS_ACTIVE", "read,write")
    # the columns line up: each value starts where its header does
    assert row.index(who) == header.index("ACTOR_ID")
    answer = verify(gw, secret)
    assert answer["is_valid"] is True
    assert (answer["key_id"], answer["metadata"]) == (key_id, {"team": "a"})


def test_issue_json_is_the_api_answer_with_its_secret(gw: Gateway, run: Run) -> None:
    who, request_id = actor(), secrets.token_hex(8)
    args = ("keys", "issue", "-o", "json", "--actor-id", who, "--visibility", "public",
            "--request-id", request_id)
    ran = run(*args)
    assert ran.code == 0, ran.err
    doc = ran.json()
    SECRETS.add(doc["secret"])
    assert set(doc) == {"issued_api_key", "secret"}
    assert doc["secret"].startswith("ory_pk_v2_")
    assert ran.out.count(doc["secret"]) == 1
    key = doc["issued_api_key"]
    assert (key["actor_id"], key["visibility"]) == (who, "KEY_VISIBILITY_PUBLIC")
    assert api(gw, "GET", f"{ISSUED}/{key['key_id']}")["actor_id"] == who
    # a replay of the request id answers the same key and secret
    assert run(*args).json() == doc


def test_import_reads_the_raw_key_from_stdin(gw: Gateway, run: Run, tmp_path: Path) -> None:
    raw, who = "sk_live_" + secrets.token_hex(16), actor()
    SECRETS.add(raw)
    ran = cli(gw.url, "keys", "import", "--raw-key-stdin", "--name", "legacy", "--actor-id",
              who, "--scope", "read", stdin=raw + "\n")
    assert ran.code == 0, ran.err
    key_id = hashlib.new("sha512_256", raw.encode()).hexdigest()
    assert key_id in ran.out and who in ran.out
    assert raw not in ran.out
    answer = verify(gw, raw)
    assert answer["is_valid"] is True and answer["key_id"] == key_id

    raw2 = "sk_live_" + secrets.token_hex(16)
    SECRETS.add(raw2)
    (tmp_path / "raw").write_text(raw2)
    ran = run("keys", "import", "--raw-key-file", str(tmp_path / "raw"), "--name", "legacy",
              "--actor-id", who, "-o", "json")
    assert ran.code == 0, ran.err
    assert ran.json()["key_id"] == hashlib.new("sha512_256", raw2.encode()).hexdigest()
    assert raw2 not in ran.out


def test_import_takes_no_raw_key_from_the_command_line(run: Run) -> None:
    with pytest.raises(SystemExit) as stopped:
        run("keys", "import", "--name", "n", "--actor-id", "a")
    assert stopped.value.code == 2
    with pytest.raises(SystemExit) as stopped:
        run("keys", "import", "--raw-key", "sk_live_x", "--name", "n", "--actor-id", "a")
    assert stopped.value.code == 2
    ran = run("keys", "import", "--raw-key-stdin", "--name", "n", "--actor-id", "a", stdin="")
    assert ran.code == 2 and "no raw key" in ran.err


# -- list, get, update -----------------------------------------------------------------


def test_list_filters_and_follows_pages(gw: Gateway, run: Run) -> None:
    who = actor()
    ids = [issue(gw, who)[0] for _ in range(5)]
    api(gw, "POST", f"{ISSUED}/{ids[0]}:revoke", {"reason": "REVOCATION_REASON_SUPERSEDED"})
    active = f'actor_id="{who}" AND status=KEY_STATUS_ACTIVE'

    page = run("keys", "list", "--filter", active, "--page-size", "2", "-o", "json")
    assert page.code == 0, page.err
    assert len(page.json()["issued_api_keys"]) == 2 and page.json()["next_page_token"]

    every = run("keys", "list", "--filter", active, "--page-size", "2", "--all", "-o", "json")
    keys = every.json()["issued_api_keys"]
    assert sorted(k["key_id"] for k in keys) == sorted(ids[1:])
    assert {k["status"] for k in keys} == {"KEY_STATUS_ACTIVE"}
    assert every.json()["next_page_token"] == ""

    table = cli(gw.url, "keys", "list", "--filter", f'actor_id="{who}"', "--page-size", "2",
                "--all")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split()[0] == "KEY_ID" and len(lines) == 6
    assert {line.split()[0] for line in lines[1:]} == set(ids)
    one = run("keys", "list", "--filter", f'actor_id="{who}"', "--page-size", "2")
    assert len(one.out.splitlines()) == 5 and "next_page_token: " in one.out

    imported_id, _ = import_(gw, who)
    ran = run("keys", "list", "--imported", "--filter", f'actor_id="{who}"', "-o", "json")
    assert [k["key_id"] for k in ran.json()["imported_api_keys"]] == [imported_id]

    bad = run("keys", "list", "--filter", 'name="x"')
    assert bad.code == 1
    assert bad.err.startswith("gateway: 400 INVALID_ARGUMENT: filter: field 'name'")


def test_get_shows_every_field(gw: Gateway, run: Run) -> None:
    key_id, _ = issue(gw, "user_get", scopes=["a", "b"], metadata={"team": "x"})
    ran = run("keys", "get", key_id)
    assert ran.code == 0, ran.err
    fields = dict(line.split(None, 1) for line in ran.out.splitlines())
    assert fields["key_id:"] == key_id
    assert fields["scopes:"] == "a,b"
    assert fields["status:"] == "KEY_STATUS_ACTIVE"
    assert fields["metadata:"] == '{"team":"x"}'
    assert run("keys", "get", key_id, "-o", "json").json() == api(gw, "GET", f"{ISSUED}/{key_id}")
    missing = run("keys", "get", "no-such-key")
    assert missing.code == 1 and missing.err.startswith("gateway: 404 NOT_FOUND: ")


def test_update_with_a_mask(gw: Gateway, run: Run) -> None:
    key_id, _ = issue(gw, actor(), name="before", scopes=["a"], metadata={"team": "x"})
    ran = run("keys", "update", key_id, "--name", "after", "--scope", "b", "--scope", "c",
              "--update-mask", "name,scopes")
    assert ran.code == 0, ran.err
    assert "after" in ran.out
    key = run("keys", "get", key_id, "-o", "json").json()
    assert (key["name"], key["scopes"], key["metadata"]) == ("after", ["b", "c"], {"team": "x"})

    # a masked field left out of the body is cleared; without a mask, the fields given
    assert run("keys", "update", key_id, "--update-mask", "metadata").code == 0
    assert "metadata" not in api(gw, "GET", f"{ISSUED}/{key_id}")
    expire = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    ran = run("keys", "update", key_id, "--metadata", '{"team": "y"}', "--expire-time",
              expire.isoformat().replace("+00:00", "Z"), "-o", "json")
    assert ran.code == 0, ran.err
    assert ran.json()["metadata"] == {"team": "y"}
    assert ran.json()["expire_time"].startswith(expire.strftime("%Y-%m-%dT%H:%M:%S"))

    nothing = run("keys", "update", key_id)
    assert nothing.code == 2 and "nothing to update" in nothing.err
    bad = run("keys", "update", key_id, "--name", "n", "--update-mask", "colour")
    assert bad.code == 1 and bad.err.startswith("gateway: 400 INVALID_ARGUMENT: ")


# -- revoke, rotate, delete ------------------------------------------------------------


def test_revoke_then_get_shows_revoked_and_a_second_revoke_is_refused(gw: Gateway) -> None:
    key_id, _ = issue(gw, actor())
    ran = cli(gw.url, "keys", "revoke", key_id, "--reason", "compromise")
    assert (ran.code, ran.out, ran.err) == (0, f"revoked {key_id}\n", "")
    shown = cli(gw.url, "keys", "get", key_id)
    assert "KEY_STATUS_REVOKED" in shown.out
    assert "REVOCATION_REASON_KEY_COMPROMISE" in shown.out
    again = cli(gw.url, "keys", "revoke", key_id, "--reason", "compromise")
    assert again.code == 1 and again.out == ""
    assert again.err.startswith("gateway: 409 FAILED_PRECONDITION: ")
    assert len(again.err.splitlines()) == 1


def test_revoke_an_imported_key_with_a_description(gw: Gateway, run: Run) -> None:
    key_id, raw = import_(gw, actor())
    ran = run("keys", "revoke", key_id, "--imported", "--reason", "privilege-withdrawn",
              "--description", "left the team", "-o", "json")
    assert (ran.code, ran.json()) == (0, {})
    key = run("keys", "get", key_id, "--imported", "-o", "json").json()
    assert key["status"] == "KEY_STATUS_REVOKED"
    assert key["revocation_description"] == "left the team"
    assert verify(gw, raw)["is_valid"] is False
    with pytest.raises(SystemExit) as stopped:
        run("keys", "revoke", key_id, "--reason", "bored")
    assert stopped.value.code == 2


def test_rotate_prints_the_new_secret_and_revokes_the_old_key(gw: Gateway, run: Run) -> None:
    old_id, old_secret = issue(gw, actor(), scopes=["read"])
    ran = cli(gw.url, "keys", "rotate", old_id)
    assert ran.code == 0, ran.err
    new_secret = ran.line("secret (shown only now, keep it): ")
    SECRETS.add(new_secret)
    assert ran.out.count(new_secret) == 1 and new_secret != old_secret
    assert f"revoked {old_id} (rotated)" in ran.out
    new_id = ran.out.splitlines()[1].split()[0]
    assert new_id != old_id
    answer = verify(gw, new_secret)
    assert (answer["is_valid"], answer["key_id"], answer["scopes"]) == (True, new_id, ["read"])
    assert verify(gw, old_secret)["error_code"] == "VERIFICATION_ERROR_REVOKED"
    assert run("keys", "get", old_id, "-o", "json").json()["status"] == "KEY_STATUS_REVOKED"

    doc = run("keys", "rotate", new_id, "-o", "json").json()
    SECRETS.add(doc["secret"])
    assert doc["old_issued_api_key"]["key_id"] == new_id
    assert doc["old_issued_api_key"]["status"] == "KEY_STATUS_REVOKED"


def test_delete_an_imported_key(gw: Gateway, run: Run) -> None:
    key_id, raw = import_(gw, actor())
    ran = cli(gw.url, "keys", "delete", key_id)
    assert (ran.code, ran.out) == (0, f"deleted {key_id}\n")
    gone = run("keys", "get", key_id, "--imported")
    assert gone.code == 1 and gone.err.startswith("gateway: 404 NOT_FOUND: ")
    assert verify(gw, raw)["is_valid"] is False
    issued_id, _ = issue(gw, actor())
    assert run("keys", "delete", issued_id).code == 1  # only imported keys can be deleted


# -- tokens ----------------------------------------------------------------------------


def test_derive_a_jwt_and_a_macaroon(gw: Gateway, run: Run, tmp_path: Path) -> None:
    _, secret = issue(gw, actor(), scopes=["read", "write"])
    ran = cli(gw.url, "tokens", "derive", "--credential-stdin", "--algorithm", "jwt", "--ttl",
              "5m", "--scope", "read", "--audience", "svc", stdin=secret + "\n")
    assert ran.code == 0, ran.err
    token = ran.line("token (shown only now): ")
    SECRETS.add(token)
    assert token.count(".") == 2 and ran.out.count(token) == 1 and secret not in ran.out
    assert "scopes:" in ran.out and "expire_time:" in ran.out
    answer = verify(gw, token, expected_audiences=["svc"])
    assert (answer["is_valid"], answer["scopes"]) == (True, ["read"])

    (tmp_path / "credential").write_text(secret)
    doc = run("tokens", "derive", "--credential-file", str(tmp_path / "credential"),
              "--algorithm", "macaroon", "-o", "json").json()
    SECRETS.add(doc["token"]["token"])
    assert doc["token"]["token"].startswith("mc_")
    assert verify(gw, doc["token"]["token"])["is_valid"] is True

    refused = run("tokens", "derive", "--credential-stdin", "--scope", "admin", stdin=secret)
    assert refused.code == 1 and refused.err.startswith("gateway: 403 PERMISSION_DENIED: ")


# -- authentication, reachability, usage errors ----------------------------------------


def test_a_wrong_token_exits_1(gw: Gateway) -> None:
    wrong = "wrong-admin-token-" + secrets.token_hex(8)
    SECRETS.add(wrong)
    ran = cli(gw.url, "keys", "list", token=wrong)
    assert ran.code == 1 and ran.out == ""
    assert ran.err.startswith("gateway: 401 UNAUTHENTICATED: ")


def test_an_unreachable_gateway_exits_3() -> None:
    ran = cli(f"http://127.0.0.1:{free_port()}", "keys", "list")
    assert ran.code == 3 and ran.out == ""
    assert ran.err.startswith("gateway: cannot reach http://127.0.0.1:")


def test_no_token_exits_2(gw: Gateway, tmp_path: Path) -> None:
    ran = cli(gw.url, "keys", "list", token=None, cwd=tmp_path)
    assert ran.code == 2 and "no admin token" in ran.err
    missing = cli(gw.url, "keys", "list", "--token-file", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.code == 2 and "--token-file" in missing.err
    (tmp_path / "empty").write_text("\n")
    empty = cli(gw.url, "keys", "list", "--token-file", str(tmp_path / "empty"), cwd=tmp_path)
    assert empty.code == 2 and "empty" in empty.err


def test_token_files(gw: Gateway, tmp_path: Path) -> None:
    # the file the gateway generates with the SQLite default, found from where it runs
    (tmp_path / "gateway-data").mkdir()
    (tmp_path / "gateway-data" / "admin-token").write_text(ADMIN_TOKEN + "\n")
    assert cli(gw.url, "keys", "list", token=None, cwd=tmp_path).code == 0
    # --token-file is given on purpose: it wins over the environment
    (tmp_path / "token").write_text(ADMIN_TOKEN)
    wrong = "wrong-admin-token-" + secrets.token_hex(8)
    SECRETS.add(wrong)
    ran = cli(gw.url, "keys", "list", "--token-file", str(tmp_path / "token"), token=wrong)
    assert ran.code == 0, ran.err


def test_usage_errors_exit_2(run: Run) -> None:
    for args in (["keys", "issue", "--metadata", "{not json"],
                 ["keys", "issue", "--metadata", "[1]"],
                 ["keys", "revoke", "k"],
                 ["keys", "list", "-o", "yaml"],
                 ["keys"]):
        with pytest.raises(SystemExit) as stopped:
            run(*args)
        assert stopped.value.code == 2, args
    for url in ("ftp://127.0.0.1", "127.0.0.1:4470", "http://127.0.0.1:port"):
        ran = run("keys", "list", "--url", url)
        assert ran.code == 2 and "--url" in ran.err, url


USAGE_ANSWER = {"key_id": "k/1", "interval": "hour", "buckets": [
    {"start_time": "2026-12-03T10:00:00Z", "counts": {"VALID": 3, "NOT_FOUND": 1}, "total": 4},
    {"start_time": "2026-12-03T11:00:00Z", "counts": {"REVOKED": 12}, "total": 12}],
    "total": 16}


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers the gateway never gives: a 500, a redirect, an answer too large, not JSON."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if "/boom" in self.path:
            self._send(500, b'{"code": 13, "message": "it broke"}')
        elif "/moved" in self.path:
            self.send_response(302)
            self.send_header("Location", "/v2alpha1/admin/issuedApiKeys/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/v2alpha1/admin/importedApiKeys/k%2F1/usage?"):
            self._send(200, json.dumps(USAGE_ANSWER).encode())
        elif "/huge" in self.path:
            self._send(200, b'{"x": "' + b"a" * (5 << 20) + b'"}')
        else:
            self._send(200, b"<html>not the API</html>")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_server_errors_and_bad_answers_exit_3(run: Run) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        boom = run("keys", "get", "boom", "--url", url)
        assert (boom.code, boom.err) == (3, "gateway: 500 INTERNAL: it broke\n")
        moved = run("keys", "get", "moved", "--url", url)
        assert moved.code == 3 and moved.err.startswith("gateway: 302 ")
        assert not any("elsewhere" in path for path in _Stub.seen)  # not followed
        huge = run("keys", "get", "huge", "--url", url)
        assert huge.code == 3 and "over 4 MiB" in huge.err
        html = run("keys", "get", "html", "--url", url)
        assert html.code == 3 and "not JSON" in html.err
        # the usage table, from an answer of the documented shape (the real route is
        # tested in test_usage)
        usage = run("usage", "k/1", "--imported", "--interval", "hour", "--start-time",
                    "2026-12-03T10:00:00Z", "--url", url)
        assert usage.code == 0, usage.err
        assert usage.out.splitlines() == [
            "START_TIME            NOT_FOUND  REVOKED  VALID  TOTAL",
            "2026-12-03T10:00:00Z  1          0        3      4",
            "2026-12-03T11:00:00Z  0          12       0      12",
            "",
            "total: 16"]
        assert "interval=hour&start_time=2026-12-03T10%3A00%3A00Z" in _Stub.seen[-1]
        assert json.loads(run("usage", "k/1", "--imported", "--interval", "hour",
                              "--url", url, "-o", "json").out) == USAGE_ANSWER
    finally:
        server.shutdown()
        server.server_close()


# -- audit, usage ----------------------------------------------------------------------


def test_audit_list(gw: Gateway, run: Run) -> None:
    key_id, _ = issue(gw, actor())
    api(gw, "POST", f"{ISSUED}/{key_id}:revoke", {"reason": "REVOCATION_REASON_SUPERSEDED"})
    target = f'target="issuedApiKeys/{key_id}"'
    doc = run("audit", "list", "--filter", target, "--page-size", "1", "--all",
              "-o", "json").json()
    events = doc["audit_events"]
    assert [e["action"] for e in events] == ["key.revoked", "key.issued"]  # newest first
    assert doc["next_page_token"] == ""
    ran = run("audit", "list", "--filter", target)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0].split() == ["TIME", "ACTION", "TARGET", "PRINCIPAL", "OUTCOME",
                                "CLIENT_ADDRESS", "REQUEST_ID"]
    assert [line.split()[1] for line in lines[1:]] == ["key.revoked", "key.issued"]
    assert all(f"issuedApiKeys/{key_id}" in line for line in lines[1:])


def test_usage(gw: Gateway, run: Run) -> None:
    key_id, secret = issue(gw, actor())
    for _ in range(3):
        verify(gw, secret)
    deadline = time.monotonic() + 15  # counts are flushed to the store every 5 s
    while True:
        doc = run("usage", key_id, "--interval", "hour", "-o", "json").json()
        if doc["total"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert (doc["key_id"], doc["interval"], doc["total"]) == (key_id, "hour", 3)
    ran = run("usage", key_id, "--interval", "hour")
    assert ran.code == 0, ran.err
    assert ran.line("total: ") == "3"
    lines = ran.out.splitlines()
    assert lines[0].split() == ["START_TIME", *sorted(doc["buckets"][0]["counts"]), "TOTAL"]
    assert lines[1].split()[-1] == "3"
    imported = run("usage", key_id, "--imported")
    assert imported.code == 1 and imported.err.startswith("gateway: 404 NOT_FOUND: ")
    bad = run("usage", key_id, "--start-time", "yesterday")
    assert bad.code == 1 and bad.err.startswith("gateway: 400 INVALID_ARGUMENT: ")
