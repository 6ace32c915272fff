"""The faust app: configuration that the design depends on (architecture.md, faust facts)."""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.catalog import Catalog
from streams.settings import Settings
from streams.worker.compat.table_start import TableManager


def _credentials(settings: Settings) -> Any:
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
        if settings.ssl_certfile:
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=password,
        mechanism=settings.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


def longest_delay_s(catalog: Catalog) -> float:
    return max(max(f.retry.delays_ms) for f in catalog.families.values()) / 1000


def create_app(settings: Settings, catalog: Catalog) -> faust.App:
    """A faust app tuned for streams.

    - ``stream_wait_empty=False``: faust would wait with no deadline for every unacked
      event on rebalance/shutdown, and retry tiers hold records unacked for their delay;
      our runtime drains with a deadline instead.
    - ``topic_allow_declare=False``: topics come from ``streams topics apply`` only.
    - ``web_enabled=False``: no unauthenticated ``/table`` views; we serve metrics/health.
    - the livelock warning fires only past the longest retry delay.
    - static membership when ``STREAMS_WORKER_ID`` is set.
    """
    datadir = settings.home / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    brokers = [f"kafka://{host}" for host in settings.bootstrap.split(",") if host]
    max_bytes = max(f.tier_max_message_bytes for f in catalog.families.values())
    conf: dict[str, Any] = {
        "broker": brokers,
        "broker_credentials": _credentials(settings),
        "store": "memory://",
        "datadir": str(datadir),
        "web_enabled": False,
        "autodiscover": False,
        "stream_wait_empty": False,
        "topic_allow_declare": False,
        "topic_disable_leader": False,
        "table_standby_replicas": 0,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_max_request_size": max_bytes + 65536,
        "consumer_max_fetch_size": max_bytes + 65536,
        "broker_commit_interval": 1.0,
        "broker_commit_livelock_soft_timeout": longest_delay_s(catalog) + 600,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_s / 3),
        "broker_rebalance_timeout": settings.shutdown_timeout_s + 30,
        "broker_max_poll_interval": 300.0,
        "stream_buffer_maxsize": 4096,
        "table_cleanup_interval": 3600.0,
        "TableManager": TableManager,  # without faust's one-second start sleep
    }
    if settings.worker_id:
        conf["consumer_group_instance_id"] = f"{settings.app_id}-{settings.worker_id}"
    return faust.App(settings.app_id, **conf)
