"""schedules.yaml: the schedules as data, validated with precise messages.

``load_schedules(path)`` returns the ``Schedule`` list or raises ``ConfigError`` naming the
file, the path inside it (``schedules.<name>.<field>``) and the reason. Each schedule's
event is built once at load time (with its placeholders filled for a sample tick), so a
payload the event model refuses is reported here, not when a tick fires at 2 AM.

Payload placeholders (a string value that is exactly one of them): ``{tick_ms}`` (int, the
tick's UTC ms), ``{tick_day}`` (the tick's local date, YYYY-MM-DD) and ``{previous_day}``
(the local date before it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.core.durations import parse_duration_ms
from streams.errors import ConfigError, InvalidPayload, UnknownEventType
from streams.events import build_event
from streams.schedules.plan import DEFAULT_GRACE_MS, event_id
from streams.settings import _default_path

_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
PLACEHOLDERS = ("{tick_ms}", "{tick_day}", "{previous_day}")
MAX_CATCH_UP = 10_000


class ScheduleSettings(BaseSettings):
    """``STREAMS_SCHEDULES_PATH`` (default: schedules.yaml next to topics.yaml) and whether
    a worker takes part in the leader election (``STREAMS_SCHEDULES_ENABLED``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")

    schedules_path: Path = Field(default_factory=lambda: _default_path("schedules.yaml"))
    schedules_enabled: bool = True


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    cron: str
    timezone: str = "UTC"
    event_type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    catch_up: Literal["skip", "latest", "all"] = "latest"
    max_catch_up: int = Field(default=10, ge=1, le=MAX_CATCH_UP)
    grace: str | int = "1m"
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(
                f"{value!r} is not a cron expression (5 fields, or 6 with seconds last)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. America/Toronto)") from None
        return value

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: str | int) -> str | int:
        parse_duration_ms(value)
        return value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    schedules: dict[str, _Spec] = Field(default_factory=dict)


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    event_type: str
    payload: Mapping[str, Any]
    catch_up: Literal["skip", "latest", "all"]
    max_catch_up: int
    grace_ms: int
    enabled: bool
    description: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def payload_for(self, tick_ms: int) -> dict[str, Any]:
        """The payload with its placeholders filled for ``tick_ms``."""
        local = datetime.fromtimestamp(tick_ms / 1000, UTC).astimezone(self.zone).date()
        values: dict[str, Any] = {
            "{tick_ms}": tick_ms,
            "{tick_day}": local.isoformat(),
            "{previous_day}": (local - timedelta(days=1)).isoformat(),
        }
        return {
            k: values[v] if isinstance(v, str) and v in values else v
            for k, v in self.payload.items()
        }

    def event_id(self, tick_ms: int) -> str:
        return event_id(self.name, tick_ms)


def _format(source: Path | str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}")
    return f"{source}: " + "; ".join(parts)


def parse_schedules(data: Any, source: Path | str = "<schedules>") -> list[Schedule]:
    """Validate parsed YAML; raises ConfigError(file: path: reason; ...)."""
    if data is None:
        data = {}
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(source, exc)) from None
    out: list[Schedule] = []
    for name, spec in parsed.schedules.items():
        where = f"{source}: schedules.{name}"
        if not re.match(_NAME, name):
            raise ConfigError(f"{where}: name must match {_NAME}")
        schedule = Schedule(
            name=name,
            cron=spec.cron,
            timezone=spec.timezone,
            event_type=spec.event_type,
            payload=spec.payload,
            catch_up=spec.catch_up,
            max_catch_up=spec.max_catch_up,
            grace_ms=parse_duration_ms(spec.grace) if spec.grace else DEFAULT_GRACE_MS,
            enabled=spec.enabled,
            description=spec.description,
        )
        try:
            build_event(spec.event_type, schedule.payload_for(0), event_id=schedule.event_id(0))
        except UnknownEventType as exc:
            raise ConfigError(f"{where}.event_type: {exc}") from None
        except InvalidPayload as exc:
            problems = "; ".join(f"payload.{f}: {why}" for f, why in exc.errors)
            raise ConfigError(f"{where}.{problems}") from None
        out.append(schedule)
    return out


def load_schedules(path: Path) -> list[Schedule]:
    """Read and validate schedules.yaml; a missing file is no schedules."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_schedules(data, path)


def find(schedules: list[Schedule], name: str) -> Schedule:
    for s in schedules:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in schedules) or "none"
    raise ConfigError(f"unknown schedule {name!r}; known: {known}")
