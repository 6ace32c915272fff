"""``streams worker``: run the processors of every family (or some) in one process."""

from __future__ import annotations

import logging

import click

from streams.settings import Settings


@click.command("worker")
@click.option(
    "--family",
    "-f",
    "families",
    multiple=True,
    help="Run only these families (repeatable); default: all in topics.yaml.",
)
@click.option(
    "--handlers",
    "handler_modules",
    multiple=True,
    help="Import a module that registers handlers (repeatable).",
)
@click.option(
    "--no-builtin-jobs",
    is_flag=True,
    help="Do not load the jobs shipped with streams (jobs of other packages still load).",
)
@click.option("--skip-topology-check", is_flag=True, hidden=True)
@click.option("--loglevel", default="info", show_default=True)
def worker(
    families: tuple[str, ...],
    handler_modules: tuple[str, ...],
    no_builtin_jobs: bool,
    skip_topology_check: bool,
    loglevel: str,
) -> None:
    """Consume the families' main and retry topics and run their handlers.

    Refuses to start when a topic is missing or differs from topics.yaml.
    """
    from streams.broker.admin import require_topology
    from streams.broker.clients import broker_reachable
    from streams.catalog import load_catalog
    from streams.jobs.registry import build_registry
    from streams.metrics import Metrics
    from streams.serde import SchemaStore
    from streams.worker.health import HealthServer
    from streams.worker.runtime import Runtime
    from streams.worker.service import StreamsWorker

    settings = Settings()
    catalog = load_catalog(settings.catalog_path)
    names = list(families) or (
        [f.strip() for f in settings.families.split(",") if f.strip()]
        if settings.families
        else list(catalog.families)
    )
    for name in names:
        catalog.family(name)  # CatalogError names an unknown family
    if not skip_topology_check:
        require_topology(settings, catalog, names)
    store = SchemaStore.load(settings.schemas_dir)
    from streams.crypto import decoder_for  # sensitive fields opened just before the handler

    key_fields = {name: f.key_field for name, f in catalog.families.items()}
    decoder = decoder_for(store, key_fields=key_fields)
    registry = build_registry(names, handler_modules, builtin_jobs=not no_builtin_jobs)
    metrics = Metrics.create()
    runtime = Runtime(
        settings=settings,
        catalog=catalog,
        registry=registry,
        decoder=decoder,
        metrics=metrics,
        families=names,
    )
    health = HealthServer(
        runtime,
        host=settings.http_host,
        port=settings.http_port,
        broker_check=lambda: broker_reachable(settings),
    )
    logging.basicConfig(level=loglevel.upper())
    from streams.schedules.leader import start_leader

    leader = start_leader(settings)  # schedules: fired by the one leader worker (issue 11)
    try:
        StreamsWorker(runtime, health, loglevel=loglevel).execute_from_commandline()
    finally:
        if leader is not None:
            leader.stop()
