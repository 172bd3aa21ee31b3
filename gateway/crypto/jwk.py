"""JSON Web Keys: generation, JWK dicts (private and public form), PEM and URI loading.

Every key operation goes through ``cryptography`` and PyJWT's algorithm classes; nothing
here is hand-rolled. A :class:`Jwk` binds one key to exactly one ``alg``: that ``alg`` is
the only algorithm a token may claim when it is checked against the key (the allow-list
that stops ``alg=none`` and HS/RS key confusion).

    ALGORITHMS        alg → (kty, accepted curves) for every alg a stored key may carry
    GENERATE          the algs :func:`generate` makes (Ory's five plus EdDSA)
    SIGNING           the algs a JWS may be signed or verified with

Loading from configuration (``GATEWAY_SIGNING_KEYS`` entries):

    file://<path>             a file holding a JWK, a JWK set or a PEM key
    base64://<base64>         the same content, base64 (standard or url-safe) encoded
    https://host/path         fetched with urllib (short timeout, 1 MiB cap)

Error messages name the entry but never echo key material (a ``base64://`` URI *is* the
secret, so it is shown as ``base64://…``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
)
KeyMaterial: TypeAlias = PrivateKey | PublicKey | bytes  # bytes: a symmetric (oct) key

_RSA = ("RSA", ())
ALGORITHMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "EdDSA": ("OKP", ("Ed25519", "Ed448")),
    "ES256": ("EC", ("P-256",)),
    "ES384": ("EC", ("P-384",)),
    "ES512": ("EC", ("P-521",)),
    "RS256": _RSA, "RS384": _RSA, "RS512": _RSA,
    "PS256": _RSA, "PS384": _RSA, "PS512": _RSA,
    "HS256": ("oct", ()), "HS384": ("oct", ()), "HS512": ("oct", ()),
    # encryption algorithms a stored (``use: enc``) key may name; never used to sign
    "RSA-OAEP": _RSA, "RSA-OAEP-256": _RSA,
    "ECDH-ES": ("EC", ("P-256", "P-384", "P-521")),
}
SIGNING = frozenset(a for a in ALGORITHMS if not a.startswith(("RSA-", "ECDH")))
GENERATE = ("EdDSA", "ES256", "ES512", "RS256", "HS256", "HS512")
USES = ("sig", "enc")

MIN_RSA_BITS = 2048
_MIN_OCT_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2: ≥ hash size
_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
_CURVE_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# public members (beyond the key itself) that a stored key keeps
_EXTRA_MEMBERS = ("x5c", "x5t", "x5t#S256", "x5u", "key_ops")
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                       "OKP": ("crv", "kty", "x"), "oct": ("k", "kty")}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_FETCH_BYTES = 1 << 20


class JwkError(ValueError):
    """A key (or key document) is malformed, unsupported or too weak."""


@dataclass(frozen=True, repr=False, eq=False)
class Jwk:
    """One key bound to one algorithm. ``repr`` never shows key material."""

    kid: str
    alg: str
    use: str
    key: KeyMaterial
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kty(self) -> str:
        return ALGORITHMS[self.alg][0]

    @property
    def is_symmetric(self) -> bool:
        return isinstance(self.key, bytes)

    @property
    def is_private(self) -> bool:
        """True for private asymmetric keys and for symmetric keys (which are secret)."""
        return isinstance(self.key, bytes | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                          | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)

    def public_key(self) -> PublicKey | None:
        """The public half; None for a symmetric key, which has none."""
        if isinstance(self.key, bytes):
            return None
        if isinstance(self.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
            return self.key.public_key()
        return self.key

    def verification_key(self) -> PublicKey | bytes:
        """What PyJWT verifies a signature with: the public key, or the shared secret."""
        public = self.public_key()
        if public is None:
            assert isinstance(self.key, bytes)
            return self.key
        return public

    def signing_key(self) -> PrivateKey | bytes:
        """The private key (or shared secret); JwkError when only the public half is held."""
        if not self.is_private:
            raise JwkError(f"key {self.kid!r} has no private part")
        return self.key  # type: ignore[return-value]

    def public(self) -> Jwk | None:
        """This key without its private part; None for a symmetric key."""
        public = self.public_key()
        if public is None:
            return None
        return Jwk(self.kid, self.alg, self.use, public, self.extra)

    def to_dict(self, *, private: bool = True) -> dict[str, Any] | None:
        """RFC 7517 members. ``private=False`` gives the public form (None for ``oct``)."""
        if private:
            material = _members(self.key)
        else:
            public = self.public_key()
            if public is None:
                return None
            material = _members(public)
        out: dict[str, Any] = {"kty": self.kty, "kid": self.kid, "use": self.use,
                               "alg": self.alg}
        out.update((k, v) for k, v in material.items() if k not in ("kty", "key_ops"))
        out.update(self.extra)
        return out

    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 thumbprint of the public key (of the secret for ``oct``)."""
        return thumbprint(self.to_dict(private=self.is_symmetric) or {})

    def __repr__(self) -> str:
        return (f"Jwk(kid={self.kid!r}, alg={self.alg!r}, use={self.use!r}, "
                f"private={self.is_private})")


def _members(key: KeyMaterial) -> dict[str, Any]:
    if isinstance(key, bytes):
        return dict(HMACAlgorithm.to_jwk(key, as_dict=True))
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return dict(RSAAlgorithm.to_jwk(key, as_dict=True))
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return dict(ECAlgorithm.to_jwk(key, as_dict=True))
    return dict(OKPAlgorithm.to_jwk(key, as_dict=True))


def thumbprint(members: Mapping[str, Any]) -> str:
    required = _THUMBPRINT_MEMBERS.get(str(members.get("kty")))
    if required is None:
        raise JwkError(f"cannot take the thumbprint of kty {members.get('kty')!r}")
    canonical = json.dumps({k: members[k] for k in required}, separators=(",", ":"),
                           sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# -- generation ------------------------------------------------------------------------


def generate(alg: str, kid: str | None = None, use: str = "sig", *,
             rsa_bits: int = MIN_RSA_BITS) -> Jwk:
    """A fresh key for ``alg`` (one of :data:`GENERATE`); ``kid`` defaults to the thumbprint."""
    if alg not in GENERATE:
        raise JwkError(f"cannot generate keys for alg {alg!r}; supported: "
                       f"{', '.join(GENERATE)}")
    if use not in USES:
        raise JwkError(f"use must be one of {', '.join(USES)}, got {use!r}")
    key: KeyMaterial
    if alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    elif alg in _CURVES:
        key = ec.generate_private_key(_CURVES[alg])
    elif alg.startswith("RS"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=max(rsa_bits,
                                                                            MIN_RSA_BITS))
    else:
        import secrets

        key = secrets.token_bytes(_MIN_OCT_BYTES[alg])
    jwk = Jwk(kid or "", alg, use, key)
    return jwk if kid else Jwk(jwk.thumbprint(), alg, use, key)


# -- parsing ---------------------------------------------------------------------------


def _str_member(data: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise JwkError(f"JWK member {name!r} is required")
        return ""
    if not isinstance(value, str):
        raise JwkError(f"JWK member {name!r} must be a string")
    return value


def from_dict(data: Mapping[str, Any], *, default_kid: str | None = None) -> Jwk:
    """Parse and validate one JWK; ``kty``/``crv`` must agree with ``alg``."""
    if not isinstance(data, Mapping):
        raise JwkError("a JWK must be a JSON object")
    kty = _str_member(data, "kty")
    alg = _str_member(data, "alg")
    use = _str_member(data, "use")
    kid = _str_member(data, "kid", required=default_kid is None) or (default_kid or "")
    if alg not in ALGORITHMS:
        raise JwkError(f"unsupported alg {alg!r}")
    if use not in USES:
        raise JwkError(f"use must be one of {', '.join(USES)}, got {use!r}")
    want_kty, curves = ALGORITHMS[alg]
    if kty != want_kty:
        raise JwkError(f"alg {alg} needs kty {want_kty}, got {kty!r}")
    if curves and data.get("crv") not in curves:
        raise JwkError(f"alg {alg} needs crv {' or '.join(curves)}, got {data.get('crv')!r}")
    members = {k: v for k, v in data.items() if k not in _EXTRA_MEMBERS}
    try:
        key: KeyMaterial
        if kty == "RSA":
            key = RSAAlgorithm.from_jwk(members)
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(members)
        elif kty == "OKP":
            key = OKPAlgorithm.from_jwk(members)
        else:
            key = HMACAlgorithm.from_jwk(members)
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise JwkError(f"JWK {kid!r} is not a valid {kty} key: {_safe(exc)}") from None
    _check_strength(alg, key, kid)
    extra = {k: data[k] for k in _EXTRA_MEMBERS if k in data}
    if "x5c" in extra and (not isinstance(extra["x5c"], list)
                           or not all(isinstance(c, str) for c in extra["x5c"])):
        raise JwkError("JWK member 'x5c' must be an array of strings")
    return Jwk(kid, alg, use, key, extra)


def _safe(exc: Exception) -> str:
    """An exception text with no risk of echoing key material (type name only if long)."""
    text = str(exc)
    return text if len(text) < 120 and not any(c in text for c in "{}") else type(exc).__name__


def _check_strength(alg: str, key: KeyMaterial, kid: str) -> None:
    if isinstance(key, bytes):
        if len(key) < _MIN_OCT_BYTES.get(alg, 32):
            raise JwkError(f"JWK {kid!r}: {alg} needs a key of at least "
                           f"{_MIN_OCT_BYTES.get(alg, 32)} bytes")
    elif isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise JwkError(f"JWK {kid!r}: RSA keys need at least {MIN_RSA_BITS} bits")


def has_private_members(data: Mapping[str, Any]) -> bool:
    """True when a JWK dict carries private (or symmetric) material."""
    return any(m in data for m in _PRIVATE_MEMBERS)


def rsa_public_key(n: str, e: str) -> rsa.RSAPublicKey:
    """An RSA public key from base64url ``n`` and ``e`` (at least 2048 bits)."""
    try:
        key = RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": e})
    except (InvalidKeyError, ValueError, TypeError) as exc:
        raise JwkError(f"not a valid RSA public key: {_safe(exc)}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise JwkError("expected an RSA public key")
    _check_strength("RS256", key, "")
    return key


def from_pem(data: bytes, *, kid: str | None = None, alg: str | None = None) -> Jwk:
    """A PEM private or public key; ``alg`` is inferred from the key type when not given."""
    key: KeyMaterial
    try:
        if b"PRIVATE KEY" in data:
            loaded: Any = serialization.load_pem_private_key(data, password=None)
        else:
            loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise JwkError(f"not a usable PEM key ({type(exc).__name__})") from None
    if not isinstance(loaded, PrivateKey | PublicKey):
        raise JwkError(f"unsupported PEM key type {type(loaded).__name__}")
    key = loaded
    if alg is None:
        if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            alg = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            alg = _CURVE_ALG.get(key.curve.name)
            if alg is None:
                raise JwkError(f"unsupported EC curve {key.curve.name}")
        else:
            alg = "EdDSA"
    if alg not in SIGNING or ALGORITHMS[alg][0] == "oct":
        raise JwkError(f"alg {alg!r} does not fit a PEM key")
    _check_strength(alg, key, kid or "")
    jwk = Jwk(kid or "", alg, "sig", key)
    return jwk if kid else Jwk(jwk.thumbprint(), alg, "sig", key)


def parse_document(raw: bytes) -> list[Jwk]:
    """A JWK, a JWK set (``{"keys": [...]}``) or a PEM key."""
    text = raw.strip()
    if text.startswith(b"-----BEGIN"):
        return [from_pem(text)]
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise JwkError("neither a PEM key nor JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        return [from_dict(k, default_kid=None) for k in doc["keys"]]
    if isinstance(doc, dict):
        # a lone JWK without kid gets its thumbprint, as a PEM key does
        if not doc.get("kid"):
            parsed = from_dict(doc, default_kid="")
            return [Jwk(parsed.thumbprint(), parsed.alg, parsed.use, parsed.key, parsed.extra)]
        return [from_dict(doc)]
    raise JwkError("JSON document is neither a JWK nor a JWK set")


def describe_uri(uri: str) -> str:
    """The URI as it may appear in a log or error: no inline secret, no query string."""
    if uri.startswith("base64://"):
        return "base64://…"
    return uri.split("?", 1)[0].split("#", 1)[0]


def read_uri(uri: str, *, timeout: float = 5.0) -> bytes:
    """The bytes a key URI points at."""
    if uri.startswith("file://"):
        path = uri.removeprefix("file://")
        try:
            with open(path, "rb") as fh:
                return fh.read(MAX_FETCH_BYTES + 1)
        except OSError as exc:
            raise JwkError(f"cannot read {path}: {exc.strerror}") from None
    if uri.startswith("base64://"):
        payload = uri.removeprefix("base64://").strip()
        try:
            payload_bytes = payload.encode("ascii") + b"=" * (-len(payload) % 4)
            if "-" in payload or "_" in payload:
                return base64.urlsafe_b64decode(payload_bytes)
            return base64.b64decode(payload_bytes, validate=True)
        except (ValueError, UnicodeEncodeError):
            raise JwkError("base64:// payload is not valid base64") from None
    if uri.startswith("https://"):
        request = urllib.request.Request(
            uri, headers={"Accept": "application/json, application/x-pem-file"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                body: bytes = resp.read(MAX_FETCH_BYTES + 1)
        except OSError as exc:
            raise JwkError(f"cannot fetch {describe_uri(uri)}: {type(exc).__name__}") from None
        if len(body) > MAX_FETCH_BYTES:
            raise JwkError(f"{describe_uri(uri)} is larger than {MAX_FETCH_BYTES} bytes")
        return body
    raise JwkError("key URIs must start with file://, base64:// or https://")


def load_uri(uri: str, *, timeout: float = 5.0) -> list[Jwk]:
    """The keys a configuration URI names (see the module docstring)."""
    raw = read_uri(uri, timeout=timeout)
    if len(raw) > MAX_FETCH_BYTES:
        raise JwkError(f"{describe_uri(uri)} is larger than {MAX_FETCH_BYTES} bytes")
    return parse_document(raw)
