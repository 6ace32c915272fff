"""Client configuration shared by every confluent-kafka client we create."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings


def base_conf(settings: Settings, **extra: Any) -> dict[str, Any]:
    """bootstrap.servers + security properties (+ ``extra``), for producers, consumers, admin."""
    return {"bootstrap.servers": settings.bootstrap, **settings.kafka_security(), **extra}
