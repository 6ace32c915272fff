"""Job discovery through the ``streams.jobs`` entry points, and the registry it fills."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from tests.support.sample_job import JOB as SAMPLE
from tests.support.sample_job import SampleJob, SampleSettings

from streams.errors import ConfigError
from streams.jobs.base import JobContext
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
