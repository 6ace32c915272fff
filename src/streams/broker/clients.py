"""Client configuration shared by every confluent-kafka client we create."""

from __future__ import annotations

from typing import Any

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
