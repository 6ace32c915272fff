"""Build the ``Authenticator`` from ``ApiSettings`` (reading the key files), or, in dev
mode, from a random HS256 secret together with a token for it."""

from __future__ import annotations

import secrets
import time

import jwt
from pydantic import SecretStr

from streams.api.auth import ApiKeyRing, Authenticator, JwksVerifier, JwtVerifier
from streams.api.settings import ApiSettings

DEV_ISSUER = "streams-dev"
DEV_AUDIENCE = "streams-api"
DEV_PRINCIPAL = "dev"
DEV_TOKEN_TTL_S = 12 * 3600


def build_authenticator(settings: ApiSettings) -> tuple[Authenticator, str | None]:
    """The authenticator and, in dev mode, a viewer+admin token (else None).

    Raises ConfigError for a missing or unusable configuration (``ApiSettings.check_auth``).
    """
    settings.check_auth()
    keys = ApiKeyRing.from_file(settings.api_keys_file) if settings.api_keys_file else None
    if settings.dev_mode:
        secret = secrets.token_urlsafe(48)
        verifier = JwtVerifier(
            secret,
            "HS256",
            issuer=DEV_ISSUER,
            audience=DEV_AUDIENCE,
            leeway_s=settings.api_jwt_leeway_s,
        )
        return Authenticator(verifier, keys), dev_token(SecretStr(secret))
    return Authenticator(_jwt_verifier(settings), keys), None


def _jwt_verifier(settings: ApiSettings) -> JwtVerifier | None:
    issuer, audience = settings.api_jwt_issuer or "", settings.api_jwt_audience or ""
    if settings.api_jwt_jwks_file is not None:
        return JwksVerifier.from_jwks_file(
            settings.api_jwt_jwks_file,
            issuer=issuer,
            audience=audience,
            leeway_s=settings.api_jwt_leeway_s,
        )
    if settings.api_jwt_public_key_file is not None:
        return JwtVerifier.from_public_key_file(
            settings.api_jwt_public_key_file,
            issuer=issuer,
            audience=audience,
            leeway_s=settings.api_jwt_leeway_s,
        )
    if settings.api_jwt_secret is not None:
        return JwtVerifier(
            settings.api_jwt_secret.get_secret_value(),
            "HS256",
            issuer=issuer,
            audience=audience,
            leeway_s=settings.api_jwt_leeway_s,
        )
    return None


def dev_token(secret: SecretStr, *, now_s: float | None = None) -> str:
    """A viewer+admin token without a tenant claim, valid for ``DEV_TOKEN_TTL_S``."""
    issued_s = int(time.time() if now_s is None else now_s)
    claims = {
        "sub": DEV_PRINCIPAL,
        "roles": ["viewer", "admin"],
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "iat": issued_s,
        "exp": issued_s + DEV_TOKEN_TTL_S,
    }
    return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")
