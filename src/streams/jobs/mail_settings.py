"""The email job's settings (``STREAMS_SMTP_*``, ``STREAMS_EMAIL_*``, ``STREAMS_UNSUBSCRIBE_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from streams.jobs.base import JobSettings


class EmailSettings(JobSettings):
    """SMTP relay, sender identity and the unsubscribe link of the email job.

    Refused at start (ConfigError naming the variable): SMTP credentials without
    ``smtp_starttls`` or ``smtp_implicit_tls``; both TLS modes at once; an empty or
    placeholder password or unsubscribe secret; no unsubscribe secret outside
    ``STREAMS_DEV_MODE`` (which then draws a random one per run).
    """

    dev_mode: bool = Field(default=False, description="generate missing secrets (make run)")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_implicit_tls: bool = Field(default=False, description="TLS from the start (port 465)")
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle that verifies the server (default: system CAs)"
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 10.0
    email_from: str = "Streams <no-reply@streams.local>"
    email_message_id_domain: str = "streams.local"
    unsubscribe_base_url: str = "https://example.com/unsubscribe"
    unsubscribe_secret: SecretStr | None = None
    email_blacklist: str = Field(
        default="", description="never mailed: comma list of addresses, @domains or domains"
    )
