"""``streams worker``: run the processors of every family (or some) in one process."""

from __future__ import annotations

import logging

import click

from streams.settings import Settings


def build_registry(
    settings: Settings, families: list[str], handler_modules: list[str], builtin_jobs: bool
) -> object:
    """The handlers: built-in jobs of the families run here, then the user's modules."""
    from streams.jobs.registry import HandlerRegistry, default_registry, import_handler_modules

    builtin = HandlerRegistry()
    if builtin_jobs:
        if "email" in families:
            from streams.jobs.mail import EmailJob

            builtin.add_job(EmailJob(settings))
        if "webhook" in families:
            from streams.jobs.webhook import WebhookJob

            builtin.add_job(WebhookJob(settings))
    import_handler_modules(handler_modules)
    return builtin.merged(default_registry)


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
    "--no-builtin-jobs", is_flag=True, help="Do not register the built-in email and webhook jobs."
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
    registry = build_registry(settings, names, list(handler_modules), not no_builtin_jobs)
    metrics = Metrics.create()
    runtime = Runtime(
        settings=settings,
        catalog=catalog,
        registry=registry,  # type: ignore[arg-type]
        decoder=store,
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
    StreamsWorker(runtime, health, loglevel=loglevel).execute_from_commandline()
