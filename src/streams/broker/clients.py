"""Client configuration shared by every confluent-kafka client we create."""

from __future__ import annotations

from typing import Any

from streams.errors import ConfigError
from streams.settings import Settings


def base_conf(settings: Settings, **extra: Any) -> dict[str, Any]:
    """bootstrap.servers + security properties (+ ``extra``), for producers, consumers, admin."""
    return {"bootstrap.servers": settings.bootstrap, **settings.kafka_security(), **extra}


def broker_reachable(settings: Settings, timeout_s: float = 3.0) -> bool:
    """True when a metadata request answers within ``timeout_s`` (health checks)."""
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient(base_conf(settings)).list_topics(timeout=timeout_s)
    except Exception:
        return False
    return True


PREFLIGHT_TIMEOUT_S = 8.0


def check_security(settings: Settings, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Fail fast, saying which, when the cluster refuses our SASL credentials or TLS trust.

    Without it a wrong password or an untrusted certificate only shows as metadata timeouts
    (librdkafka retries both for ever). A no-op for PLAINTEXT. Raises ConfigError naming the
    variables to fix; returns once a metadata request answers, or when the cluster stays
    silent for another reason (the caller's own timeouts then apply).
    """
    if settings.security_protocol == "PLAINTEXT":
        return
    import time

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[KafkaError] = []
    admin = AdminClient(base_conf(settings, error_cb=errors.append, log_level=0))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=0.5)
            return
        except KafkaException:
            pass
        admin.poll(0)
        for error in errors:
            problem = security_problem(settings, error.code(), error.str())
            if problem:
                raise ConfigError(problem)


def security_problem(settings: Settings, code: int, text: str) -> str | None:
    """The message for a librdkafka error that is a credential or trust failure, else None."""
    from confluent_kafka import KafkaError

    lowered = text.lower()
    where = settings.kafka_bootstrap or "the cluster"
    if code == KafkaError._AUTHENTICATION or "sasl authentication error" in lowered:
        return (
            f"Kafka at {where} rejected the SASL credentials of user "
            f"{settings.sasl_username!r} ({settings.sasl_mechanism}): check "
            f"STREAMS_SASL_USERNAME and STREAMS_SASL_PASSWORD ({text})"
        )
    if "certificate verify failed" in lowered or "ssl handshake failed" in lowered:
        cafile = settings.ssl_cafile or "the system's CA store"
        return (
            f"the TLS certificate of Kafka at {where} is not trusted by {cafile} "
            f"(STREAMS_SSL_CAFILE): {text}"
        )
    return None
