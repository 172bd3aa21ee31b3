"""Derived tokens: JWTs signed with the keyring's signer, and macaroons, minted and checked.

Pure functions, no I/O: the caller looks up keys (``Keyring.resolve``) and parent keys
(the store) and passes them in. Verification never raises for a bad token; it returns a
:class:`TokenResult` whose :class:`Outcome` says why (``ERROR_CODES`` maps each outcome to
the wire ``VerificationErrorCode``).

JWT (compact JWS). Claims::

    iss  issuer             sub  actor id of the parent key
    aud  audiences (array; absent when unbound)
    exp  iat  nbf           seconds since the epoch
    jti  token id           key_id  id of the parent API key
    scopes  array           allowed_cidrs  the parent's IP allow-list (absent when empty)
    …custom claims; a custom claim whose name is in RESERVED_CLAIMS is dropped

Checks: the header ``alg`` must be the key's own ``alg`` (PyJWT gets a one-element
allow-list, so ``none`` and HS-with-a-public-key confusion fail), then one check per claim
(shape, ``iss``, ``exp``, ``nbf``, ``aud``, client IP), each with its own outcome.

Macaroon (``mc_`` + unpadded base64url of the binary v2 format, pymacaroons). The
identifier is ``g2.<tag>.`` then JSON ``{"v":2,"kid":<parent key id>,"jti":…,"iss":…,
"iat":…,"claims":{…}}``; custom claims live there, where a holder cannot change them. The
tag is a MAC of the JSON under a key derived from the pepper (``MACAROON_TAG_PURPOSE``),
checked before anything is looked up, so a forged macaroon costs no I/O. The root key is
``macaroon_root_key(digester.subkey(MACAROON_SUBKEY_PURPOSE), parent key id)``, so only the
gateway (which knows the pepper) can mint or verify. Macaroons of the format before the
tag (``"v":1``) no longer verify: derive them again (they are short-lived).
First-party caveats are ``<name> <op> <value>``; the whole vocabulary is ``CAVEATS``:

    key_id = <id>             must equal the identifier's kid
    actor = <id>              every actor caveat must agree
    time < <RFC 3339>         the earliest one wins
    scopes = ["a","b"]        effective scopes: the intersection of all scopes caveats
    aud = ["x"]               effective audiences: the intersection; any aud caveat binds
    ip = ["10.0.0.0/8"]       the client must be inside every ip caveat

A holder can append caveats offline (``attenuate``); each one can only narrow. Any caveat
not in the table, and any third-party caveat, fails closed. pymacaroons folds an unmet
caveat into a signature mismatch, which would hide *why* a token failed; so the HMAC chain
is checked first with every first-party caveat counted, then each caveat is evaluated here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import jwt
import orjson
from pymacaroons import MACAROON_V2, Macaroon, Verifier
from pymacaroons.exceptions import MacaroonException
from pymacaroons.serializers import BinarySerializer

from gateway.crypto.jwk import Jwk
from gateway.errors import InvalidArgument

MAX_TOKEN_BYTES = 8192
DEFAULT_LEEWAY_S = 30.0
MACAROON_PREFIX = "mc_"
MACAROON_SUBKEY_PURPOSE = "derived-macaroon/v2"
MACAROON_TAG_PURPOSE = "derived-macaroon-tag/v2"
_IDENT_START = b"g2."  # then the identifier's keyed tag (22 base64url characters), ".", JSON
RESERVED_CLAIMS = frozenset({
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "key_id", "scopes", "allowed_cidrs"})


class TokenKind(Enum):
    JWT = "jwt"
    MACAROON = "macaroon"


class Outcome(Enum):
    """Why a derived token is (not) valid."""

    VALID = "valid"
    INVALID_FORMAT = "invalid_format"          # not parseable, wrong shape, claim missing
    UNKNOWN_KEY = "unknown_key"                # JWT kid not in the keyring (after refresh)
    SIGNATURE_INVALID = "signature_invalid"    # bad signature/HMAC chain, alg not allowed
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"            # nbf in the future (beyond leeway)
    ISSUER_MISMATCH = "issuer_mismatch"
    AUDIENCE_MISMATCH = "audience_mismatch"
    IP_NOT_ALLOWED = "ip_not_allowed"
    UNKNOWN_CAVEAT = "unknown_caveat"          # macaroon caveat outside the vocabulary


ERROR_CODES: dict[Outcome, str] = {
    Outcome.VALID: "VERIFICATION_ERROR_UNSPECIFIED",
    Outcome.INVALID_FORMAT: "VERIFICATION_ERROR_INVALID_FORMAT",
    Outcome.UNKNOWN_KEY: "VERIFICATION_ERROR_SIGNATURE_INVALID",
    Outcome.SIGNATURE_INVALID: "VERIFICATION_ERROR_SIGNATURE_INVALID",
    Outcome.EXPIRED: "VERIFICATION_ERROR_EXPIRED",
    Outcome.NOT_YET_VALID: "VERIFICATION_ERROR_INVALID_FORMAT",
    Outcome.ISSUER_MISMATCH: "VERIFICATION_ERROR_SIGNATURE_INVALID",
    Outcome.AUDIENCE_MISMATCH: "VERIFICATION_ERROR_AUDIENCE_MISMATCH",
    Outcome.IP_NOT_ALLOWED: "VERIFICATION_ERROR_IP_NOT_ALLOWED",
    Outcome.UNKNOWN_CAVEAT: "VERIFICATION_ERROR_INVALID_FORMAT",
}


@dataclass(frozen=True)
class DeriveSpec:
    """What a derived token says. Times are seconds since the epoch."""

    issuer: str
    subject: str
    parent_key_id: str
    expire_time: int
    audiences: Sequence[str] = ()
    scopes: Sequence[str] = ()
    allowed_cidrs: Sequence[str] = ()
    custom_claims: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class MintedToken:
    token: str
    token_id: str
    expire_time: int
    claims: dict[str, Any]  # JWT: the payload; macaroon: identifier fields + caveat list


@dataclass(frozen=True)
class DerivedClaims:
    """What a signature-checked derived token says (also set for EXPIRED and friends)."""

    kind: TokenKind
    token_id: str
    issuer: str
    subject: str
    parent_key_id: str
    expire_time: int
    issued_at: int
    audiences: tuple[str, ...]
    scopes: tuple[str, ...]
    allowed_cidrs: tuple[str, ...]
    custom_claims: Mapping[str, Any]
    signing_key_id: str | None = None  # JWT header kid; None for macaroons
    not_before: int | None = None
    ip_constraints: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    audience_bound: bool = False  # the token names audiences (possibly none that match)

    def allows_ip(self, ip: str) -> bool:
        """True when ``ip`` is inside every CIDR list the token carries (none: any IP)."""
        constraints = self.ip_constraints or ((self.allowed_cidrs,) if self.allowed_cidrs
                                              else ())
        return all(_ip_in(ip, cidrs) for cidrs in constraints)


@dataclass(frozen=True)
class TokenResult:
    outcome: Outcome
    claims: DerivedClaims | None = None
    detail: str = ""  # internal reason, for logs; never contains secrets

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.VALID

    @property
    def parent_key_id(self) -> str | None:
        return self.claims.parent_key_id if self.claims else None

    @property
    def error_code(self) -> str:
        return ERROR_CODES[self.outcome]


def _fail(outcome: Outcome, detail: str, claims: DerivedClaims | None = None) -> TokenResult:
    return TokenResult(outcome, claims, detail)


TOKEN_STARTS = (MACAROON_PREFIX, "eyJ")  # every derived token starts with one of these


def classify(credential: str) -> TokenKind | None:
    """JWT, macaroon, or None (an API key or junk) — by shape only."""
    if credential.startswith(MACAROON_PREFIX):
        return TokenKind.MACAROON
    if credential.count(".") == 2 and credential.startswith("eyJ"):
        return TokenKind.JWT
    return None


def _ip_in(ip: str, cidrs: Sequence[str]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for cidr in cidrs:
        try:
            if addr in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            continue
    return False


def _custom(claims: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (claims or {}).items() if k not in RESERVED_CLAIMS}


def _too_large(kind: str, size: int) -> InvalidArgument:
    return InvalidArgument(f"the derived {kind} would be {size} bytes; the limit is "
                           f"{MAX_TOKEN_BYTES} (custom_claims too large?)")


def _now(now: float | None) -> float:
    return time.time() if now is None else now


# -- JWT -------------------------------------------------------------------------------


def mint_jwt(spec: DeriveSpec, signer: Jwk, *, now: float | None = None,
             token_id: str | None = None) -> MintedToken:
    """A compact JWS signed with ``signer`` (its own ``alg``); InvalidArgument if > 8 KiB."""
    issued = int(_now(now))
    jti = token_id or secrets.token_urlsafe(16)
    payload: dict[str, Any] = _custom(spec.custom_claims)
    payload.update(iss=spec.issuer, sub=spec.subject, exp=int(spec.expire_time), iat=issued,
                   nbf=issued, jti=jti, key_id=spec.parent_key_id, scopes=list(spec.scopes))
    if spec.audiences:
        payload["aud"] = list(spec.audiences)
    if spec.allowed_cidrs:
        payload["allowed_cidrs"] = list(spec.allowed_cidrs)
    token = jwt.encode(payload, signer.signing_key(), algorithm=signer.alg,
                       headers={"kid": signer.kid, "typ": "JWT"})
    if len(token) > MAX_TOKEN_BYTES:
        raise _too_large("JWT", len(token))
    return MintedToken(token, jti, int(spec.expire_time), payload)


def jwt_key_id(token: str) -> str | None:
    """The (unverified) ``kid`` of a JWT header; None when there is none or no JWT."""
    if len(token) > MAX_TOKEN_BYTES:
        return None
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) and kid else None


_JWT = jwt.PyJWT(options={"verify_signature": True, "verify_exp": False,
                          "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                          "verify_iss": False, "verify_sub": False, "verify_jti": False,
                          "require": []})


def _str_list(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"claim {name!r} must be a string array")


def _jwt_claims(payload: Mapping[str, Any], kid: str) -> DerivedClaims:
    """The claim-shape check: every claim we rely on is present and of the right type."""
    for name in ("iss", "sub", "jti", "key_id"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise ValueError(f"claim {name!r} is missing or not a string")
    for name in ("exp", "iat"):
        if not isinstance(payload.get(name), int) or isinstance(payload[name], bool):
            raise ValueError(f"claim {name!r} is missing or not an integer")
    nbf = payload.get("nbf")
    if nbf is not None and (not isinstance(nbf, int) or isinstance(nbf, bool)):
        raise ValueError("claim 'nbf' is not an integer")
    return DerivedClaims(
        kind=TokenKind.JWT, token_id=payload["jti"], issuer=payload["iss"],
        subject=payload["sub"], parent_key_id=payload["key_id"],
        expire_time=payload["exp"], issued_at=payload["iat"], not_before=nbf,
        audiences=_str_list(payload["aud"], "aud") if "aud" in payload else (),
        scopes=_str_list(payload.get("scopes", []), "scopes"),
        allowed_cidrs=_str_list(payload.get("allowed_cidrs", []), "allowed_cidrs"),
        custom_claims=_custom(payload), signing_key_id=kid, audience_bound="aud" in payload)


def _check_issuer(c: DerivedClaims, issuer: str) -> str | None:
    return None if hmac.compare_digest(c.issuer, issuer) else f"iss {c.issuer!r} is not ours"


def _check_expiry(c: DerivedClaims, now: float, leeway: float) -> str | None:
    return f"expired at {c.expire_time}" if c.expire_time <= now - leeway else None


def _check_not_before(c: DerivedClaims, now: float, leeway: float) -> str | None:
    if c.not_before is not None and c.not_before > now + leeway:
        return f"not valid before {c.not_before}"
    return None


def _check_audience(c: DerivedClaims, expected: Sequence[str], bound: bool) -> str | None:
    """Expected audiences given: the token must name one. None given: it must be unbound."""
    if not expected:
        return "token is audience-bound; the caller expects none" if bound else None
    if not set(c.audiences) & set(expected):
        return "no expected audience is named by the token"
    return None


def _check_ip(c: DerivedClaims, client_ip: str | None) -> str | None:
    """Fails closed: a token bound to addresses needs a client address (None when the
    forwarded one did not parse) inside every bound."""
    if not (c.ip_constraints or c.allowed_cidrs):
        return None
    if client_ip is None:
        return "the token is bound to client addresses and the client address is unknown"
    return None if c.allows_ip(client_ip) else f"client ip {client_ip} is not allowed"


def _check_claims(c: DerivedClaims, *, issuer: str, expected_audiences: Sequence[str],
                  now: float, leeway: float, client_ip: str | None, bound: bool
                  ) -> TokenResult:
    checks: tuple[tuple[Outcome, Callable[[], str | None]], ...] = (
        (Outcome.ISSUER_MISMATCH, lambda: _check_issuer(c, issuer)),
        (Outcome.EXPIRED, lambda: _check_expiry(c, now, leeway)),
        (Outcome.NOT_YET_VALID, lambda: _check_not_before(c, now, leeway)),
        (Outcome.AUDIENCE_MISMATCH, lambda: _check_audience(c, expected_audiences, bound)),
        (Outcome.IP_NOT_ALLOWED, lambda: _check_ip(c, client_ip)),
    )
    for outcome, check in checks:
        reason = check()
        if reason is not None:
            return _fail(outcome, reason, c)
    return TokenResult(Outcome.VALID, c)


def check_claims(c: DerivedClaims, *, issuer: str, expected_audiences: Sequence[str] = (),
                 now: float | None = None, leeway: float = DEFAULT_LEEWAY_S,
                 client_ip: str | None = None) -> TokenResult:
    """The claim checks alone, for a token whose signature was verified before (the
    verifier's cache of verified tokens); the same checks ``verify_*`` end with."""
    return _check_claims(c, issuer=issuer, expected_audiences=expected_audiences,
                         now=_now(now), leeway=leeway, client_ip=client_ip,
                         bound=c.audience_bound)


def verify_jwt(token: str, key: Jwk | None, *, issuer: str,
               expected_audiences: Sequence[str] = (), now: float | None = None,
               leeway: float = DEFAULT_LEEWAY_S, client_ip: str | None = None) -> TokenResult:
    """Check a derived JWT against ``key`` (from ``Keyring.resolve(jwt_key_id(token))``).

    ``key=None`` (kid unknown even after a refresh) gives UNKNOWN_KEY. ``client_ip=None``
    skips the IP check (the result still carries ``allowed_cidrs``/``allows_ip``).
    """
    if len(token) > MAX_TOKEN_BYTES or not token.isascii():
        return _fail(Outcome.INVALID_FORMAT, "token is too long or not ASCII")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        return _fail(Outcome.INVALID_FORMAT, f"bad JWT header: {type(exc).__name__}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        return _fail(Outcome.INVALID_FORMAT, "JWT header has no kid")
    if key is None:
        return _fail(Outcome.UNKNOWN_KEY, f"kid {kid!r} is not a known signing key")
    if key.kid != kid:
        return _fail(Outcome.UNKNOWN_KEY, f"kid {kid!r} does not name the key given")
    if header.get("alg") != key.alg:
        return _fail(Outcome.SIGNATURE_INVALID,
                     f"alg {header.get('alg')!r} is not allowed for key {kid!r}")
    try:
        decoded = _JWT.decode_complete(token, key.verification_key(), algorithms=[key.alg])
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as exc:
        return _fail(Outcome.SIGNATURE_INVALID, f"signature check failed: {type(exc).__name__}")
    except jwt.PyJWTError as exc:
        return _fail(Outcome.INVALID_FORMAT, f"bad JWT: {type(exc).__name__}")
    payload = decoded["payload"]
    try:
        claims = _jwt_claims(payload, kid)
    except ValueError as exc:
        return _fail(Outcome.INVALID_FORMAT, str(exc))
    return _check_claims(claims, issuer=issuer, expected_audiences=expected_audiences,
                         now=_now(now), leeway=leeway, client_ip=client_ip,
                         bound=claims.audience_bound)


# -- macaroons -------------------------------------------------------------------------


def macaroon_root_key(subkey: bytes, parent_key_id: str) -> bytes:
    """The root key of every macaroon derived from one parent key.

    ``subkey`` is ``digester.subkey(MACAROON_SUBKEY_PURPOSE)`` of the pepper that minted
    it. Revoking, rotating or deleting the parent retires its macaroons: the parent is
    judged on every verify.
    """
    return hmac.new(subkey, b"macaroon-root/v2\x00" + parent_key_id.encode(),
                    hashlib.sha256).digest()


def _tag(tag_key: bytes, ident: bytes) -> bytes:
    return base64.urlsafe_b64encode(
        hmac.new(tag_key, ident, hashlib.sha256).digest()[:16]).rstrip(b"=")


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> int:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError("time caveat needs an explicit offset")
    return int(dt.timestamp())


def _parse_str_list(value: str) -> tuple[str, ...]:
    parsed = orjson.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
        raise ValueError("expected a JSON array of strings")
    return tuple(parsed)


def _parse_cidrs(value: str) -> tuple[str, ...]:
    cidrs = _parse_str_list(value)
    for cidr in cidrs:
        ipaddress.ip_network(cidr, strict=False)
    return cidrs


def _parse_text(value: str) -> str:
    if not value:
        raise ValueError("empty value")
    return value


@dataclass
class _CaveatState:
    """What the caveats of one macaroon add up to; each fold can only narrow it."""

    key_ids: set[str] = field(default_factory=set)
    actors: set[str] = field(default_factory=set)
    expire_time: int | None = None
    scopes: tuple[str, ...] | None = None
    audiences: tuple[str, ...] | None = None
    ip_constraints: list[tuple[str, ...]] = field(default_factory=list)


def _narrow(current: tuple[str, ...] | None, new: tuple[str, ...]) -> tuple[str, ...]:
    return new if current is None else tuple(v for v in current if v in new)


def _fold_time(s: _CaveatState, v: Any) -> None:
    s.expire_time = v if s.expire_time is None else min(s.expire_time, v)


def _fold_scopes(s: _CaveatState, v: Any) -> None:
    s.scopes = _narrow(s.scopes, v)


def _fold_audiences(s: _CaveatState, v: Any) -> None:
    s.audiences = _narrow(s.audiences, v)


# (name, operator) → (parse the value, fold it into the state). The whole vocabulary.
CAVEATS: dict[tuple[str, str], tuple[Callable[[str], Any],
                                     Callable[[_CaveatState, Any], None]]] = {
    ("key_id", "="): (_parse_text, lambda s, v: s.key_ids.add(v)),
    ("actor", "="): (_parse_text, lambda s, v: s.actors.add(v)),
    ("time", "<"): (_parse_time, _fold_time),
    ("scopes", "="): (_parse_str_list, _fold_scopes),
    ("aud", "="): (_parse_str_list, _fold_audiences),
    ("ip", "="): (_parse_cidrs, lambda s, v: s.ip_constraints.append(v)),
}


def caveat(name: str, op: str, value: Any) -> str:
    """One first-party caveat predicate in the vocabulary's syntax."""
    if (name, op) not in CAVEATS:
        raise ValueError(f"unknown caveat {name} {op}")
    if name == "time":
        text = _rfc3339(int(value))
    elif isinstance(value, list | tuple):
        text = orjson.dumps(list(value)).decode()
    else:
        text = str(value)
    return f"{name} {op} {text}"


def _encode(m: Macaroon) -> str:
    raw = BinarySerializer().serialize_raw(m)
    return MACAROON_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class MacaroonHead:
    """A parsed (not yet verified) macaroon: enough to find its parent key."""

    macaroon: Macaroon
    parent_key_id: str
    token_id: str
    issuer: str
    issued_at: int
    custom_claims: Mapping[str, Any]
    ident: bytes = b""  # the identifier's JSON, which its tag covers
    tag: bytes = b""

    def generation(self, tag_keys: Sequence[bytes]) -> int | None:
        """Which of ``tag_keys`` (one per pepper, the current first) made the identifier's
        tag, or None: a macaroon this gateway did not mint, refused before any lookup."""
        for generation, key in enumerate(tag_keys):
            if hmac.compare_digest(_tag(key, self.ident), self.tag):
                return generation
        return None


def inspect_macaroon(token: str) -> MacaroonHead | None:
    """Parse without verifying; None when the token is not one of our macaroons."""
    if not token.startswith(MACAROON_PREFIX) or len(token) > MAX_TOKEN_BYTES:
        return None
    body = token[len(MACAROON_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        m = BinarySerializer().deserialize_raw(raw)
        start, tag, ident_json = m.identifier_bytes.split(b".", 2)
        ident = orjson.loads(ident_json)
    except (binascii.Error, ValueError, MacaroonException, IndexError, TypeError,
            UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    if (start + b"." != _IDENT_START or not isinstance(ident, dict) or ident.get("v") != 2
            or not isinstance(ident.get("kid"), str) or not isinstance(ident.get("jti"), str)
            or not isinstance(ident.get("iss"), str) or not isinstance(ident.get("iat"), int)
            or not isinstance(ident.get("claims", {}), dict)):
        return None
    return MacaroonHead(m, ident["kid"], ident["jti"], ident["iss"], ident["iat"],
                        ident.get("claims", {}), ident_json, tag)


def mint_macaroon(spec: DeriveSpec, root_key: bytes, *, tag_key: bytes,
                  now: float | None = None, token_id: str | None = None) -> MintedToken:
    """A macaroon carrying ``spec`` as caveats; InvalidArgument if over 8 KiB. ``tag_key``
    (``digester.subkey(MACAROON_TAG_PURPOSE)``) tags the identifier, so a forged macaroon
    is refused before its parent is looked up."""
    issued = int(_now(now))
    jti = token_id or secrets.token_urlsafe(16)
    ident = {"v": 2, "kid": spec.parent_key_id, "jti": jti, "iss": spec.issuer,
             "iat": issued, "claims": _custom(spec.custom_claims)}
    ident_json = orjson.dumps(ident)
    m = Macaroon(location=spec.issuer, key=root_key, version=MACAROON_V2,
                 identifier=_IDENT_START + _tag(tag_key, ident_json) + b"." + ident_json)
    predicates = [caveat("key_id", "=", spec.parent_key_id),
                  caveat("actor", "=", spec.subject),
                  caveat("time", "<", spec.expire_time),
                  caveat("scopes", "=", list(spec.scopes))]
    if spec.audiences:
        predicates.append(caveat("aud", "=", list(spec.audiences)))
    if spec.allowed_cidrs:
        predicates.append(caveat("ip", "=", list(spec.allowed_cidrs)))
    for predicate in predicates:
        m.add_first_party_caveat(predicate)
    token = _encode(m)
    if len(token) > MAX_TOKEN_BYTES:
        raise _too_large("macaroon", len(token))
    return MintedToken(token, jti, int(spec.expire_time), {**ident, "caveats": predicates})


def attenuate(token: str, *predicates: str) -> str:
    """What a holder does offline: append first-party caveats (they can only narrow)."""
    head = inspect_macaroon(token)
    if head is None:
        raise ValueError("not a macaroon")
    m = head.macaroon.copy()
    for predicate in predicates:
        m.add_first_party_caveat(predicate)
    return _encode(m)


def _fold_caveats(head: MacaroonHead) -> tuple[_CaveatState | None, TokenResult | None]:
    state = _CaveatState()
    for cav in head.macaroon.first_party_caveats():
        try:
            predicate = cav.caveat_id_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return None, _fail(Outcome.UNKNOWN_CAVEAT, "caveat is not UTF-8")
        name, _, rest = predicate.partition(" ")
        op, _, value = rest.partition(" ")
        entry = CAVEATS.get((name, op))
        if entry is None:
            return None, _fail(Outcome.UNKNOWN_CAVEAT, f"unknown caveat {name!r} {op!r}")
        parse, fold = entry
        try:
            fold(state, parse(value))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            return None, _fail(Outcome.INVALID_FORMAT, f"malformed {name!r} caveat")
    return state, None


def verify_macaroon(token: str | MacaroonHead, root_key: bytes, *, issuer: str,
                    expected_audiences: Sequence[str] = (), now: float | None = None,
                    leeway: float = DEFAULT_LEEWAY_S, client_ip: str | None = None
                    ) -> TokenResult:
    """Check a macaroon against the root key of its parent (``macaroon_root_key``).

    Accepts the token or the :class:`MacaroonHead` from ``inspect_macaroon`` (to avoid
    parsing twice). Same outcome semantics as :func:`verify_jwt`.
    """
    head = token if isinstance(token, MacaroonHead) else inspect_macaroon(token)
    if head is None:
        return _fail(Outcome.INVALID_FORMAT, "not a well-formed macaroon")
    if head.macaroon.third_party_caveats():
        return _fail(Outcome.UNKNOWN_CAVEAT, "third-party caveats are not supported")
    verifier = Verifier()
    verifier.satisfy_general(lambda _predicate: True)  # semantics checked below, see docstring
    try:
        verifier.verify(head.macaroon, root_key)
    except (MacaroonException, TypeError, ValueError) as exc:
        return _fail(Outcome.SIGNATURE_INVALID, f"HMAC chain check failed: {type(exc).__name__}")
    state, failure = _fold_caveats(head)
    if failure is not None or state is None:
        return failure or _fail(Outcome.INVALID_FORMAT, "no caveats")
    if state.key_ids != {head.parent_key_id}:
        return _fail(Outcome.INVALID_FORMAT, "key_id caveats do not match the identifier")
    if len(state.actors) != 1:
        return _fail(Outcome.INVALID_FORMAT, "actor caveats are missing or disagree")
    if state.expire_time is None or state.scopes is None:
        return _fail(Outcome.INVALID_FORMAT, "time or scopes caveat is missing")
    claims = DerivedClaims(
        kind=TokenKind.MACAROON, token_id=head.token_id, issuer=head.issuer,
        subject=next(iter(state.actors)), parent_key_id=head.parent_key_id,
        expire_time=state.expire_time, issued_at=head.issued_at,
        audiences=state.audiences or (), scopes=state.scopes,
        allowed_cidrs=state.ip_constraints[0] if state.ip_constraints else (),
        custom_claims=head.custom_claims, ip_constraints=tuple(state.ip_constraints),
        audience_bound=state.audiences is not None)
    return _check_claims(claims, issuer=issuer, expected_audiences=expected_audiences,
                         now=_now(now), leeway=leeway, client_ip=client_ip,
                         bound=claims.audience_bound)
