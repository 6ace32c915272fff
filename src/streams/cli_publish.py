"""``streams publish <event-type> --data JSON``: publish events from the command line.

``--data`` takes JSON text, ``@file.json`` (an object, or an array of objects) or ``-``
(standard input, one JSON object per line, for bulk loads). Everything is parsed and
validated before anything is sent: a JSON error or a validation error prints the precise
place, field and reason and exits 1 with nothing published. One line is printed per
acknowledged event: ``topic=... partition=... offset=... event_id=...``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from streams.errors import ConfigError, InvalidPayload, PublishError, StreamsError
from streams.publish.outgoing import PublishResult


class _BadInput(Exception):
    """Malformed ``--data``: the message names where and why."""


def _parse_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadInput(
            f"{where} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(value, dict):
        raise _BadInput(f"{where} must be a JSON object, got {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def read_payloads(data: str, stdin_text: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(where, payload)`` for every payload ``--data`` names; ``where`` labels messages.

    Raises _BadInput naming the source, line/column and reason.
    """
    if data == "-":
        text = sys.stdin.read() if stdin_text is None else stdin_text
        out = [
            (f"stdin line {n}", _parse_object(line, f"stdin line {n}"))
            for n, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
        if not out:
            raise _BadInput("stdin had no JSON lines")
        return out
    if data.startswith("@"):
        path = Path(data[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _BadInput(f"cannot read {path}: {exc}") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _BadInput(
                f"{path} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise _BadInput(
                        f"{path}: item {i} must be a JSON object, got {_json_kind(item)}"
                    )
            if not value:
                raise _BadInput(f"{path}: the array is empty")
            return [(f"{path} item {i}", item) for i, item in enumerate(value)]
        if not isinstance(value, dict):
            raise _BadInput(
                f"{path} must be a JSON object or an array of objects, got {_json_kind(value)}"
            )
        return [(str(path), value)]
    return [("--data", _parse_object(data, "--data"))]


def _describe(exc: PublishError) -> list[str]:
    if isinstance(exc, InvalidPayload):
        head = f"invalid {exc.event_type} payload:"
        return [head, *(f"  {field}: {reason}" for field, reason in exc.errors)]
    return [str(exc)]


@click.command()
@click.argument("event_type")
@click.option(
    "--data",
    "data",
    required=True,
    help="payload JSON, @file.json (object or array), or - for JSON lines on stdin",
)
@click.option("--key", default=None, help="partition key; must equal the family's key field")
@click.option("--event-id", default=None, help="event id (default: a new UUID); one event only")
@click.option(
    "--priority", default=None, help="one of the family's priority lanes (topics.yaml priorities)"
)
@click.option(
    "--count",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="publish each payload this many times (each with a new event id)",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="seconds to wait for acknowledgements (default STREAMS_PUBLISH_TIMEOUT_S)",
)
def publish(
    event_type: str,
    data: str,
    key: str | None,
    event_id: str | None,
    priority: str | None,
    count: int,
    timeout_s: float | None,
) -> None:
    """Publish EVENT_TYPE events (e.g. email.requested) and print where each landed."""
    try:
        sources = read_payloads(data)
    except _BadInput as exc:
        _fail([str(exc)])
    items = [source for source in sources for _ in range(count)]
    if event_id is not None and len(items) > 1:
        raise click.UsageError("--event-id names one event; drop it or publish one event")
    try:
        _publish(
            event_type, items, key=key, event_id=event_id, priority=priority, timeout_s=timeout_s
        )
    except StreamsError as exc:
        _fail([f"{exc}"])


def _publish(
    event_type: str,
    sources: list[tuple[str, dict[str, Any]]],
    *,
    key: str | None,
    event_id: str | None,
    priority: str | None,
    timeout_s: float | None,
) -> None:
    from streams.errors import BatchPublishError
    from streams.publish.publisher import Publisher
    from streams.settings import Settings

    try:
        settings = Settings() if timeout_s is None else Settings(publish_timeout_s=timeout_s)
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* settings: {exc}") from None
    with Publisher(settings, producer_name="streams-cli") as publisher:
        if len(sources) == 1:
            try:
                result = publisher.publish(
                    event_type, sources[0][1], key=key, event_id=event_id, priority=priority
                )
            except PublishError as exc:
                _fail(_describe(exc))
            _echo(result)
            return
        items: list[Mapping[str, Any]] = [
            {"event_type": event_type, "payload": payload, "key": key, "priority": priority}
            for _, payload in sources
        ]
        try:
            results = publisher.publish_batch(items)
        except BatchPublishError as exc:
            for acknowledged in exc.results:
                if acknowledged is not None:
                    _echo(acknowledged)
            lines: list[str] = []
            for index, error in exc.errors.items():
                where = sources[index][0]
                lines.extend(f"{where}: {line}" for line in _describe(error))
            summary = (
                "nothing was published"
                if not exc.sent
                else (f"{len(exc.errors)} of {len(items)} events not acknowledged")
            )
            _fail([*dict.fromkeys(lines), summary])  # --count repeats identical errors
        for result in results:
            _echo(result)


def _echo(result: PublishResult) -> None:
    click.echo(
        f"topic={result.topic} partition={result.partition} offset={result.offset} "
        f"event_id={result.event_id}"
    )


def _fail(lines: list[str]) -> Any:
    click.echo(f"error: {lines[0]}", err=True)
    for line in lines[1:]:
        click.echo(line, err=True)
    raise click.exceptions.Exit(1)
