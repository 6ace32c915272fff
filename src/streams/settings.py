"""Settings read once at the edge (pydantic-settings, prefix ``STREAMS_``).

Library modules receive a ``Settings`` object; none of them reads the environment.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_path(name: str) -> Path:
    """``name`` in the working directory if it exists there, else next to the source tree."""
    local = Path.cwd() / name
    return local if local.exists() else _REPO_ROOT / name


class Settings(BaseSettings):
    """The platform's ``STREAMS_*`` variables; each job has its own (``JobSpec.settings_type``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")

    # cluster
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset = the local broker"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    # environment separation
    topic_prefix: str = Field(default="", description="prepended to every topic name")
    app_id: str = Field(default="streams", description="faust app id = consumer group")
    replication_factor_override: int | None = Field(
        default=None, ge=1, description="force RF (and min.insync.replicas) e.g. 1 locally"
    )

    # files
    catalog_path: Path = Field(default_factory=lambda: _default_path("topics.yaml"))
    schemas_dir: Path = Field(default_factory=lambda: _default_path("schemas"))
    home: Path = Field(
        default_factory=lambda: _default_path(".streams"),
        description="local state: broker cache, data, logs, worker state",
    )

    # producer
    publish_timeout_s: float = Field(default=30.0, gt=0)

    # worker
    worker_id: str | None = Field(default=None, description="static group membership id")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=6066, ge=0, le=65535)
    shutdown_timeout_s: float = Field(
        default=30.0, gt=0, description="SIGTERM: drain and exit within this bound"
    )
    drain_timeout_s: float = Field(
        default=10.0, gt=0, description="revoke/shutdown: how long running handlers may finish"
    )
    session_timeout_s: float = Field(default=15.0, ge=6, description="consumer group session")
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="longest a fetch waits at the broker for data (faust hard-codes 1,500)",
    )
    ledger_linger_ms: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="how long done-markers gather before one changelog write per partition",
    )
    retry_window: int = Field(
        default=1000, ge=1, description="records a retry partition may hold before pausing"
    )
    clock_skew_margin_ms: int = Field(
        default=20, ge=0, description="retries run this long after their due time, at least"
    )
    families: str | None = Field(default=None, description="comma list; unset = all families")
    status_tracking: bool = Field(
        default=True, description="record each event's lifecycle to streams.status"
    )
    status_linger_ms: int = Field(
        default=50, ge=0, le=1000, description="status transitions coalesce this long"
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_ends_with_separator(cls, value: str) -> str:
        from streams.core.topology import check_prefix

        return check_prefix(value)

    @cached_property
    def bootstrap(self) -> str:
        """The cluster address; raises ConfigError when neither set nor locally started."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        from streams.errors import ConfigError

        state = self.home / "broker" / "bootstrap"
        if state.exists():
            return state.read_text().strip()
        raise ConfigError(
            "no Kafka cluster: set STREAMS_KAFKA_BOOTSTRAP=host:port, "
            "or start the local broker with `streams broker start`"
        )

    def kafka_security(self) -> dict[str, Any]:
        """librdkafka security properties (also mapped for aiokafka by the app module)."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            conf["ssl.key.location"] = str(self.ssl_keyfile)
        return conf
