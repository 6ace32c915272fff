"""Provision and check the catalog's topics with confluent-kafka's AdminClient.

``plan`` reads the cluster and diffs it (``streams.core.topicdiff``); ``apply`` carries the
plan out after checking all of it (a refused plan, or a change the broker rejects in a
validate-only pass, changes nothing); ``check_topology`` is the worker's startup check.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from streams.broker.clients import base_conf
from streams.catalog import Catalog, TopicSpec, desired_topics
from streams.core.topicdiff import ObservedTopic, Plan, diff
from streams.errors import TopologyError
from streams.settings import Settings

DEFAULT_TIMEOUT_S = 15.0
CONVERGE_TIMEOUT_S = 15.0
_POLL_S = 0.1
_NO_CHANGE = "no change was made to the cluster"


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient for the configured cluster."""
    return AdminClient(base_conf(settings))


def catalog_topics(
    settings: Settings, catalog: Catalog, families: Iterable[str] | None = None
) -> list[TopicSpec]:
    """The desired topics for this environment; ``families`` narrows them (plus the shared
    topics: faust's leader topic and the control plane's).

    Raises CatalogError for an unknown family name.
    """
    specs = desired_topics(
        catalog,
        prefix=settings.topic_prefix,
        app_id=settings.app_id,
        rf_override=settings.replication_factor_override,
    )
    if families is None:
        return specs
    wanted = {catalog.family(name).name for name in families}
    return [s for s in specs if s.family in wanted or s.family is None]


# --- reading the cluster ----------------------------------------------------------------


def describe_cluster_topics(
    admin: AdminClient, names: Iterable[str], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, ObservedTopic]:
    """Partitions, replication factor and dynamic topic configs of those ``names`` that exist.

    Raises TopologyError when the cluster does not answer within ``timeout_s``.
    """
    wanted = list(dict.fromkeys(names))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TopologyError(f"cannot read the cluster's topics: {_kafka_reason(exc)}") from None
    present = {}
    for name in wanted:
        topic = metadata.topics.get(name)
        if topic is None or _is_unknown_topic(topic.error):
            continue
        present[name] = topic
    configs = _dynamic_configs(admin, list(present), timeout_s)
    out = {}
    for name, topic in present.items():
        replicas = [len(p.replicas) for p in topic.partitions.values()]
        out[name] = ObservedTopic(
            name=name,
            partitions=len(topic.partitions),
            replication_factor=min(replicas) if replicas else 0,
            configs=configs.get(name, {}),
        )
    return out


def _is_unknown_topic(error: KafkaError | None) -> bool:
    return error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def _dynamic_configs(
    admin: AdminClient, names: list[str], timeout_s: float
) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout_s)
    out: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        entries = _result(future, timeout_s, f"describe the configs of {resource.name}")
        out[resource.name] = {
            key: entry.value
            for key, entry in entries.items()
            if _is_topic_override(entry) and entry.value is not None
        }
    return out


def _is_topic_override(entry: ConfigEntry) -> bool:
    # librdkafka reports ``source`` as a plain int, not the ConfigSource enum
    source = entry.source
    value = source.value if isinstance(source, ConfigSource) else source
    return bool(value == ConfigSource.DYNAMIC_TOPIC_CONFIG.value)


# --- plan, apply, check ---------------------------------------------------------------------


def plan(
    settings: Settings,
    catalog: Catalog,
    allow_repartition: bool = False,
    *,
    admin: AdminClient | None = None,
) -> Plan:
    """The differences between the catalog and the cluster; changes nothing."""
    client = admin or admin_client(settings)
    specs = catalog_topics(settings, catalog)
    observed = describe_cluster_topics(client, [s.name for s in specs])
    return diff(specs, observed, allow_repartition=allow_repartition)


def apply(
    settings: Settings,
    catalog: Catalog,
    allow_repartition: bool = False,
    *,
    admin: AdminClient | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Plan:
    """Carry out ``plan``; returns the plan that was applied.

    Checks everything first: a refused plan, or any change the broker rejects in a
    validate-only pass, raises TopologyError and changes nothing. A failure during the real
    pass raises TopologyError naming the topic and what was already done. Replication drift is
    reported in the returned plan, never changed.
    """
    client = admin or admin_client(settings)
    specs = catalog_topics(settings, catalog)
    observed = describe_cluster_topics(client, [s.name for s in specs], timeout_s=timeout_s)
    result = diff(specs, observed, allow_repartition=allow_repartition)
    if result.refused:
        raise TopologyError(refusal_message(result))
    if not result.changes_pending:
        return result
    try:
        _execute(client, result, validate_only=True, timeout_s=timeout_s)
    except TopologyError as exc:
        raise TopologyError(f"{exc}; {_NO_CHANGE}") from None
    _execute(client, result, validate_only=False, timeout_s=timeout_s)
    _await_converged(client, specs, allow_repartition, timeout_s=CONVERGE_TIMEOUT_S)
    return result


def check_topology(
    settings: Settings,
    catalog: Catalog,
    families: list[str] | None = None,
    *,
    admin: AdminClient | None = None,
) -> list[str]:
    """Problems that must stop a worker (missing topic, partition count, config, replication).

    ``families`` narrows the check to those families' topics (and faust's leader topic);
    an empty list means the cluster matches. Raises CatalogError for an unknown family.
    """
    client = admin or admin_client(settings)
    specs = catalog_topics(settings, catalog, families)
    observed = describe_cluster_topics(client, [s.name for s in specs])
    return diff(specs, observed, allow_repartition=False).problems()


def require_topology(
    settings: Settings,
    catalog: Catalog,
    families: list[str] | None = None,
    *,
    admin: AdminClient | None = None,
) -> None:
    """Raise TopologyError listing every problem ``check_topology`` finds (the worker's guard)."""
    problems = check_topology(settings, catalog, families, admin=admin)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise TopologyError(
            f"the cluster does not match the catalog ({len(problems)} problem(s)); "
            f"{_NO_CHANGE}; run `streams topics plan` to review and `streams topics apply` "
            f"to fix:\n{listed}"
        )


def refusal_message(result: Plan) -> str:
    """Why ``apply`` refuses, one refusal a line; states that nothing was changed."""
    listed = "\n".join(f"  - {r.topic}: {r.reason}" for r in result.refusals)
    return f"refusing to apply the topic plan; {_NO_CHANGE}:\n{listed}"


# --- carrying a plan out ----------------------------------------------------------------


def _execute(admin: AdminClient, result: Plan, *, validate_only: bool, timeout_s: float) -> None:
    done: list[str] = []
    try:
        _create_topics(admin, result, validate_only, timeout_s, done)
        _create_partitions(admin, result, validate_only, timeout_s, done)
        _alter_configs(admin, result, validate_only, timeout_s, done)
    except TopologyError as exc:
        if validate_only or not done:
            raise
        raise TopologyError(f"{exc}; already applied: {', '.join(done)}") from None


def _create_topics(
    admin: AdminClient, result: Plan, validate_only: bool, timeout_s: float, done: list[str]
) -> None:
    if not result.creates:
        return
    new = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            config=dict(spec.configs),
        )
        for spec in result.creates
    ]
    futures = admin.create_topics(
        new,
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
        validate_only=validate_only,
    )
    for name, future in futures.items():
        try:
            _result(future, timeout_s, f"create topic {name}")
        except _AlreadyExists:
            continue  # created concurrently (another apply): a no-op; convergence checks it
        done.append(f"created {name}")


def _create_partitions(
    admin: AdminClient, result: Plan, validate_only: bool, timeout_s: float, done: list[str]
) -> None:
    if not result.partition_increases:
        return
    new = [NewPartitions(p.topic, p.wanted) for p in result.partition_increases]
    futures = admin.create_partitions(
        new,
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
        validate_only=validate_only,
    )
    for name, future in futures.items():
        _result(future, timeout_s, f"raise the partition count of {name}")
        done.append(f"partitions of {name}")


def _alter_configs(
    admin: AdminClient, result: Plan, validate_only: bool, timeout_s: float, done: list[str]
) -> None:
    by_topic = result.config_changes_by_topic()
    if not by_topic:
        return
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(c.key, c.wanted, incremental_operation=AlterConfigOpType.SET)
                for c in changes
            ],
        )
        for topic, changes in by_topic.items()
    ]
    futures = admin.incremental_alter_configs(
        resources, request_timeout=timeout_s, validate_only=validate_only
    )
    for resource, future in futures.items():
        _result(future, timeout_s, f"change the configs of {resource.name}")
        done.append(f"configs of {resource.name}")


def _await_converged(
    admin: AdminClient, specs: Sequence[TopicSpec], allow_repartition: bool, *, timeout_s: float
) -> None:
    """Wait until the cluster's metadata shows the applied changes (brokers lag the controller)."""
    deadline = time.monotonic() + timeout_s
    last: Plan | None = None
    while time.monotonic() < deadline:
        try:
            observed = describe_cluster_topics(admin, [s.name for s in specs])
        except TopologyError:
            observed = None  # a just-created topic may not be describable for a moment
        if observed is not None:
            last = diff(specs, observed, allow_repartition=allow_repartition)
            if last.refused:
                break  # e.g. a concurrent apply created a topic differently
            if not last.changes_pending:
                return
        time.sleep(_POLL_S)
    pending = "\n".join(f"  {line}" for line in last.lines()) if last else "  (unreadable)"
    raise TopologyError(f"applied the topic plan, but the cluster still differs:\n{pending}")


class _AlreadyExists(TopologyError):
    pass


def _result(future: Future[Any], timeout_s: float, what: str) -> Any:
    """``future.result`` with a timeout; Kafka errors become TopologyError naming ``what``."""
    try:
        return future.result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            raise _AlreadyExists(f"cannot {what}: it already exists") from None
        raise TopologyError(f"cannot {what}: {_kafka_reason(exc)}") from None
    except TimeoutError:
        raise TopologyError(f"cannot {what}: no answer within {timeout_s:g}s") from None


def _kafka_reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return str(exc)
