"""``streams api``: serve the HTTP API on ``STREAMS_API_HOST``:``STREAMS_API_PORT``.

Refuses to start (exit 1, naming the variables) without an authentication configuration.
In dev mode the minted token is printed once on stdout (never logged).
``streams api openapi [--check]`` writes (or checks) the checked-in ``openapi.json``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click
from aiohttp import web
from pydantic import ValidationError

from streams.errors import ConfigError

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'  # no headers: credentials never reach the log


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:
            click.echo(f"streams api: listening on http://{address[0]}:{address[1]}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


OPENAPI_FILE = Path("openapi.json")


@click.group("api", invoke_without_command=True)
@click.pass_context
def api(ctx: click.Context) -> None:
    """Serve the HTTP API (ingest, audit, health, metrics) until SIGINT/SIGTERM."""
    if ctx.invoked_subcommand is None:
        serve()


@api.command("openapi")
@click.option("--out", type=click.Path(path_type=Path), default=OPENAPI_FILE, show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 when the file differs from the document.")
def openapi_command(out: Path, check: bool) -> None:
    """Write this API's OpenAPI 3.1 document (no broker or store needed)."""
    from streams.api.openapi import render, served_document

    text = render(served_document())
    if check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            raise click.ClickException(f"{out} is stale: run `streams api openapi`")
        click.echo(f"{out}: current")
        return
    out.write_text(text)
    click.echo(f"wrote {out}")


def serve() -> None:
    from streams.api.app import create_app
    from streams.api.auth_setup import build_authenticator
    from streams.api.settings import ApiSettings
    from streams.settings import Settings
    from streams.store.settings import StoreSettings

    try:
        settings = ApiSettings()
        store = StoreSettings()
        kafka = Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* settings: {exc}") from None
    authenticator, token = build_authenticator(settings)
    kafka.bootstrap  # noqa: B018 - ConfigError now (exit 1) when no cluster is configured
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings, store, authenticator, kafka=kafka)
    if token is not None:
        click.echo("streams api: DEV MODE, a random token secret; viewer+admin token:")
        click.echo(f"  Authorization: Bearer {token}")
    asyncio.run(_serve(app, settings.api_host, settings.api_port))
