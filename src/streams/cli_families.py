"""``streams families clear|skipped|replay-skipped``: a family's backlog, from the shell.

``clear`` skips what the worker group has not processed of a family (main topic and retry
tiers), after recording the skipped offset ranges in ``streams.skipped``; it is refused
while the group has members (stop the workers first: ``broker/clear.py`` says why).
``skipped`` lists the recorded clears; ``replay-skipped`` publishes the records of a clear
again. Each action publishes an ``audit.admin_action`` event (actor ``--actor``, via cli).
Exit codes: 0 done, 1 error (unknown family, workers running, unreachable cluster).
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from pydantic import ValidationError

from streams.errors import ConfigError, StreamsError
from streams.settings import Settings


def _fail(exc: StreamsError | str) -> Any:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(1)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* settings: {exc}") from None


def _audit(
    settings: Settings, action: str, target: str, actor: str, details: dict[str, str]
) -> None:
    from streams.publish.publisher import Publisher

    payload = {
        "subject_id": target,
        "actor_id": actor,
        "action": action,
        "details": {**details, "via": "cli"},
    }
    with Publisher(settings) as publisher:
        publisher.publish("audit.admin_action", payload)


def _producer(settings: Settings) -> Any:
    from confluent_kafka import Producer

    from streams.broker.clients import base_conf

    producer = Producer(base_conf(settings, **{"acks": "all", "enable.idempotence": True}))

    def produce(topic: str, key: bytes, value: bytes) -> int:
        result: dict[str, Any] = {}
        producer.produce(
            topic,
            key=key,
            value=value,
            on_delivery=lambda err, msg: result.update(err=err, msg=msg),
        )
        producer.flush(settings.publish_timeout_s)
        if result.get("err") is not None or "msg" not in result:
            raise StreamsError(f"{topic} did not acknowledge the record: {result.get('err')}")
        return int(result["msg"].offset())

    return produce


@click.group("families")
def families() -> None:
    """Clear a family's backlog (recorded) and replay what was skipped."""


@families.command("clear")
@click.argument("family")
@click.option("--actor", required=True, help="Who clears (recorded and audited).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear(family: str, actor: str, yes: bool) -> None:
    """Skip FAMILY's pending records, recording their offset ranges first."""
    from streams.broker.clear import clear_backlog
    from streams.broker.offsets import ClusterOffsets
    from streams.catalog import load_catalog

    settings = _settings()
    fam = load_catalog(settings.catalog_path).family(family)
    if not yes:
        click.confirm(f"skip every pending record of {fam.name}?", abort=True)
    offsets = ClusterOffsets(settings, settings.app_id)
    target = f"family/{fam.name}"
    try:
        record = clear_backlog(
            offsets,
            settings,
            fam,
            actor=actor,
            now_ms=int(time.time() * 1000),
            produce=_producer(settings),
        )
    except StreamsError as exc:
        _audit(
            settings, "family.clear", target, actor, {"outcome": f"refused:{type(exc).__name__}"}
        )
        _fail(exc)
    finally:
        offsets.close()
    _audit(
        settings,
        "family.clear",
        target,
        actor,
        {"outcome": "ok", "clear_id": record.clear_id, "skipped": str(record.skipped)},
    )
    click.echo(json.dumps(record.as_dict(), indent=2))


@families.command("skipped")
@click.argument("family", required=False)
def skipped(family: str | None) -> None:
    """List the recorded clears (of FAMILY) with their ranges and outcome."""
    from streams.broker.skipped import read_clears
    from streams.core.topology import skipped_topic

    settings = _settings()
    for record in read_clears(settings, skipped_topic(settings.topic_prefix), family):
        click.echo(json.dumps(record.as_dict()))


@families.command("replay-skipped")
@click.argument("family")
@click.option("--clear-id", help="Only this clear (default: every clear not yet replayed).")
@click.option("--actor", required=True, help="Who replays (audited).")
def replay_skipped(family: str, clear_id: str | None, actor: str) -> None:
    """Publish the skipped records of FAMILY's clears again (same key, value, headers)."""
    from streams.broker.skipped import read_clears, replay
    from streams.core.topology import skipped_topic

    settings = _settings()
    topic = skipped_topic(settings.topic_prefix)
    clears = read_clears(settings, topic, family)
    if clear_id:
        chosen = [c for c in clears if c.clear_id == clear_id]
    else:
        chosen = [c for c in clears if c.outcome == "skipped"]
    if clear_id and not chosen:
        _fail(f"no clear {clear_id} of family {family}")
    for record in chosen:
        count = replay(settings, record, marker_topic=topic)
        _audit(
            settings,
            "family.replay_skipped",
            f"family/{family}",
            actor,
            {"outcome": "ok", "clear_id": record.clear_id, "records": str(count)},
        )
        click.echo(f"{record.clear_id}: {count} record(s) published again")
