"""topics.yaml: the single source of topology, validated with precise messages.

``load_catalog(path)`` returns a ``Catalog`` or raises ``CatalogError`` naming the file, the
path inside it and the reason. ``desired_topics(catalog, ...)`` is the provisioning plan:
every topic (main, priority lanes, retry tiers, DLQ, table changelogs, faust's leader topic)
with its partition count, replication and configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from streams.core import topology
from streams.core.durations import parse_duration_ms
from streams.core.policies import CircuitBreakerPolicy, RateLimit, RetryPolicy
from streams.errors import CatalogError
from streams.priorities import Priorities, check_priority

DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
"""A duration written as '30s', '10m', '2h', '7d' (or seconds), held in milliseconds."""

_NAME = r"^[a-z][a-z0-9_]*$"


Delivery = Literal["at_least_once", "at_most_once"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySpec(_Model):
    """topics.yaml's ``retry:`` (builds ``core.policies.RetryPolicy``)."""

    delays_ms: list[DurationMs] = Field(alias="delays", min_length=1)
    jitter: float = Field(default=0.1, ge=0.0, le=1.0, description="+/- fraction of a delay")
    max_attempts: int = Field(default=5, ge=1, le=100, description="first run included")
    retention_ms: DurationMs = Field(default=parse_duration_ms("7d"), alias="retention")

    @model_validator(mode="after")
    def _retention_exceeds_delays(self) -> RetrySpec:
        longest = max(self.delays_ms)
        if self.retention_ms <= longest * (1 + self.jitter):
            raise ValueError(
                f"retention ({self.retention_ms} ms) must exceed the longest delay with jitter "
                f"({longest} ms * (1 + {self.jitter}))"
            )
        if any(d < 1000 for d in self.delays_ms):
            raise ValueError("every delay must be at least 1s")
        return self

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            delays_ms=tuple(self.delays_ms),
            jitter=self.jitter,
            max_attempts=self.max_attempts,
            retention_ms=self.retention_ms,
        )


class DlqPolicy(_Model):
    retention_ms: DurationMs = Field(default=parse_duration_ms("30d"), alias="retention")


class IdempotencyPolicy(_Model):
    enabled: bool = True
    ttl_ms: DurationMs = Field(default=parse_duration_ms("7d"), alias="ttl")


class RateLimitSpec(_Model):
    """One entry of topics.yaml's ``rate_limits:`` (builds ``core.policies.RateLimit``)."""

    name: str = Field(pattern=_NAME)
    scope: Literal["key", "provider"]
    provider: str | None = Field(default=None, description="required for scope=provider")
    limit: int = Field(ge=1)
    per_ms: DurationMs = Field(alias="per")
    burst: int | None = Field(default=None, ge=1, description="bucket size; default = limit")
    on_exceed: Literal["defer", "reject"] = "defer"
    max_defer_ms: DurationMs = Field(default=parse_duration_ms("1d"), alias="max_defer")

    @model_validator(mode="after")
    def _provider_scope(self) -> RateLimitSpec:
        if self.scope == "provider" and not self.provider:
            raise ValueError("scope 'provider' needs a 'provider' name")
        if self.scope == "key" and self.provider:
            raise ValueError("'provider' applies only to scope 'provider'")
        if self.per_ms <= 0:
            raise ValueError("'per' must be a positive duration")
        return self

    def policy(self) -> RateLimit:
        return RateLimit(
            name=self.name,
            scope=self.scope,
            limit=self.limit,
            per_ms=self.per_ms,
            provider=self.provider,
            burst=self.burst,
            on_exceed=self.on_exceed,
            max_defer_ms=self.max_defer_ms,
        )


class CircuitBreakerSpec(_Model):
    """topics.yaml's ``circuit_breaker:`` (builds ``core.policies.CircuitBreakerPolicy``)."""

    failure_threshold: int = Field(default=5, ge=1, description="consecutive failures to open")
    cooldown_ms: DurationMs = Field(default=parse_duration_ms("30s"), alias="cooldown")

    def policy(self) -> CircuitBreakerPolicy:
        return CircuitBreakerPolicy(self.failure_threshold, self.cooldown_ms)


def _built_by(spec: type[RetrySpec | RateLimitSpec | CircuitBreakerSpec]) -> BeforeValidator:
    """Validate topics.yaml's mapping with ``spec`` and keep the core policy it builds."""

    def build(value: Any) -> Any:
        if isinstance(value, RetryPolicy | RateLimit | CircuitBreakerPolicy):
            return value
        return spec.model_validate(value).policy()

    return BeforeValidator(build)


class Family(_Model):
    """One job family: a main topic, its retry tiers, its DLQ and their policies."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    key_field: str = Field(pattern=_NAME)
    partitions: int = Field(ge=1, le=10_000)
    replication_factor: int = Field(ge=1, le=7)
    min_insync_replicas: int = Field(ge=1, le=7)
    retention_ms: DurationMs = Field(alias="retention")
    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    header_reserve_bytes: int = Field(default=16_384, ge=1024)
    concurrency: int = Field(default=16, ge=1, le=4096, description="events in flight per worker")
    handler_timeout_ms: DurationMs = Field(alias="handler_timeout")
    retry: Annotated[RetryPolicy, _built_by(RetrySpec)]
    dlq: DlqPolicy = DlqPolicy()
    idempotency: IdempotencyPolicy = IdempotencyPolicy()
    state_table: bool = Field(
        default=False, description="a compacted job-state table (consent, suppression lists)"
    )
    rate_limits: list[Annotated[RateLimit, _built_by(RateLimitSpec)]] = Field(default_factory=list)
    circuit_breaker: Annotated[CircuitBreakerPolicy, _built_by(CircuitBreakerSpec)] = (
        CircuitBreakerPolicy()
    )
    priorities: Priorities | None = None
    delivery: Delivery = Field(
        default="at_least_once",
        description="at_least_once (retries, DLQ) or at_most_once (commit first, never twice)",
    )
    ordering: Literal["default", "strict"] = Field(
        default="default", description="strict: a key's later events wait for its retrying one"
    )
    on_dead_letter: Literal["release", "hold"] = Field(
        default="release", description="strict: a dead-lettered head frees its key, or holds it"
    )
    max_parked: int = Field(
        default=10_000, ge=0, le=10_000_000, description="strict: parked events kept in memory"
    )

    @model_validator(mode="after")
    def _strict_ordering(self) -> Family:
        if self.ordering != "strict":
            stray = sorted({"on_dead_letter", "max_parked"} & self.model_fields_set)
            if stray:
                raise ValueError(f"{', '.join(stray)} applies only to ordering 'strict'")
            return self
        if self.delivery == "at_most_once":
            raise ValueError(
                "ordering 'strict' cannot be combined with delivery 'at_most_once' (a key's "
                "failed event is never retried, so there is nothing to wait for)"
            )
        if self.priorities is not None:
            raise ValueError(
                "ordering 'strict' cannot be combined with priorities (a key's events on "
                "different lanes have no order to keep)"
            )
        if not self.idempotency.enabled:
            raise ValueError(
                "ordering 'strict' needs idempotency enabled (a restart redelivers parked "
                "events and the ledger skips those already done)"
            )
        return self

    @property
    def strict(self) -> bool:
        return self.ordering == "strict"

    @model_validator(mode="after")
    def _consistent(self) -> Family:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds "
                f"replication_factor ({self.replication_factor})"
            )
        names = [r.name for r in self.rate_limits]
        if len(names) != len(set(names)):
            raise ValueError(f"rate limit names must be unique, got {names}")
        for limit in self.rate_limits:
            if limit.max_defer_ms >= self.retry.retention_ms:
                raise ValueError(
                    f"rate limit {limit.name!r}: max_defer ({limit.max_defer_ms} ms) must be "
                    f"below the retry tiers' retention ({self.retry.retention_ms} ms)"
                )
        return self

    def replication(self, override: int | None) -> tuple[int, int]:
        """(replication factor, min.insync.replicas), capped by a local override."""
        if override is None:
            return self.replication_factor, self.min_insync_replicas
        rf = min(self.replication_factor, override)
        return rf, min(self.min_insync_replicas, rf)

    def topics(self, prefix: str) -> topology.FamilyTopics:
        lanes = self.priorities.other_lanes if self.priorities is not None else ()
        return topology.family_topics(
            prefix, self.name, self.retry.tier_delays_ms, lanes, strict=self.strict
        )

    def lane_of(self, priority: str) -> str:
        """The lane ``priority`` names; ValueError (naming the family's lanes) when the family
        has no lanes or none of that name."""
        return check_priority(self.name, self.priorities, priority)

    @property
    def tier_max_message_bytes(self) -> int:
        """Retry tiers and the DLQ leave room for the failure headers."""
        return self.max_message_bytes + self.header_reserve_bytes


class ControlPlaneSpec(_Model):
    """topics.yaml's optional ``control_plane:``: the ``streams.status`` topic's size and
    TTL (``streams.control`` is one compacted partition; see ``streams.control``)."""

    status_partitions: int = Field(default=3, ge=1, le=1000)
    status_ttl_ms: DurationMs = Field(default=parse_duration_ms("1d"), alias="status_ttl")
    cancel_ttl_ms: DurationMs = Field(
        default=parse_duration_ms("1d"), alias="cancel_ttl", description="a cancel expires"
    )


class Catalog(_Model):
    version: Literal[1] = 1
    families: dict[str, Family]
    control_plane: ControlPlaneSpec = ControlPlaneSpec()

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the catalog must be a mapping with 'families'")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ValueError("'defaults' must be a mapping")
        families = data.get("families")
        if not isinstance(families, dict) or not families:
            raise ValueError("'families' must be a non-empty mapping of family name -> policy")
        merged = {}
        for name, body in families.items():
            if not isinstance(body, dict):
                raise ValueError(f"family {name!r} must be a mapping")
            merged[name] = {**_deep_merge(defaults, body), "name": name}
        return {k: v for k, v in data.items() if k != "defaults"} | {"families": merged}

    def family(self, name: str) -> Family:
        try:
            return self.families[name]
        except KeyError:
            known = ", ".join(sorted(self.families))
            raise CatalogError(f"unknown family {name!r}; known: {known}") from None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_errors(path: Path, exc: ValidationError, data: Any = None) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"{path}: {loc}{_inherited_from(data, err['loc'])}: {err['msg']}")
    return "\n".join(lines)


def _has_path(node: Any, keys: tuple[Any, ...]) -> bool:
    for key in keys:
        in_dict = isinstance(node, dict) and key in node
        in_list = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        if not (in_dict or in_list):
            return False
        node = node[key]
    return True


def _inherited_from(data: Any, loc: tuple[Any, ...]) -> str:
    """`` (set in defaults.x.y)`` when a family's bad value comes from ``defaults``."""
    if not isinstance(data, dict) or len(loc) < 3 or loc[0] != "families":
        return ""
    rest = tuple(loc[2:])
    family = (data.get("families") or {}).get(loc[1])
    if _has_path(family, rest) or not _has_path(data.get("defaults"), rest):
        return ""
    return " (set in defaults." + ".".join(str(k) for k in rest) + ")"


def parse_catalog(data: Any, source: Path = Path("topics.yaml")) -> Catalog:
    """Validate already-parsed YAML; raises CatalogError(file: path: reason, ...)."""
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(_format_errors(source, exc, data)) from None


def load_catalog(path: Path) -> Catalog:
    """Read and validate topics.yaml; raises CatalogError naming file, path and reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    return parse_catalog(data, path)


# --- provisioning plan ------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the catalog wants it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)
    role: str = "main"  # main | lane | retry | parked | dlq | changelog | leader | control | ...
    family: str | None = None


def desired_topics(
    catalog: Catalog, *, prefix: str, app_id: str, rf_override: int | None
) -> list[TopicSpec]:
    """Every topic streams needs, in a stable order."""
    specs: list[TopicSpec] = []
    max_rf = max_isr = 1
    for fam in catalog.families.values():
        rf, min_isr = fam.replication(rf_override)
        max_rf, max_isr = max(max_rf, rf), max(max_isr, min_isr)
        names = fam.topics(prefix)
        base = {"min.insync.replicas": str(min_isr), "cleanup.policy": "delete"}
        specs.append(
            TopicSpec(
                names.main,
                fam.partitions,
                rf,
                base
                | {
                    "retention.ms": str(fam.retention_ms),
                    "max.message.bytes": str(fam.max_message_bytes),
                },
                "main",
                fam.name,
            )
        )
        specs.extend(  # priority lanes: configured like the main topic
            TopicSpec(t, fam.partitions, rf, dict(specs[-1].configs), "lane", fam.name)
            for t in names.lane_topics
        )
        tier_conf = base | {
            "retention.ms": str(fam.retry.retention_ms),
            "max.message.bytes": str(fam.tier_max_message_bytes),
        }
        specs.extend(
            TopicSpec(t, fam.partitions, rf, dict(tier_conf), "retry", fam.name)
            for t in names.retries
        )
        if names.parked is not None:  # strict ordering: parked events, kept like retries
            specs.append(
                TopicSpec(names.parked, fam.partitions, rf, dict(tier_conf), "parked", fam.name)
            )
        specs.append(
            TopicSpec(
                names.dlq,
                fam.partitions,
                rf,
                base
                | {
                    "retention.ms": str(fam.dlq.retention_ms),
                    "max.message.bytes": str(fam.tier_max_message_bytes),
                },
                "dlq",
                fam.name,
            )
        )
        changelog_conf = {"min.insync.replicas": str(min_isr), "cleanup.policy": "compact,delete"}
        done_ttl = fam.idempotency.ttl_ms
        bucket_ttl = max([r.per_ms for r in fam.rate_limits] + [parse_duration_ms("1d")])
        for kind, ttl in (("done", done_ttl), ("buckets", bucket_ttl)):
            specs.append(
                TopicSpec(
                    topology.changelog_topic(app_id, topology.table_name(fam.name, kind)),
                    fam.partitions,
                    rf,
                    changelog_conf | {"retention.ms": str(ttl)},
                    "changelog",
                    fam.name,
                )
            )
        kinds = (["state"] if fam.state_table else []) + (["holds"] if fam.strict else [])
        for kind in kinds:  # job state (consent, suppression), strict holds: compacted
            specs.append(
                TopicSpec(
                    topology.changelog_topic(app_id, topology.table_name(fam.name, kind)),
                    fam.partitions,
                    rf,
                    {"min.insync.replicas": str(min_isr), "cleanup.policy": "compact"},
                    "changelog",
                    fam.name,
                )
            )
    specs.append(
        TopicSpec(
            topology.leader_topic(app_id),
            1,
            max_rf,
            {"cleanup.policy": "delete", "retention.ms": str(parse_duration_ms("1d"))},
            "leader",
        )
    )
    specs.extend(control_plane_topics(catalog, prefix=prefix, rf=max_rf))
    specs.extend(_operator_topics(prefix, max_rf, max_isr))
    specs.append(  # schedules (issue 11): its consumer group elects the firing leader
        TopicSpec(
            topology.schedules_topic(prefix),
            1,
            max_rf,
            {"cleanup.policy": "compact", "min.insync.replicas": str(max_isr)},
            "schedules",
        )
    )
    return specs


def _operator_topics(prefix: str, rf: int, min_isr: int) -> list[TopicSpec]:
    """Worker heartbeats (compacted, a day) and cleared-backlog records (a year: the ranges
    must outlive the records they point at)."""
    isr = {"min.insync.replicas": str(min_isr)}
    return [
        TopicSpec(
            topology.workers_topic(prefix),
            1,
            rf,
            isr
            | {"cleanup.policy": "compact,delete", "retention.ms": str(parse_duration_ms("1d"))},
            "workers",
        ),
        TopicSpec(
            topology.skipped_topic(prefix),
            1,
            rf,
            isr | {"cleanup.policy": "delete", "retention.ms": str(parse_duration_ms("365d"))},
            "skipped",
        ),
    ]


def control_plane_topics(catalog: Catalog, *, prefix: str, rf: int) -> list[TopicSpec]:
    """``streams.control`` (compacted: a pause lasts until revoked) and ``streams.status``
    (compacted, deleted after the status TTL)."""
    from streams.control.topics import control_topic, status_topic

    cp = catalog.control_plane
    min_isr = str(min(2, rf))
    return [
        TopicSpec(
            control_topic(prefix),
            1,
            rf,
            {"cleanup.policy": "compact", "min.insync.replicas": min_isr},
            "control",
        ),
        TopicSpec(
            status_topic(prefix),
            cp.status_partitions,
            rf,
            {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(cp.status_ttl_ms),
                "min.insync.replicas": min_isr,
                "segment.ms": str(min(cp.status_ttl_ms, parse_duration_ms("1h"))),
            },
            "status",
        ),
    ]
