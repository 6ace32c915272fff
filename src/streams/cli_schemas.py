"""``streams schemas``: list schema versions, check compatibility."""

from __future__ import annotations

from pathlib import Path

import click


def _schemas_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    from streams.settings import Settings

    return Settings().schemas_dir


_DIR_OPTION = click.option(
    "--dir",
    "schemas_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="schemas directory (default: STREAMS_SCHEMAS_DIR or ./schemas)",
)


@click.group()
def schemas() -> None:
    """Avro event schemas in schemas/<event type>/v<N>.avsc."""


@schemas.command("check")
@_DIR_OPTION
def check(schemas_dir: Path | None) -> None:
    """Validate every schema file and check each newer version against every older one.

    Exits 0 when all is valid and compatible, 1 with one line per problem.
    """
    from streams.serde import check_store

    directory = _schemas_dir(schemas_dir)
    problems = check_store(directory)
    for line in problems:
        click.echo(line)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {directory}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"ok: {directory}: every schema valid, every version compatible")


@schemas.command("list")
@_DIR_OPTION
def list_(schemas_dir: Path | None) -> None:
    """Print every version: event type, version, fingerprint (the wire and header id)."""
    from streams.serde import SchemaStore

    store = SchemaStore.load(_schemas_dir(schemas_dir))
    rows = [
        (v.event_type, f"v{v.version}", v.fingerprint_hex, str(v.path)) for v in store.all_versions
    ]
    width = max([len(r[0]) for r in rows] + [len("TYPE")])
    click.echo(f"{'TYPE':<{width}}  VERSION  FINGERPRINT       FILE")
    for event_type, version, fp, path in rows:
        click.echo(f"{event_type:<{width}}  {version:<7}  {fp}  {path}")
