"""``gateway keys | tokens | audit | usage``: manage keys through a running gateway's HTTP API.

Every command is one or a few HTTP calls to the gateway at ``--url`` (default
``GATEWAY_URL``, else ``http://127.0.0.1:4470``): none opens the database, and none needs the
server's settings (``GATEWAY_PEPPER`` …). The admin token is read from ``--token-file PATH``,
else the environment variable ``GATEWAY_ADMIN_TOKEN``, else ``./gateway-data/admin-token``
(the file the gateway writes on its first start with the SQLite default); never from an
argument's value, which shell history and ``ps`` would show. Raw keys and credentials are
read from stdin or a file for the same reason.

``-o table`` (the default) prints aligned columns for people; ``-o json`` prints the one JSON
document the API answered (``--all``: every page's items in one document; a 204: ``{}``).
A secret (issue, rotate) or a derived token is printed once: in a table on its own labelled
line, in JSON as part of the document. Nothing secret is ever written to stderr.

Exit codes:
    0  success
    1  the API refused the request (4xx); stderr says ``gateway: <status> <CODE>: <message>``
    2  usage or configuration error (bad arguments, no admin token found)
    3  the gateway could not be reached, or answered 5xx or something that is not its API
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from gateway.version import VERSION

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:4470"
DEFAULT_TOKEN_FILE = Path("gateway-data") / "admin-token"
ADMIN = "/v2alpha1/admin"
MAX_ANSWER = 4 << 20  # bytes of one answer; a larger one is an error
MAX_INPUT = 64 << 10  # characters of a token file, raw key or credential
TIMEOUT_S = 30.0
GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
REASONS = {"compromise": "REVOCATION_REASON_KEY_COMPROMISE",
           "affiliation-changed": "REVOCATION_REASON_AFFILIATION_CHANGED",
           "superseded": "REVOCATION_REASON_SUPERSEDED",
           "privilege-withdrawn": "REVOCATION_REASON_PRIVILEGE_WITHDRAWN"}
KEY_COLUMNS = ("key_id", "name", "actor_id", "status", "scopes", "expire_time")
AUDIT_COLUMNS = ("time", "action", "target", "principal", "outcome", "client_address",
                 "request_id")


class CliError(Exception):
    """Ends the command: ``message`` on stderr, ``exit_code`` returned."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


@dataclass
class Result:
    """What a command prints: ``doc`` with ``-o json``, ``lines`` with ``-o table``."""

    doc: Any
    lines: list[str] = field(default_factory=list)


# -- HTTP ------------------------------------------------------------------------------


class _NoRedirects(HTTPRedirectHandler):
    """A redirect is not followed (it would carry the admin token elsewhere): it is an
    error answer like any other non-2xx."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = build_opener(_NoRedirects)


@dataclass(frozen=True)
class Api:
    """The admin API of one gateway, called with one admin token."""

    url: str
    token: str

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
             body: Any = None) -> Any:
        """The parsed JSON answer (None for an empty one); CliError for anything else."""
        target = self.url + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            target += "?" + urlencode(params)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                   "User-Agent": f"gateway-cli/{VERSION}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = Request(target, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=TIMEOUT_S) as answer:
                status, raw = answer.status, _read_answer(answer)
        except HTTPError as refusal:
            with refusal:
                raw = _read_answer(refusal)
            exit_code = REFUSED if 400 <= refusal.code < 500 else UNREACHABLE
            raise CliError(exit_code, f"{refusal.code} {_error_message(raw)}") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CliError(UNREACHABLE, f"cannot reach {self.url}: {reason}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(UNREACHABLE, f"{status}: the answer is not JSON") from None


def _read_answer(answer: Any) -> bytes:
    try:
        raw: bytes = answer.read(MAX_ANSWER + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise CliError(UNREACHABLE, f"the answer was cut short: {exc}") from None
    if len(raw) > MAX_ANSWER:
        raise CliError(UNREACHABLE, f"the answer is over {MAX_ANSWER >> 20} MiB "
                                    "(a smaller --page-size helps a listing)")
    return raw


def _error_message(raw: bytes) -> str:
    """``INVALID_ARGUMENT: …`` from an Ory ``Status`` body, else the body's text."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("code")
        if isinstance(code, int) and 0 <= code < len(GRPC_CODES):
            return f"{GRPC_CODES[code]}: {body['message']}"
        return str(body["message"])
    return raw.decode("utf-8", "replace").strip()[:500] or "(no body)"


# -- configuration and input -----------------------------------------------------------


def _base_url(given: str | None) -> str:
    url = (given or os.environ.get("GATEWAY_URL") or DEFAULT_URL).rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.query or parts.fragment):
        raise CliError(USAGE, f"--url/GATEWAY_URL: {url!r} is not an http(s) URL")
    return url


def _token(token_file: str | None) -> str:
    if token_file is not None:
        return _checked_token(_read_file(Path(token_file), "--token-file"), "--token-file")
    if os.environ.get("GATEWAY_ADMIN_TOKEN"):
        return _checked_token(os.environ["GATEWAY_ADMIN_TOKEN"], "GATEWAY_ADMIN_TOKEN")
    if DEFAULT_TOKEN_FILE.is_file():
        return _checked_token(_read_file(DEFAULT_TOKEN_FILE, str(DEFAULT_TOKEN_FILE)),
                              str(DEFAULT_TOKEN_FILE))
    raise CliError(USAGE, "no admin token: set GATEWAY_ADMIN_TOKEN, give --token-file PATH, "
                          f"or run in the directory holding {DEFAULT_TOKEN_FILE}")


def _checked_token(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise CliError(USAGE, f"{source}: the admin token is empty")
    if not all(" " <= c <= "~" for c in token):
        raise CliError(USAGE, f"{source}: the admin token holds characters other than "
                              "printable ASCII")
    return token


def _read_file(path: Path, what: str) -> str:
    try:
        with path.open(encoding="utf-8") as fh:
            text = fh.read(MAX_INPUT + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(USAGE, f"{what} {path}: {getattr(exc, 'strerror', None) or exc}"
                       ) from None
    if len(text) > MAX_INPUT:
        raise CliError(USAGE, f"{what} {path}: over {MAX_INPUT} characters")
    return text


def _read_secret(path: str | None, what: str) -> str:
    """A raw key or credential from the file at ``path``, else from stdin (without echo
    at a terminal); one trailing newline is not part of it."""
    if path is not None:
        text = _read_file(Path(path), f"the {what} file")
    elif sys.stdin.isatty():
        text = getpass.getpass(f"{what}: ")
    else:
        try:
            text = sys.stdin.read(MAX_INPUT + 1)
        except UnicodeDecodeError:
            raise CliError(USAGE, f"the {what} on stdin is not UTF-8") from None
        if len(text) > MAX_INPUT:
            raise CliError(USAGE, f"the {what} on stdin is over {MAX_INPUT} characters")
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise CliError(USAGE, f"no {what} given ({'file' if path else 'stdin'} is empty)")
    return text


def _json_object(text: str) -> dict[str, Any]:
    """argparse type of ``--metadata``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


# -- output ----------------------------------------------------------------------------


def _clean(text: str) -> str:
    """A string from the server made safe for a terminal: control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cell(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _clean(",".join(value))
    if isinstance(value, dict | list):
        return _clean(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return _clean(str(value))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    cells = [[c.upper() for c in columns]]
    cells += [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
            for line in cells]


def _fields(doc: dict[str, Any]) -> list[str]:
    width = max((len(k) for k in doc), default=0) + 1
    return [f"{_clean(k) + ':':<{width}} {_cell(v)}" for k, v in doc.items()]


def _object(value: Any, name: str = "answer") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CliError(UNREACHABLE, f"the gateway's {name} is not a JSON object")
    return value


def _with_secret(doc: Any, lines: list[str]) -> Result:
    secret = _object(doc).get("secret")
    if not isinstance(secret, str):
        raise CliError(UNREACHABLE, "the gateway's answer holds no secret")
    return Result(doc, [*lines, "", f"secret (shown only now, keep it): {secret}"])


# -- commands --------------------------------------------------------------------------


def _collection(args: argparse.Namespace) -> str:
    return "importedApiKeys" if getattr(args, "imported", False) else "issuedApiKeys"


def _item(collection: str, key_id: str, verb: str = "") -> str:
    return f"{ADMIN}/{collection}/{quote(key_id, safe='')}" + (f":{verb}" if verb else "")


def _key_fields(args: argparse.Namespace) -> dict[str, Any]:
    body = {name: value for name, value in (
        ("name", args.name), ("actor_id", args.actor_id), ("scopes", args.scopes),
        ("ttl", args.ttl), ("metadata", args.metadata), ("request_id", args.request_id),
    ) if value is not None}
    if args.visibility:
        body["visibility"] = f"KEY_VISIBILITY_{args.visibility.upper()}"
    return body


def _issue(api: Api, args: argparse.Namespace) -> Result:
    doc = api.call("POST", f"{ADMIN}/issuedApiKeys", body=_key_fields(args))
    key = _object(_object(doc).get("issued_api_key"), "issued_api_key")
    return _with_secret(doc, _table([key], KEY_COLUMNS))


def _import(api: Api, args: argparse.Namespace) -> Result:
    body = {"raw_key": _read_secret(args.raw_key_file, "raw key"), **_key_fields(args)}
    doc = _object(api.call("POST", f"{ADMIN}/importedApiKeys", body=body))
    return Result(doc, _table([doc], KEY_COLUMNS))


def _pages(api: Api, path: str, items_field: str, columns: Sequence[str],
           args: argparse.Namespace) -> Result:
    """One page of a listing, or with ``--all`` every page (following next_page_token)."""
    query = {"filter": args.filter, "page_size": args.page_size, "page_token": args.page_token}
    items: list[dict[str, Any]] = []
    tokens: set[str] = set()
    while True:
        doc = _object(api.call("GET", path, query=query))
        page = doc.get(items_field) or []
        if not isinstance(page, list):
            raise CliError(UNREACHABLE, f"the gateway's {items_field} is not a list")
        items += [_object(item, items_field) for item in page]
        token = doc.get("next_page_token") or ""
        if not args.all or not token:
            break
        if token in tokens:
            raise CliError(UNREACHABLE, "the gateway answered a page token twice")
        tokens.add(token)
        query["page_token"] = token
    if args.all:
        doc = {**doc, items_field: items}
    lines = _table(items, columns)
    if token:
        lines += ["", f"next_page_token: {_clean(token)}  (give it as --page-token, or use --all)"]
    return Result(doc, lines)


def _list(api: Api, args: argparse.Namespace) -> Result:
    kind = "imported" if args.imported else "issued"
    return _pages(api, f"{ADMIN}/{_collection(args)}", f"{kind}_api_keys", KEY_COLUMNS, args)


def _get(api: Api, args: argparse.Namespace) -> Result:
    doc = _object(api.call("GET", _item(_collection(args), args.key_id)))
    return Result(doc, _fields(doc))


def _update(api: Api, args: argparse.Namespace) -> Result:
    body = {name: value for name, value in (
        ("name", args.name), ("scopes", args.scopes), ("metadata", args.metadata),
        ("expire_time", args.expire_time)) if value is not None}
    mask = args.update_mask or ",".join(body)
    if not mask:
        raise CliError(USAGE, "nothing to update: give --name, --scope, --metadata or "
                              "--expire-time, or --update-mask naming fields to clear")
    doc = _object(api.call("PATCH", _item(_collection(args), args.key_id),
                           query={"update_mask": mask}, body=body))
    return Result(doc, _fields(doc))


def _revoke(api: Api, args: argparse.Namespace) -> Result:
    body = {"reason": REASONS[args.reason]}
    if args.description is not None:
        body["description"] = args.description
    api.call("POST", _item(_collection(args), args.key_id, "revoke"), body=body)
    return Result({}, [f"revoked {_clean(args.key_id)}"])


def _rotate(api: Api, args: argparse.Namespace) -> Result:
    doc = _object(api.call("POST", _item("issuedApiKeys", args.key_id, "rotate"), body={}))
    key = _object(doc.get("issued_api_key"), "issued_api_key")
    return _with_secret(doc, [*_table([key], KEY_COLUMNS), "",
                              f"revoked {_clean(args.key_id)} (rotated)"])


def _delete(api: Api, args: argparse.Namespace) -> Result:
    api.call("DELETE", _item("importedApiKeys", args.key_id))
    return Result({}, [f"deleted {_clean(args.key_id)}"])


def _derive(api: Api, args: argparse.Namespace) -> Result:
    body: dict[str, Any] = {"credential": _read_secret(args.credential_file, "credential")}
    if args.algorithm:
        body["algorithm"] = f"TOKEN_ALGORITHM_{args.algorithm.upper()}"
    for name, value in (("ttl", args.ttl), ("scopes", args.scopes),
                        ("audiences", args.audiences)):
        if value is not None:
            body[name] = value
    doc = api.call("POST", f"{ADMIN}/apiKeys:derive", body=body)
    token = _object(_object(doc).get("token"), "token")
    if not isinstance(token.get("token"), str):
        raise CliError(UNREACHABLE, "the gateway's answer holds no token")
    details = {k: token.get(k) for k in ("expire_time", "scopes", "audiences")}
    return Result(doc, [*_fields(details), "", f"token (shown only now): {token['token']}"])


def _audit(api: Api, args: argparse.Namespace) -> Result:
    return _pages(api, f"{ADMIN}/auditEvents", "audit_events", AUDIT_COLUMNS, args)


def _usage(api: Api, args: argparse.Namespace) -> Result:
    query = {"interval": args.interval, "start_time": args.start_time,
             "end_time": args.end_time}
    doc = _object(api.call("GET", _item(_collection(args), args.key_id) + "/usage",
                           query=query))
    buckets = [_object(b, "bucket") for b in doc.get("buckets") or []]
    counts = [_object(b.get("counts") or {}, "counts") for b in buckets]
    outcomes = sorted({name for c in counts for name in c})
    rows = [{"start_time": b.get("start_time"), **{o: c.get(o, 0) for o in outcomes},
             "total": b.get("total")} for b, c in zip(buckets, counts, strict=True)]
    lines = _table(rows, ("start_time", *outcomes, "total"))
    return Result(doc, [*lines, "", f"total: {_cell(doc.get('total'))}"])


# -- arguments -------------------------------------------------------------------------

Handler = Callable[[Api, argparse.Namespace], Result]


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("gateway and output")
    group.add_argument("--url", help=f"the gateway (default GATEWAY_URL, else {DEFAULT_URL})")
    group.add_argument("--token-file", metavar="PATH",
                       help="file holding the admin token (default: GATEWAY_ADMIN_TOKEN, "
                            f"else ./{DEFAULT_TOKEN_FILE})")
    group.add_argument("-o", "--output", choices=("table", "json"), default="table",
                       help="table for people (default), or the API's JSON answer")
    return common


def _key_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--name", required=required)
    parser.add_argument("--actor-id", required=required)
    parser.add_argument("--scope", dest="scopes", action="append", metavar="SCOPE",
                        help="a scope of the key (repeat for more)")
    parser.add_argument("--ttl", help="lifetime: 30d, 720h, 3600s …")
    parser.add_argument("--metadata", type=_json_object, metavar="JSON",
                        help="a JSON object")
    parser.add_argument("--visibility", choices=("secret", "public"))
    parser.add_argument("--request-id", help="idempotency key: a replay answers the same")


def _listing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", help="AIP-160, e.g. 'actor_id=\"u\" AND "
                                         "status=KEY_STATUS_ACTIVE'")
    parser.add_argument("--page-size", type=int, metavar="N")
    parser.add_argument("--page-token", metavar="TOKEN", help="a next_page_token answered")
    parser.add_argument("--all", action="store_true", help="follow every next_page_token")


def _secret_source(parser: argparse.ArgumentParser, name: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(f"--{name}-stdin", action="store_true",
                        help=f"read the {name.replace('-', ' ')} from stdin")
    source.add_argument(f"--{name}-file", metavar="FILE",
                        help=f"read the {name.replace('-', ' ')} from FILE")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keys``, ``tokens``, ``audit`` and ``usage`` under the ``gateway`` command."""
    common = _common()

    def leaf(group: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
             handler: Handler, text: str) -> argparse.ArgumentParser:
        parser = group.add_parser(name, parents=[common], help=text, description=text)
        parser.set_defaults(admin=handler)
        return parser

    def key_id(parser: argparse.ArgumentParser, imported: bool = True) -> None:
        parser.add_argument("key_id", metavar="KEY_ID")
        if imported:
            parser.add_argument("--imported", action="store_true",
                                help="an imported key (default: an issued one)")

    keys = sub.add_parser("keys", help="manage keys through a running gateway's API",
                          description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    group = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    _key_options(leaf(group, "issue", _issue, "issue a key; its secret is shown once"),
                 required=False)
    parser = leaf(group, "import", _import, "import a raw key (from stdin or a file)")
    _secret_source(parser, "raw-key")
    _key_options(parser, required=True)
    parser = leaf(group, "list", _list, "list issued (or --imported) keys")
    parser.add_argument("--imported", action="store_true",
                        help="imported keys (default: issued ones)")
    _listing_options(parser)
    key_id(leaf(group, "get", _get, "show one key"))
    parser = leaf(group, "update", _update, "change a key's name, scopes, metadata or expiry")
    key_id(parser)
    parser.add_argument("--name")
    parser.add_argument("--scope", dest="scopes", action="append", metavar="SCOPE")
    parser.add_argument("--metadata", type=_json_object, metavar="JSON")
    parser.add_argument("--expire-time", metavar="RFC3339")
    parser.add_argument("--update-mask", metavar="PATHS",
                        help="fields to set, comma-separated (a named field not given is "
                             "cleared; default: the fields given)")
    parser = leaf(group, "revoke", _revoke, "revoke a key (for good)")
    key_id(parser)
    parser.add_argument("--reason", required=True, choices=tuple(REASONS))
    parser.add_argument("--description", help="with --reason privilege-withdrawn only")
    key_id(leaf(group, "rotate", _rotate, "replace an issued key: new secret, old one "
                                          "revoked"), imported=False)
    key_id(leaf(group, "delete", _delete, "delete an imported key"), imported=False)

    tokens = sub.add_parser("tokens", help="derive short-lived tokens from a key")
    group = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    parser = leaf(group, "derive", _derive, "derive a JWT or macaroon from a key's secret")
    _secret_source(parser, "credential")
    parser.add_argument("--algorithm", choices=("jwt", "macaroon"))
    parser.add_argument("--ttl", help="lifetime: 5m, 1h … (default 1h)")
    parser.add_argument("--scope", dest="scopes", action="append", metavar="SCOPE")
    parser.add_argument("--audience", dest="audiences", action="append", metavar="AUD")

    audit = sub.add_parser("audit", help="read the admin audit log")
    group = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    _listing_options(leaf(group, "list", _audit, "list audit events"))

    parser = sub.add_parser("usage", parents=[common], help="a key's verifications over time",
                            description="a key's verifications over time, by outcome")
    parser.set_defaults(admin=_usage)
    key_id(parser)
    parser.add_argument("--interval", choices=("minute", "hour", "day"))
    parser.add_argument("--start-time", metavar="RFC3339")
    parser.add_argument("--end-time", metavar="RFC3339")


def handles(args: argparse.Namespace) -> bool:
    """True for the commands of this module."""
    return hasattr(args, "admin")


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; its exit code (see the module's docstring)."""
    try:
        api = Api(_base_url(args.url), _token(args.token_file))
        result: Result = args.admin(api, args)
    except CliError as exc:
        print(f"gateway: {_clean(exc.message)}", file=sys.stderr)
        return exc.exit_code
    text = (json.dumps(result.doc, indent=2, ensure_ascii=False) if args.output == "json"
            else "\n".join(result.lines))
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `gateway keys list --all | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return OK
