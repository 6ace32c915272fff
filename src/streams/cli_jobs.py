"""``streams jobs``: the jobs this installation discovers, and the settings each one reads."""

from __future__ import annotations

import click


@click.command("jobs")
def jobs() -> None:
    """List the jobs found through the ``streams.jobs`` entry points: family, event types,
    guarded dependencies, and their settings (environment variables, defaults)."""
    from streams.jobs.registry import job_entry_points, load_spec

    for entry_point in job_entry_points():
        spec = load_spec(entry_point)
        click.echo(f"{spec.family}  ({entry_point.value})")
        click.echo(f"  events:       {', '.join(spec.event_types)}")
        click.echo(f"  dependencies: {', '.join(spec.dependencies) or '-'}")
        prefix = str(spec.settings_type.model_config.get("env_prefix", ""))
        for name, field in spec.settings_type.model_fields.items():
            secret = "SecretStr" in str(field.annotation)
            default = field.default
            if field.default_factory is not None:
                default = "(computed)"
            if secret:
                default = "(secret)"
            click.echo(f"  {prefix}{name.upper()} = {default!s}")
