"""The API's settings: ``STREAMS_API_*`` (and ``STREAMS_DEV_MODE``), read once at start.

Authentication is configured by at least one of: ``STREAMS_API_JWT_SECRET`` (HS256),
``STREAMS_API_JWT_PUBLIC_KEY_FILE`` (a PEM RSA or EC public key: RS256/ES256) or
``STREAMS_API_JWT_JWKS_FILE`` (a JWKS file of such public keys, by ``kid``), each with
``STREAMS_API_JWT_ISSUER`` and ``STREAMS_API_JWT_AUDIENCE``; or ``STREAMS_API_KEYS_FILE``.
``STREAMS_DEV_MODE=true`` instead mints a random HS256 secret (and prints a token).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash output
AUTH_VARIABLES = (
    "STREAMS_API_JWT_SECRET, STREAMS_API_JWT_PUBLIC_KEY_FILE, STREAMS_API_JWT_JWKS_FILE "
    "or STREAMS_API_KEYS_FILE "
    "(or STREAMS_DEV_MODE=true for a throw-away token)"
)


class ApiSettings(BaseSettings):
    """Where the API listens and how it authenticates."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")

    api_host: str = Field(default="127.0.0.1")
    api_port: int = Field(default=8080, ge=0, le=65535, description="0 = any free port")
    api_jwt_secret: SecretStr | None = Field(default=None, description="HS256 shared secret")
    api_jwt_public_key_file: Path | None = Field(
        default=None, description="PEM public key (RSA: RS256, EC P-256: ES256)"
    )
    api_jwt_jwks_file: Path | None = Field(
        default=None, description="JWKS file of public keys (RS256/ES256), chosen by kid"
    )
    api_jwt_issuer: str | None = Field(default=None, description="required `iss` claim")
    api_jwt_audience: str | None = Field(default=None, description="required `aud` claim")
    api_jwt_leeway_s: float = Field(default=30.0, ge=0, le=600, description="clock skew")
    api_keys_file: Path | None = Field(
        default=None, description="JSON list of {hash, principal, roles, tenant}"
    )
    api_audit_max_limit: int = Field(default=1000, ge=1, le=10_000)
    dev_mode: bool = Field(default=False, description="random HS256 secret, token printed")
    api_publish_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="broker ack wait per request, then 503"
    )
    api_batch_max_events: int = Field(default=500, ge=1, le=10_000)
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    api_rate_limit_per_min: int = Field(
        default=60, ge=1, le=1_000_000, description="ingest requests per principal"
    )
    api_idempotency_max_keys: int = Field(default=100_000, ge=1, le=10_000_000)

    def check_auth(self) -> None:
        """Raise ConfigError unless exactly a usable authentication configuration is set."""
        kinds = [
            self.api_jwt_secret is not None,
            self.api_jwt_public_key_file is not None,
            self.api_jwt_jwks_file is not None,
        ]
        has_jwt = any(kinds)
        if self.dev_mode:
            if has_jwt:
                raise ConfigError(
                    "STREAMS_DEV_MODE mints its own token secret: unset STREAMS_API_JWT_SECRET, "
                    "STREAMS_API_JWT_PUBLIC_KEY_FILE and STREAMS_API_JWT_JWKS_FILE, "
                    "or turn dev mode off"
                )
            return
        if not has_jwt and self.api_keys_file is None:
            raise ConfigError(f"streams api needs an auth configuration: set {AUTH_VARIABLES}")
        if sum(kinds) > 1:
            raise ConfigError(
                "set one of STREAMS_API_JWT_SECRET, STREAMS_API_JWT_PUBLIC_KEY_FILE and "
                "STREAMS_API_JWT_JWKS_FILE, not several"
            )
        if has_jwt and not (self.api_jwt_issuer and self.api_jwt_audience):
            raise ConfigError(
                "JWT authentication needs STREAMS_API_JWT_ISSUER and STREAMS_API_JWT_AUDIENCE"
            )
        secret = self.api_jwt_secret
        if secret is not None and len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"STREAMS_API_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long"
            )
