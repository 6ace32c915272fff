"""Job discovery through the ``streams.jobs`` entry points, and the registry it fills."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
from tests.support.sample_job import JOB as SAMPLE
from tests.support.sample_job import SampleJob, SampleSettings

from streams.errors import ConfigError
from streams.jobs.base import JobContext
from streams.jobs.batch import DONE, Batch, BatchContext, Outcome
from streams.jobs.registry import (
    ENTRY_POINT_GROUP,
    HandlerRegistry,
    build_registry,
    discover_jobs,
    job_entry_points,
    load_spec,
)


def _entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_builtin_jobs_are_declared_in_the_installed_metadata() -> None:
    names = {ep.name: ep.value for ep in job_entry_points()}
    assert names["email"] == "streams.jobs.mail:JOB"
    assert names["webhook"] == "streams.jobs.webhook:JOB"


def test_discovery_returns_the_declarations_of_the_requested_families_only() -> None:
    specs = discover_jobs(["webhook"])
    assert [spec.family for spec in specs] == ["webhook"]
    assert specs[0].event_types == ("webhook.requested",)
    assert specs[0].dependencies == ("webhook",)


def test_builtin_false_leaves_out_the_jobs_shipped_with_streams() -> None:
    assert discover_jobs(["email", "webhook"], builtin=False) == []


def test_email_job_declares_its_family_dependency_and_settings() -> None:
    by_module = {s.job_type.__module__: s for s in discover_jobs(["email"])}
    assert set(by_module) == {"streams.jobs.mail", "streams.jobs.mail_suppression"}
    spec = by_module["streams.jobs.mail"]
    assert spec.family == "email"
    assert spec.event_types == ("email.requested",)
    assert spec.dependencies == ("smtp",)
    assert "smtp_host" in spec.settings_type.model_fields


def test_a_third_party_job_is_discovered_and_built_from_its_own_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMS_SAMPLE_GREETING", "bonjour")
    (spec,) = discover_jobs(
        ["push"], entry_points=[_entry("sample", "tests.support.sample_job:JOB")]
    )
    assert spec is SAMPLE
    job = spec.create()
    assert isinstance(job, SampleJob)
    assert job.settings.sample_greeting == "bonjour"


async def test_build_registry_routes_event_types_to_the_discovered_jobs() -> None:
    registry = build_registry(
        ["push"], entry_points=[_entry("sample", "tests.support.sample_job:JOB")]
    )
    job = registry.jobs[0]
    assert isinstance(job, SampleJob)
    handle = registry.get("push.requested")
    assert handle is not None
    await handle(None, JobContext(event_id="e1", event_type="push.requested", family="push"))
    assert job.handled == ["hello e1"]
    assert registry.dependency_family("pushprov:api.example:443") == "push"
    assert registry.dependency_family("smtp:relay:25") is None


def test_an_entry_point_that_names_something_else_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"'odd'.*names a object, not a .*JobSpec"):
        load_spec(_entry("odd", "tests.support.sample_job:NOT_A_SPEC"))


def test_an_entry_point_that_cannot_be_imported_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"'gone'.*cannot be loaded"):
        load_spec(_entry("gone", "tests.support.no_such_module:JOB"))


def test_two_families_cannot_claim_one_dependency() -> None:
    registry = HandlerRegistry()
    registry.add_job(SampleJob(SampleSettings()), SAMPLE)
    other = HandlerRegistry()

    class Other(SampleJob):
        event_types = ("webhook.requested",)

    from dataclasses import replace

    other.add_job(Other(SampleSettings()), replace(SAMPLE, family="webhook", job_type=Other))
    with pytest.raises(ConfigError, match="'pushprov' is declared by the jobs of families"):
        registry.merged(other)


def test_a_job_without_spec_claims_no_dependency() -> None:
    registry = HandlerRegistry()
    registry.add_job(SampleJob(SampleSettings()))
    assert registry.get("push.requested") is not None
    assert registry.dependency_family("pushprov:x") is None


SMALL = Batch(max_events=5, max_wait_ms=100)


class _BatchingJob(SampleJob):
    event_types: ClassVar[tuple[str, ...]] = ("push.requested", "consent.changed")
    batches: ClassVar[dict[str, Batch]] = {"push.requested": Batch(max_events=50, max_wait_ms=200)}

    async def handle_batch(self, events: list[Any], ctx: BatchContext) -> list[Outcome]:
        return [DONE for _ in events]


def test_a_job_batches_the_types_it_declares_and_handles_the_others_one_by_one() -> None:
    registry = HandlerRegistry()
    job = _BatchingJob(SampleSettings())
    registry.add_job(job)
    spec = registry.batch_handler("push.requested")
    assert spec is not None and spec.batch == Batch(max_events=50, max_wait_ms=200)
    assert spec.fn == job.handle_batch
    assert registry.get("push.requested") is None  # no plain handler beside the batch one
    assert registry.get("consent.changed") == job.handle
    assert registry.batched_types() == {"push.requested"}


def test_a_job_batching_a_type_it_does_not_handle_or_without_handle_batch_is_refused() -> None:
    class Stray(_BatchingJob):
        batches: ClassVar[dict[str, Batch]] = {
            "email.requested": Batch(max_events=5, max_wait_ms=100)
        }

    with pytest.raises(ConfigError, match=r"Stray.batches names \['email.requested'\]"):
        HandlerRegistry().add_job(Stray(SampleSettings()))

    class NoBatchMethod(SampleJob):
        batches: ClassVar[dict[str, Batch]] = {
            "push.requested": Batch(max_events=5, max_wait_ms=100)
        }

    with pytest.raises(ConfigError, match="declares batches but has no handle_batch"):
        HandlerRegistry().add_job(NoBatchMethod(SampleSettings()))


def test_jobs_command_lists_each_job_with_its_settings_and_hides_secrets() -> None:
    from click.testing import CliRunner

    from streams.cli import cli

    result = CliRunner().invoke(cli, ["jobs"])
    assert result.exit_code == 0, result.output
    assert "email  (streams.jobs.mail:JOB)" in result.output
    assert "  dependencies: smtp" in result.output
    assert "STREAMS_SMTP_HOST = 127.0.0.1" in result.output
    assert "STREAMS_WEBHOOK_SIGNING_SECRET = (secret)" in result.output
    assert "change-me" not in result.output


def test_a_declared_dependency_gets_its_job_familys_breaker_policy() -> None:
    from pathlib import Path

    import yaml

    from streams.catalog import parse_catalog
    from streams.worker.composition import breaker_policy

    data = yaml.safe_load((Path(__file__).parents[2] / "topics.yaml").read_text())
    data["families"]["push"]["circuit_breaker"] = {"failure_threshold": 2, "cooldown": "1s"}
    catalog = parse_catalog(data)
    sample = _entry("sample", "tests.support.sample_job:JOB")
    registry = build_registry(["push"], entry_points=[sample])
    assert breaker_policy(catalog, registry, "pushprov:api:443").failure_threshold == 2
    assert breaker_policy(catalog, registry, "push:x").failure_threshold == 2  # named after it
    first = next(iter(catalog.families.values())).circuit_breaker
    assert breaker_policy(catalog, registry, "elsewhere:x") == first
