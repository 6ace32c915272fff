"""``streams up``: the whole system from one command (what ``make run`` runs)."""

from __future__ import annotations

import sys

import click

_PORT = click.IntRange(0, 65535)


@click.command("up")
@click.option(
    "--exit-when-done",
    is_flag=True,
    help="stop everything after the summary; exit 0 when the counts add up, 1 otherwise",
)
@click.option(
    "--keep-broker",
    is_flag=True,
    help="leave a local broker started by this command running at the end",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1.0),
    default=120.0,
    show_default=True,
    help="seconds to wait for the demo events to settle",
)
@click.option(
    "--smtp-port",
    type=_PORT,
    default=None,
    help="SMTP catcher port (default 1025 if free; 0 = any)",
)
@click.option(
    "--webhook-port",
    type=_PORT,
    default=None,
    help="webhook receiver port (default 8099 if free; 0 = any)",
)
@click.option(
    "--http-port",
    type=_PORT,
    default=None,
    help="worker metrics/health port (default: STREAMS_HTTP_PORT, else 6066 if free)",
)
@click.option("--no-demo", is_flag=True, help="start everything but publish no sample events")
@click.option(
    "--no-money",
    is_flag=True,
    help="skip the money step (payment, receipt, refund, renewal against a local provider)",
)
@click.option(
    "--worker-loglevel",
    default="info",
    show_default=True,
    help="the worker's log level (its log goes to $STREAMS_HOME/logs/worker.log)",
)
def up(
    exit_when_done: bool,
    keep_broker: bool,
    timeout_s: float,
    smtp_port: int | None,
    webhook_port: int | None,
    http_port: int | None,
    no_demo: bool,
    no_money: bool,
    worker_loglevel: str,
) -> None:
    """Run the pipeline locally and push a demo through it.

    Uses STREAMS_KAFKA_BOOTSTRAP, or starts a local broker (stopped at the end unless
    --keep-broker); applies topics.yaml; starts an SMTP catcher, a webhook receiver and a
    worker for the email and webhook families; publishes sample events (some bound for
    the DLQ) and shows their progress from the worker's /metrics; then keeps serving until
    Ctrl-C, which stops everything it started. Runs in dev mode (STREAMS_DEV_MODE=true):
    secrets left unset get random per-run values.
    """
    import os

    from pydantic import ValidationError

    from streams.demo.runner import Up, UpOptions
    from streams.demo.services import enter_dev_mode

    enter_dev_mode(os.environ)  # per-run secrets; the worker inherits the environment

    options = UpOptions(
        exit_when_done=exit_when_done,
        keep_broker=keep_broker,
        timeout_s=timeout_s,
        smtp_port=smtp_port,
        webhook_port=webhook_port,
        http_port=http_port,
        demo=not no_demo,
        money=not no_money,
        worker_loglevel=worker_loglevel,
    )
    try:
        runner = Up(options)
    except ValidationError as exc:
        raise click.ClickException(f"invalid STREAMS_* settings: {exc}") from None
    sys.exit(runner.run())
