"""JWKS files: public keys chosen by ``kid``, algorithm from the key type, refusals named."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from streams.api.auth import AuthFailure, JwksVerifier
from streams.errors import ConfigError

ISS, AUD = "https://issuer.test", "streams-api"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "ann", "iss": ISS, "aud": AUD, "exp": now + 60, **over}


def jwk(private: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    algo = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(private, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
    )
    entry: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
    if kid is not None:
        entry["kid"] = kid
    entry.update(extra)
    return entry


def jwks_file(tmp_path: Path, keys: list[dict[str, Any]]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


def verifier(path: Path) -> JwksVerifier:
    return JwksVerifier.from_jwks_file(path, issuer=ISS, audience=AUD, leeway_s=0)


def test_tokens_are_verified_with_the_key_their_kid_names(tmp_path: Path) -> None:
    v = verifier(jwks_file(tmp_path, [jwk(RSA_KEY, "r1"), jwk(EC_KEY, "e1", alg="ES256")]))
    assert v.verify(jwt.encode(claims(), RSA_KEY, "RS256", headers={"kid": "r1"})).id == "ann"
    assert v.verify(jwt.encode(claims(), EC_KEY, "ES256", headers={"kid": "e1"})).id == "ann"
    with pytest.raises(AuthFailure, match="kid"):
        v.verify(jwt.encode(claims(), RSA_KEY, "RS256", headers={"kid": "nope"}))
    with pytest.raises(AuthFailure, match="kid"):
        v.verify(jwt.encode(claims(), RSA_KEY, "RS256"))  # several keys: kid required
    # the right kid, signed by another key: refused
    with pytest.raises(AuthFailure, match="signature invalid"):
        other = ec.generate_private_key(ec.SECP256R1())
        v.verify(jwt.encode(claims(), other, "ES256", headers={"kid": "e1"}))
    with pytest.raises(AuthFailure, match="algorithm not accepted"):
        v.verify(jwt.encode(claims(), "x" * 32, "HS256", headers={"kid": "r1"}))
    with pytest.raises(AuthFailure, match="expired"):
        expired = claims(exp=int(time.time()) - 60)
        v.verify(jwt.encode(expired, RSA_KEY, "RS256", headers={"kid": "r1"}))


def test_one_key_needs_no_kid(tmp_path: Path) -> None:
    v = verifier(jwks_file(tmp_path, [jwk(EC_KEY, None)]))
    assert v.verify(jwt.encode(claims(), EC_KEY, "ES256")).id == "ann"


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ([], "non-empty"),
        ([jwk(RSA_KEY, "a"), jwk(EC_KEY, None)], "kid"),
        ([jwk(RSA_KEY, "a"), jwk(EC_KEY, "a")], "duplicate"),
        ([jwk(RSA_KEY, "a", alg="ES256")], "key 0"),
        ([jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024), "w")], "RS256"),
        ([{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}], "key 0"),
        ([{**jwk(EC_KEY, "p"), "d": "private"}], "public JWK"),
    ],
)
def test_unusable_sets_are_config_errors(
    tmp_path: Path, keys: list[dict[str, Any]], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        verifier(jwks_file(tmp_path, keys))
