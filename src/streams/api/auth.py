"""Credentials to principals: bearer JWTs (PyJWT) and hashed API keys.

Keys: an HS256 secret, one PEM public key, or a JWKS file of public keys chosen by the
token's ``kid`` (``JwksVerifier``). A JWT must carry ``sub``, ``exp``, ``iss`` and ``aud``
(the configured issuer and audience); ``nbf`` and ``exp`` are checked with ``leeway_s`` of
clock skew. One algorithm is accepted per key (HS256 for a secret, RS256 or ES256 from
the public key's type), so a token cannot choose its own (no ``none``, no HS256 signed
with the public key).
An API key is looked up by its SHA-256 hash; every stored hash is compared in constant
time (``hmac.compare_digest``), with no early exit. Failures are ``AuthFailure`` whose
``reason`` is safe to show the caller (it never contains the credential).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from streams.api.roles import Principal, Role, effective_roles
from streams.errors import ConfigError

MAX_CREDENTIAL_CHARS = 8192
_REQUIRED_CLAIMS = ["sub", "exp", "iss", "aud"]


class AuthFailure(Exception):
    """No usable credential. ``missing``: none was sent (no ``error`` in the challenge)."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


def principal_from_claims(claims: dict[str, Any], via: str) -> Principal:
    """The principal a verified token's claims describe; AuthFailure for malformed claims."""
    sub = claims.get("sub")
    roles = claims.get("roles", [])
    tenant = claims.get("tenant")
    if not isinstance(sub, str) or not sub:
        raise AuthFailure("token claim 'sub' must be a non-empty string")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthFailure("token claim 'roles' must be a list of strings")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise AuthFailure("token claim 'tenant' must be a non-empty string")
    return Principal(sub, effective_roles(roles), tenant, via)


class JwtVerifier:
    """Verifies bearer tokens signed with one key and one algorithm."""

    def __init__(
        self, key: Any, algorithm: str, *, issuer: str, audience: str, leeway_s: float
    ) -> None:
        self._key = key
        self.algorithm = algorithm
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s

    @classmethod
    def from_public_key_file(
        cls, path: Path, *, issuer: str, audience: str, leeway_s: float
    ) -> JwtVerifier:
        """RS256 for an RSA key, ES256 for an EC P-256 key; ConfigError otherwise."""
        try:
            key = load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"STREAMS_API_JWT_PUBLIC_KEY_FILE {path}: {exc}") from None
        algorithm = _algorithm_for(key)
        if algorithm is None:
            raise ConfigError(
                f"STREAMS_API_JWT_PUBLIC_KEY_FILE {path}: need an RSA (>= 2048 bits) "
                "or EC P-256 public key"
            )
        return cls(key, algorithm, issuer=issuer, audience=audience, leeway_s=leeway_s)

    def verify(self, token: str) -> Principal:
        return self._decode(token, self._key, self.algorithm)

    def _decode(self, token: str, key: Any, algorithm: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway_s,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AuthFailure("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthFailure("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthFailure("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthFailure("token issuer not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthFailure("token signature invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthFailure(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise AuthFailure(f"token algorithm not accepted (expected {algorithm})") from None
        except jwt.InvalidTokenError:
            raise AuthFailure("token malformed") from None
        return principal_from_claims(claims, "jwt")


def _algorithm_for(key: Any) -> str | None:
    """RS256 for an RSA key of >= 2048 bits, ES256 for an EC P-256 key, else None."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


class JwksVerifier(JwtVerifier):
    """Verifies bearer tokens against the public keys of a JWKS file (``kid`` -> key).

    Each key's algorithm follows from its type (RS256/ES256, as for one PEM key) and must
    agree with its ``alg`` when given; a token names its key with ``kid`` (optional when
    the set holds one key). Private key material in the file is refused."""

    def __init__(
        self, keys: dict[str, tuple[Any, str]], *, issuer: str, audience: str, leeway_s: float
    ) -> None:
        super().__init__(None, "RS256/ES256", issuer=issuer, audience=audience, leeway_s=leeway_s)
        self._keys = keys

    @classmethod
    def from_jwks_file(
        cls, path: Path, *, issuer: str, audience: str, leeway_s: float
    ) -> JwksVerifier:
        where = f"STREAMS_API_JWT_JWKS_FILE {path}"
        try:
            data = json.loads(path.read_text())
            entries = data["keys"]
            if not isinstance(entries, list) or not entries:
                raise ValueError("'keys' must be a non-empty list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        keys: dict[str, tuple[Any, str]] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "d" in entry:
                raise ConfigError(f"{where}: key {i}: expected a public JWK")
            try:
                key = jwt.PyJWK.from_dict(entry).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise ConfigError(f"{where}: key {i}: {exc}") from None
            algorithm = _algorithm_for(key)
            if algorithm is None or entry.get("alg", algorithm) != algorithm:
                raise ConfigError(
                    f"{where}: key {i}: need RS256 (RSA >= 2048 bits) or ES256 (EC P-256)"
                )
            kid = entry.get("kid")
            if not isinstance(kid, str) or not kid:
                if len(entries) > 1:
                    raise ConfigError(f"{where}: key {i}: 'kid' is required in a set of keys")
                kid = ""
            if kid in keys:
                raise ConfigError(f"{where}: key {i}: duplicate kid {kid!r}")
            keys[kid] = (key, algorithm)
        return cls(keys, issuer=issuer, audience=audience, leeway_s=leeway_s)

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthFailure("token malformed") from None
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            key, algorithm = next(iter(self._keys.values()))
        elif isinstance(kid, str) and kid in self._keys:
            key, algorithm = self._keys[kid]
        else:
            raise AuthFailure("token key id (kid) not known")
        return self._decode(token, key, algorithm)


class ApiKeyEntry(BaseModel):
    """One line of ``STREAMS_API_KEYS_FILE``: the key's SHA-256 (hex) and who it is."""

    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    principal: str = Field(min_length=1)
    roles: list[Role]
    tenant: str | None = Field(default=None, min_length=1)


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest under which ``key`` is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyRing:
    entries: Sequence[ApiKeyEntry]

    @classmethod
    def from_file(cls, path: Path) -> ApiKeyRing:
        """Entries of a JSON list; ConfigError naming the file for anything unreadable."""
        try:
            data = json.loads(path.read_text())
            entries = TypeAdapter(list[ApiKeyEntry]).validate_python(data)
        except (OSError, ValueError, ValidationError) as exc:
            raise ConfigError(f"STREAMS_API_KEYS_FILE {path}: {exc}") from None
        return cls(entries)

    def verify(self, key: str) -> Principal:
        digest = hash_api_key(key).encode()
        found: ApiKeyEntry | None = None
        for entry in self.entries:  # every entry, no early exit
            if hmac.compare_digest(digest, entry.hash.encode()):
                found = entry
        if found is None:
            raise AuthFailure("API key not accepted")
        return Principal(found.principal, effective_roles(found.roles), found.tenant, "api_key")


@dataclass(frozen=True)
class Authenticator:
    """Either credential kind may be configured; a request sends exactly one."""

    jwt: JwtVerifier | None
    keys: ApiKeyRing | None

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        if authorization is not None and api_key is not None:
            raise AuthFailure("send either Authorization or X-Api-Key, not both")
        if api_key is not None:
            if self.keys is None or not api_key or len(api_key) > MAX_CREDENTIAL_CHARS:
                raise AuthFailure("API key not accepted")
            return self.keys.verify(api_key)
        if authorization is None:
            raise AuthFailure("credentials required", missing=True)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthFailure("expected 'Authorization: Bearer <token>'")
        if self.jwt is None:
            raise AuthFailure("bearer tokens are not accepted here; use X-Api-Key")
        if len(token) > MAX_CREDENTIAL_CHARS:
            raise AuthFailure("token malformed")
        return self.jwt.verify(token.strip())
