"""``streams topics plan|apply|list``: provision the catalog's topics.

Exit codes: ``plan`` 0 in sync, 2 changes pending, 1 refusal or error; ``apply`` 0 done,
1 refused or failed (a refusal changes nothing); ``list`` 0.
"""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from streams.catalog import Catalog, load_catalog
from streams.core.topicdiff import Plan
from streams.errors import ConfigError, StreamsError
from streams.settings import Settings

_catalog_option = click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="topics.yaml to use (default: STREAMS_CATALOG_PATH or ./topics.yaml)",
)
_repartition_option = click.option(
    "--allow-repartition",
    is_flag=True,
    default=False,
    help="accept raising partition counts (remaps keys to partitions)",
)


def _load(catalog_path: Path | None) -> tuple[Settings, Catalog]:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* settings: {exc}") from None
    path = catalog_path or settings.catalog_path
    return settings, load_catalog(path)


def _fail(exc: StreamsError) -> None:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(1)


def _summary(result: Plan) -> str:
    if result.refused:
        return f"refused: {len(result.refusals)} problem(s); nothing can be applied as is"
    if result.in_sync:
        return "in sync: every topic matches the catalog"
    parts = []
    if result.creates:
        parts.append(f"{len(result.creates)} to create")
    if result.partition_increases:
        parts.append(f"{len(result.partition_increases)} partition increase(s)")
    if result.config_changes:
        parts.append(f"{len(result.config_changes)} config change(s)")
    if result.replication_drifts:
        parts.append(f"{len(result.replication_drifts)} replication difference(s) (manual)")
    return "pending: " + ", ".join(parts)


@click.group()
def topics() -> None:
    """Plan, apply and list the topics of topics.yaml."""


@topics.command("plan")
@_catalog_option
@_repartition_option
def plan_command(catalog_path: Path | None, allow_repartition: bool) -> None:
    """Show the differences; exit 0 in sync, 2 changes pending, 1 refused."""
    from streams.broker import admin

    try:
        settings, catalog = _load(catalog_path)
        result = admin.plan(settings, catalog, allow_repartition)
    except StreamsError as exc:
        _fail(exc)
        return
    for line in result.lines():
        click.echo(line)
    click.echo(_summary(result))
    raise click.exceptions.Exit(result.exit_code)


@topics.command("apply")
@_catalog_option
@_repartition_option
def apply_command(catalog_path: Path | None, allow_repartition: bool) -> None:
    """Create topics, raise partitions (with the flag) and set drifted configs; never deletes."""
    from streams.broker import admin

    try:
        settings, catalog = _load(catalog_path)
        result = admin.apply(settings, catalog, allow_repartition)
    except StreamsError as exc:
        _fail(exc)
        return
    for line in result.lines():
        click.echo(line)
    if result.changes_pending:
        done = len(result.creates) + len(result.partition_increases) + len(result.config_changes)
        click.echo(f"applied {done} change(s)")
    else:
        click.echo("nothing to apply: topics already match the catalog")
    if result.replication_drifts:
        click.echo(
            f"note: {len(result.replication_drifts)} replication difference(s) left for an operator"
        )


@topics.command("list")
@_catalog_option
def list_command(catalog_path: Path | None) -> None:
    """The desired topics and their status on the cluster."""
    from streams.broker import admin

    try:
        settings, catalog = _load(catalog_path)
        client = admin.admin_client(settings)
        settings = admin.for_cluster(settings, client)
        specs = admin.catalog_topics(settings, catalog)
        result = admin.plan(settings, catalog, admin=client)
    except StreamsError as exc:
        _fail(exc)
        return
    width = max(len(s.name) for s in specs)
    click.echo(f"{'TOPIC':<{width}}  {'ROLE':<9}  {'PARTS':>5}  {'RF':>2}  STATUS")
    for spec in specs:
        click.echo(
            f"{spec.name:<{width}}  {spec.role:<9}  {spec.partitions:>5}  "
            f"{spec.replication_factor:>2}  {result.status_of(spec.name)}"
        )
    family_notes = [r for r in result.refusals if r.kind == "co-partitioning"]
    for refusal in family_notes:
        click.echo(f"! {refusal.topic}: {refusal.reason}")
