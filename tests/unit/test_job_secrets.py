"""Job settings refuse missing and placeholder secrets outside dev mode, naming the variable."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from streams.errors import ConfigError
from streams.jobs.mail_render import check_mail_settings
from streams.jobs.mail_settings import EmailSettings
from streams.jobs.webhook import WebhookSettings, signing_keys

STRONG = "p9V0-3mN2q-8xYt-Lw4e"


@pytest.fixture(autouse=True)
def _no_streams_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [k for k in os.environ if k.startswith("STREAMS_")]:
        monkeypatch.delenv(name)


def test_webhook_secrets_from_settings_with_rotation_and_per_subscription() -> None:
    keys = signing_keys(
        WebhookSettings(
            webhook_signing_secret=SecretStr(STRONG),
            webhook_signing_secret_previous=SecretStr(STRONG + "-old"),
            webhook_subscription_secrets={"sub-1": [SecretStr("sub1-" + STRONG)]},
        )
    )
    assert keys.secrets_for("sub-1") == ("sub1-" + STRONG,)
    assert keys.secrets_for("sub-9") == (STRONG, STRONG + "-old")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, r"^STREAMS_WEBHOOK_SIGNING_SECRET: not set"),
        ({"webhook_signing_secret": SecretStr("change-me")}, "SIGNING_SECRET: is a placeholder"),
        ({"webhook_signing_secret": SecretStr("")}, "SIGNING_SECRET: must not be empty"),
        (
            {
                "webhook_signing_secret": SecretStr(STRONG),
                "webhook_signing_secret_previous": SecretStr("secret"),
            },
            r"^STREAMS_WEBHOOK_SIGNING_SECRET_PREVIOUS: is a placeholder",
        ),
        (
            {"webhook_subscription_secrets": {"sub-1": [SecretStr("changeme")]}},
            r"^STREAMS_WEBHOOK_SUBSCRIPTION_SECRETS\[sub-1\]: is a placeholder",
        ),
        (
            {"webhook_subscription_secrets": {"sub-1": [SecretStr(f"{STRONG}{n}") for n in "abc"]}},
            r"^STREAMS_WEBHOOK_SUBSCRIPTION_SECRETS\[sub-1\]: give 1 or 2 secrets",
        ),
        # dev mode fills in a missing secret, it never accepts a placeholder
        (
            {"dev_mode": True, "webhook_signing_secret": SecretStr("change-me")},
            "SIGNING_SECRET: is a placeholder",
        ),
    ],
)
def test_webhook_secrets_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        signing_keys(WebhookSettings(**values))  # type: ignore[arg-type]


def test_dev_mode_draws_a_random_webhook_secret_per_run() -> None:
    first = signing_keys(WebhookSettings(dev_mode=True)).secrets_for("sub-1")
    second = signing_keys(WebhookSettings(dev_mode=True)).secrets_for("sub-1")
    assert len(first) == 1 and len(first[0]) >= 32
    assert first != second


def test_the_environment_reaches_the_webhook_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_WEBHOOK_SUBSCRIPTION_SECRETS", '{"sub-1": ["a-1x", "b-2y"]}')
    monkeypatch.setenv("STREAMS_DEV_MODE", "true")
    settings = WebhookSettings()
    assert settings.dev_mode
    assert signing_keys(settings).secrets_for("sub-1") == ("a-1x", "b-2y")


def test_unsubscribe_secret_is_required_outside_dev_mode() -> None:
    with pytest.raises(ConfigError, match=r"^STREAMS_UNSUBSCRIBE_SECRET: not set"):
        check_mail_settings(EmailSettings())
    with pytest.raises(ConfigError, match=r"^STREAMS_UNSUBSCRIBE_SECRET: is a placeholder"):
        check_mail_settings(EmailSettings(unsubscribe_secret=SecretStr("change-me")))
    dev = EmailSettings(dev_mode=True)
    check_mail_settings(dev)
    assert dev.unsubscribe_secret is not None
    assert len(dev.unsubscribe_secret.get_secret_value()) >= 32


def test_enter_dev_mode_keeps_set_secrets_and_draws_missing_ones() -> None:
    from streams.demo.services import enter_dev_mode

    kept = '{"stripe": ["whsec_kept"]}'
    environ = {
        "STREAMS_UNSUBSCRIBE_SECRET": STRONG,
        "STREAMS_PROVIDER_WEBHOOK_SECRETS": kept,
        "STREAMS_ENCRYPTION_KEYS": "k=x",
    }
    enter_dev_mode(environ)
    assert environ == {
        "STREAMS_UNSUBSCRIBE_SECRET": STRONG,
        "STREAMS_PROVIDER_WEBHOOK_SECRETS": kept,
        "STREAMS_ENCRYPTION_KEYS": "k=x",
        "STREAMS_DEV_MODE": "true",
    }
    fresh: dict[str, str] = {}
    enter_dev_mode(fresh)
    assert fresh["STREAMS_DEV_MODE"] == "true" and len(fresh["STREAMS_UNSUBSCRIBE_SECRET"]) >= 24
    assert json.loads(fresh["STREAMS_PROVIDER_WEBHOOK_SECRETS"])["stripe"][0].startswith("whsec_")
    from streams.crypto.keys import StaticKeyring

    assert StaticKeyring.parse(fresh["STREAMS_ENCRYPTION_KEYS"]).current()[0] == "dev"
