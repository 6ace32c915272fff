"""The email job's settings (``STREAMS_SMTP_*``, ``STREAMS_EMAIL_*``, ``STREAMS_UNSUBSCRIBE_*``)."""

from __future__ import annotations

from pydantic import SecretStr

from streams.jobs.base import JobSettings


class EmailSettings(JobSettings):
    """SMTP relay, sender identity and the unsubscribe link of the email job."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 10.0
    email_from: str = "Streams <no-reply@streams.local>"
    email_message_id_domain: str = "streams.local"
    unsubscribe_base_url: str = "https://example.com/unsubscribe"
    unsubscribe_secret: SecretStr = SecretStr("change-me")
