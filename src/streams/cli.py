"""The ``streams`` command line. Subcommands load lazily so each stays one small module."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> "module:attribute" of a click command or group
_COMMANDS = {
    "broker": "streams.cli_broker:broker",
    "topics": "streams.cli_topics:topics",
    "publish": "streams.cli_publish:publish",
    "worker": "streams.cli_worker:worker",
    "dlq": "streams.cli_dlq:dlq",
    "jobs": "streams.cli_jobs:jobs",
    "up": "streams.cli_up:up",
    "schemas": "streams.cli_schemas:schemas",
    "audit": "streams.cli_audit:audit",
    "store": "streams.cli_store:store",
    "api": "streams.cli_api:api",
    "families": "streams.cli_families:families",
    "schedules": "streams.schedules.cli:schedules",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="streams")
def cli() -> None:
    """streams: a Kafka-native background-job pipeline."""


def main(argv: list[str] | None = None) -> Any:
    """Console entry point; StreamsError becomes a one-line message and exit code 1."""
    from streams.errors import StreamsError

    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except StreamsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
