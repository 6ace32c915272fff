"""The API's pure authentication logic: roles, JWT verification, API keys, settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from streams.api.auth import (
    ApiKeyRing,
    Authenticator,
    AuthFailure,
    JwtVerifier,
    hash_api_key,
)
from streams.api.auth_setup import DEV_AUDIENCE, DEV_ISSUER, build_authenticator
from streams.api.roles import Role, effective_roles
from streams.api.settings import ApiSettings
from streams.errors import ConfigError

SECRET = "s" * 40
ISS, AUD = "https://issuer.test", "streams-api"


class FromNow(int):
    """A time claim given as seconds from the moment the token is made (parameters are
    built at collection, which may be minutes before the test runs)."""


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    overrides = {k: now + v if isinstance(v, FromNow) else v for k, v in overrides.items()}
    base: dict[str, Any] = {
        "sub": "ann",
        "roles": ["viewer"],
        "tenant": "acme",
        "iss": ISS,
        "aud": AUD,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_verifier(leeway_s: float = 0.0) -> JwtVerifier:
    return JwtVerifier(SECRET, "HS256", issuer=ISS, audience=AUD, leeway_s=leeway_s)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["admin"], {Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.PRODUCER}),
        (["operator"], {Role.OPERATOR, Role.VIEWER}),
        (["viewer"], {Role.VIEWER}),
        (["producer"], {Role.PRODUCER}),
        (["producer", "viewer"], {Role.PRODUCER, Role.VIEWER}),
        (["root", "VIEWER"], set()),
        ([], set()),
    ],
)
def test_roles_imply_lower_roles_and_unknown_names_grant_nothing(
    names: list[str], expected: set[Role]
) -> None:
    assert effective_roles(names) == expected


def test_a_valid_hs256_token_gives_its_principal() -> None:
    p = hs_verifier().verify(jwt.encode(claims(roles=["operator"]), SECRET, "HS256"))
    assert (p.id, p.tenant, p.via) == ("ann", "acme", "jwt")
    assert p.roles == {Role.OPERATOR, Role.VIEWER}


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"exp": FromNow(-10)}, SECRET, "token expired"),
        ({"nbf": FromNow(60)}, SECRET, "token not yet valid"),
        ({"aud": "someone-else"}, SECRET, "token audience not accepted"),
        ({"iss": "https://evil.test"}, SECRET, "token issuer not accepted"),
        ({}, "x" * 40, "token signature invalid"),
        ({"exp": None}, SECRET, "token lacks the 'exp' claim"),
        ({"aud": None}, SECRET, "token lacks the 'aud' claim"),
        ({"sub": None}, SECRET, "token lacks the 'sub' claim"),
        ({"sub": ""}, SECRET, "token claim 'sub' must be a non-empty string"),
        ({"roles": "admin"}, SECRET, "token claim 'roles' must be a list of strings"),
        ({"tenant": 7}, SECRET, "token claim 'tenant' must be a non-empty string"),
    ],
)
def test_bad_tokens_fail_with_a_reason(overrides: dict[str, Any], key: str, reason: str) -> None:
    token = jwt.encode(claims(**overrides), key, "HS256")
    with pytest.raises(AuthFailure) as failed:
        hs_verifier().verify(token)
    assert failed.value.reason == reason
    assert not failed.value.missing


def test_leeway_admits_clock_skew_and_no_more() -> None:
    now = int(time.time())
    slightly = jwt.encode(claims(exp=now - 5, nbf=now + 5), SECRET, "HS256")
    assert hs_verifier(leeway_s=30).verify(slightly).id == "ann"
    far = jwt.encode(claims(exp=now - 60), SECRET, "HS256")
    with pytest.raises(AuthFailure, match="expired"):
        hs_verifier(leeway_s=30).verify(far)


def test_unsigned_and_garbage_tokens_are_refused() -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(AuthFailure, match="algorithm not accepted"):
        hs_verifier().verify(unsigned)
    with pytest.raises(AuthFailure, match="malformed"):
        hs_verifier().verify("not.a.jwt")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hs256_by_hand(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token PyJWT would refuse to make (its key is a PEM public key)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(key, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + _b64(mac)).decode()


def _pem(public_key: Any, path: Path) -> Path:
    path.write_bytes(
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.mark.parametrize(
    ("private", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_public_key_files_select_their_algorithm_and_refuse_hs256_confusion(
    private: Any, algorithm: str, tmp_path: Path
) -> None:
    path = _pem(private.public_key(), tmp_path / "key.pem")
    verifier = JwtVerifier.from_public_key_file(path, issuer=ISS, audience=AUD, leeway_s=0)
    assert verifier.algorithm == algorithm
    assert verifier.verify(jwt.encode(claims(), private, algorithm)).id == "ann"
    other = type(private).__name__  # a fresh key of the same kind signs a refused token
    fresh = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if "RSA" in other
        else ec.generate_private_key(ec.SECP256R1())
    )
    with pytest.raises(AuthFailure, match="signature invalid"):
        verifier.verify(jwt.encode(claims(), fresh, algorithm))
    # the classic confusion: HS256 "signed" with the public key's PEM text
    forged = hs256_by_hand(claims(), path.read_bytes())
    with pytest.raises(AuthFailure, match="algorithm not accepted"):
        verifier.verify(forged)


def test_a_public_key_file_of_the_wrong_kind_is_a_config_error(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ConfigError, match="RSA"):
        JwtVerifier.from_public_key_file(
            _pem(weak, tmp_path / "weak.pem"), issuer=ISS, audience=AUD, leeway_s=0
        )
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ConfigError, match=r"junk\.pem"):
        JwtVerifier.from_public_key_file(
            tmp_path / "junk.pem", issuer=ISS, audience=AUD, leeway_s=0
        )


def _keys_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(entries))
    return path


def test_api_keys_match_by_hash_only(tmp_path: Path) -> None:
    ring = ApiKeyRing.from_file(
        _keys_file(
            tmp_path,
            [
                {"hash": hash_api_key("k-one"), "principal": "svc1", "roles": ["viewer"]},
                {
                    "hash": hash_api_key("k-two"),
                    "principal": "svc2",
                    "roles": ["admin"],
                    "tenant": "acme",
                },
            ],
        )
    )
    one, two = ring.verify("k-one"), ring.verify("k-two")
    assert (one.id, one.tenant, one.roles, one.via) == ("svc1", None, {Role.VIEWER}, "api_key")
    assert (two.id, two.tenant, Role.VIEWER in two.roles) == ("svc2", "acme", True)
    for wrong in ("k-three", hash_api_key("k-one"), ""):
        with pytest.raises(AuthFailure, match="API key not accepted"):
            ring.verify(wrong)


@pytest.mark.parametrize(
    "entries",
    [
        [{"hash": "abc", "principal": "p", "roles": []}],
        [{"hash": "0" * 64, "principal": "p", "roles": ["root"]}],
        [{"hash": "0" * 64, "principal": "", "roles": []}],
        {"hash": "0" * 64},
    ],
)
def test_a_bad_keys_file_is_a_config_error_naming_it(tmp_path: Path, entries: Any) -> None:
    with pytest.raises(ConfigError, match="STREAMS_API_KEYS_FILE"):
        ApiKeyRing.from_file(_keys_file(tmp_path, entries))


def test_the_authenticator_wants_exactly_one_credential(tmp_path: Path) -> None:
    ring = ApiKeyRing.from_file(
        _keys_file(tmp_path, [{"hash": hash_api_key("k"), "principal": "svc", "roles": []}])
    )
    both = Authenticator(hs_verifier(), ring)
    token = jwt.encode(claims(), SECRET, "HS256")
    assert both.authenticate(f"Bearer {token}", None).via == "jwt"
    assert both.authenticate(None, "k").via == "api_key"
    with pytest.raises(AuthFailure) as missing:
        both.authenticate(None, None)
    assert missing.value.missing
    for authorization, key, reason in [
        (f"Bearer {token}", "k", "not both"),
        (f"Basic {token}", None, "Bearer <token>"),
        ("Bearer ", None, "Bearer <token>"),
    ]:
        with pytest.raises(AuthFailure, match=reason):
            both.authenticate(authorization, key)
    with pytest.raises(AuthFailure, match="use X-Api-Key"):
        Authenticator(None, ring).authenticate(f"Bearer {token}", None)
    with pytest.raises(AuthFailure, match="API key not accepted"):
        Authenticator(hs_verifier(), None).authenticate(None, "k")


def test_settings_refuse_to_start_without_auth_and_name_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "KEYS_FILE", "JWT_ISSUER", "JWT_AUDIENCE"):
        monkeypatch.delenv(f"STREAMS_API_{name}", raising=False)
    monkeypatch.delenv("STREAMS_DEV_MODE", raising=False)
    with pytest.raises(ConfigError, match="STREAMS_API_JWT_SECRET") as failed:
        ApiSettings().check_auth()
    assert "STREAMS_API_KEYS_FILE" in str(failed.value)
    with pytest.raises(ConfigError, match="STREAMS_API_JWT_ISSUER"):
        ApiSettings(api_jwt_secret=SECRET).check_auth()
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        ApiSettings(api_jwt_secret="short", api_jwt_issuer=ISS, api_jwt_audience=AUD).check_auth()
    with pytest.raises(ConfigError, match="not several"):
        ApiSettings(
            api_jwt_secret=SECRET,
            api_jwt_public_key_file=Path("k.pem"),
            api_jwt_issuer=ISS,
            api_jwt_audience=AUD,
        ).check_auth()
    with pytest.raises(ConfigError, match="dev mode"):
        ApiSettings(dev_mode=True, api_jwt_secret=SECRET).check_auth()
    ApiSettings(api_jwt_secret=SECRET, api_jwt_issuer=ISS, api_jwt_audience=AUD).check_auth()


def test_dev_mode_mints_a_secret_and_a_viewer_admin_token_for_it() -> None:
    authenticator, token = build_authenticator(ApiSettings(dev_mode=True))
    assert token is not None
    principal = authenticator.authenticate(f"Bearer {token}", None)
    assert principal.id == "dev" and principal.tenant is None
    assert {Role.VIEWER, Role.ADMIN} <= principal.roles
    unverified = jwt.decode(token, options={"verify_signature": False})
    assert (unverified["iss"], unverified["aud"]) == (DEV_ISSUER, DEV_AUDIENCE)
    again, _ = build_authenticator(ApiSettings(dev_mode=True))
    with pytest.raises(AuthFailure, match="signature invalid"):  # a fresh secret per start
        again.authenticate(f"Bearer {token}", None)
