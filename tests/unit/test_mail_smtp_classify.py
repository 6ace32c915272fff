"""SMTP failure classification: bounce (Permanent) vs dependency failure (Retryable)."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest

from streams.errors import Permanent, Retryable
from streams.jobs.mail_settings import EmailSettings
from streams.jobs.mail_smtp import SMTPConfig, SMTPPool, classify_smtp_error

ADDR = "bob@example.com"


def refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(code, f"5.1.1 <{ADDR}>: User unknown", ADDR)]
    )


@pytest.mark.parametrize(
    ("exc", "kind", "starts"),
    [
        (refused(550), Permanent, "to: bounced, recipient refused 550"),
        (refused(553), Permanent, "to: bounced, recipient refused 553"),
        (refused(450), Retryable, "smtp: temporary failure 450"),
        (aiosmtplib.SMTPRecipientRefused(551, "no", ADDR), Permanent, "to: bounced"),
        (aiosmtplib.SMTPDataError(554, "5.7.1 spam"), Permanent, "smtp: bounced, DATA refused 554"),
        (aiosmtplib.SMTPDataError(552, "too big"), Permanent, "smtp: bounced, DATA refused 552"),
        (aiosmtplib.SMTPDataError(451, "local error"), Retryable, "smtp: temporary failure 451"),
        (aiosmtplib.SMTPDataError(421, "closing"), Retryable, "smtp: temporary failure 421"),
        (
            aiosmtplib.SMTPSenderRefused(552, "size", "me@x.org"),
            Permanent,
            "smtp: bounced, MAIL refused 552",
        ),
        (
            aiosmtplib.SMTPSenderRefused(550, "relay denied", "me@x.org"),
            Retryable,
            "smtp: sender refused 550",
        ),
        (
            aiosmtplib.SMTPAuthenticationError(535, "bad credentials"),
            Retryable,
            "smtp: session refused 535",
        ),
        (aiosmtplib.SMTPHeloError(501, "bad helo"), Retryable, "smtp: session refused 501"),
        (
            aiosmtplib.SMTPConnectResponseError(554, "no service"),
            Retryable,
            "smtp: session refused 554",
        ),
        (aiosmtplib.SMTPConnectResponseError(421, "busy"), Retryable, "smtp: temporary"),
        (aiosmtplib.SMTPResponseException(-1, "garbled"), Retryable, "smtp: unexpected reply"),
        (aiosmtplib.SMTPServerDisconnected("gone"), Retryable, "smtp: connection failed"),
        (aiosmtplib.SMTPConnectError("refused"), Retryable, "smtp: connection failed"),
        (ConnectionRefusedError(111, "refused"), Retryable, "smtp: connection failed"),
        (ConnectionResetError(104, "reset"), Retryable, "smtp: connection failed"),
        (aiosmtplib.SMTPReadTimeoutError("slow"), Retryable, "smtp: timed out"),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), Retryable, "smtp: timed out"),
        (TimeoutError(), Retryable, "smtp: timed out"),
        (ssl.SSLCertVerificationError("bad cert"), Retryable, "smtp: TLS failed"),
        (aiosmtplib.SMTPNotSupported("STARTTLS"), Retryable, "smtp: server lacks"),
        (RuntimeError("?"), Retryable, "smtp: RuntimeError"),
    ],
)
def test_classification(exc: BaseException, kind: type[Exception], starts: str) -> None:
    outcome = classify_smtp_error(exc)
    assert type(outcome) is kind
    assert str(outcome).startswith(starts), str(outcome)


def test_messages_never_carry_an_address() -> None:
    for exc in (refused(550), aiosmtplib.SMTPDataError(554, f"rejected for {ADDR}")):
        text = str(classify_smtp_error(exc))
        assert ADDR not in text
        assert "<address>" in text


def test_reply_text_is_bounded_to_one_line() -> None:
    outcome = classify_smtp_error(aiosmtplib.SMTPDataError(554, "x\r\ny " * 200))
    assert "\n" not in str(outcome) and "\r" not in str(outcome)
    assert len(str(outcome)) < 220


def test_config_from_settings_names_the_dependency() -> None:
    settings = EmailSettings(
        smtp_host="relay.example",
        smtp_port=587,
        smtp_username="u",
        smtp_password="p",
        smtp_starttls=True,
        smtp_timeout_s=3.5,
    )
    config = SMTPConfig.from_settings(settings)
    assert config.dependency == "smtp:relay.example:587"
    assert (config.username, config.password, config.starttls, config.timeout_s) == (
        "u",
        "p",
        True,
        3.5,
    )
    assert "'p'" not in repr(config)  # the password stays out of logs


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        SMTPPool(SMTPConfig(host="127.0.0.1", port=1), size=0)


async def test_pool_close_without_connections_is_a_no_op() -> None:
    pool = SMTPPool(SMTPConfig(host="127.0.0.1", port=1))
    await asyncio.wait_for(pool.close(), 1.0)
    assert pool.connects == 0
