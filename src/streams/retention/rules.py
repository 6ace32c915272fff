"""retention.yaml: policies as data, validated with precise messages.

A *policy* (the ``policy`` of a ``cleanup.due`` event) is a list of *rules*, run in order.
A rule selects rows of one table whose ``timestamp_column`` is older than ``older_than``
(measured from the tick the event was scheduled for, never from "now", so a redelivery
selects the same rows), that match every ``where`` condition, match no ``keep``
condition and whose ``subject_column`` is not on legal hold; then applies its ``action``:

- ``delete``: delete the rows (after anonymising ``children`` rows that point at them);
- ``archive``: write the rows to an archive file, verify it, then set ``mark_column`` to
  the tick (rows stay: payments) or, with ``then_delete``, delete them (critical audit logs);
- ``anonymize``: overwrite ``set`` columns (rows whose ``mark_column`` is set are done);
- ``notice``: publish one e-mail per row (template, address column) and set ``mark_column``;
- ``files``: delete regular files in ``directory`` older than ``older_than`` (by mtime).

Conditions: ``{column, op, value}`` with op ``eq``, ``ne``, ``is_null``, ``not_null``,
``older_than`` (value a duration: the column is a ms timestamp at least that old) or
``newer_than``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.core.durations import parse_duration_ms
from streams.errors import ConfigError
from streams.settings import _default_path

_IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
MAX_BATCH = 100_000


class RetentionSettings(BaseSettings):
    """``STREAMS_RETENTION_PATH``, ``STREAMS_RETENTION_ARCHIVE_DIR`` (archive files)."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")

    retention_path: Path = Field(default_factory=lambda: _default_path("retention.yaml"))
    retention_archive_dir: Path | None = None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: Any) -> int:
    return parse_duration_ms(value)


class Condition(_Model):
    column: str = Field(pattern=_IDENT)
    op: Literal["eq", "ne", "is_null", "not_null", "older_than", "newer_than"]
    value: Any = None

    @model_validator(mode="after")
    def _value(self) -> Condition:
        if self.op in ("is_null", "not_null") and self.value is not None:
            raise ValueError(f"op {self.op} takes no value")
        if self.op in ("eq", "ne") and self.value is None:
            raise ValueError(f"op {self.op} needs a value (use is_null / not_null for NULL)")
        if self.op in ("older_than", "newer_than"):
            _duration(self.value)
        return self

    @property
    def duration_ms(self) -> int:
        return _duration(self.value)


class Child(_Model):
    """Rows of ``table`` whose ``foreign_key`` points at a deleted row: anonymised first."""

    table: str = Field(pattern=_IDENT)
    foreign_key: str = Field(pattern=_IDENT)
    set: dict[str, Any] = Field(min_length=1)


class Notice(_Model):
    template: Literal["notification"] = "notification"
    email_column: str = Field(pattern=_IDENT)
    locale: Literal["en", "fr"] = "en"
    subject: str = "Your account will be deleted"


class Rule(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    why: str = Field(min_length=1, description="the reason written into the audit event")
    action: Literal["delete", "archive", "anonymize", "notice", "files"]
    table: str | None = Field(default=None, pattern=_IDENT)
    key: str = Field(default="id", pattern=_IDENT)
    timestamp_column: str | None = Field(default=None, pattern=_IDENT)
    older_than_ms: int = Field(alias="older_than")
    where: tuple[Condition, ...] = ()
    keep: tuple[Condition, ...] = ()
    subject_column: str | None = Field(default=None, pattern=_IDENT)
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    mark_column: str | None = Field(default=None, pattern=_IDENT)
    then_delete: bool = False
    set: dict[str, Any] = Field(default_factory=dict)
    children: tuple[Child, ...] = ()
    notice: Notice | None = None
    directory: Path | None = None
    pattern: str = "*"

    @field_validator("older_than_ms", mode="before")
    @classmethod
    def _older(cls, value: Any) -> int:
        return _duration(value)

    @model_validator(mode="after")
    def _shape(self) -> Rule:
        if self.action == "files":
            if self.directory is None:
                raise ValueError("action files needs directory")
            return self
        if self.table is None or self.timestamp_column is None:
            raise ValueError(f"action {self.action} needs table and timestamp_column")
        if self.action == "archive" and not self.then_delete and not self.mark_column:
            raise ValueError("archive needs mark_column (rows kept) or then_delete: true")
        if self.action == "anonymize" and (not self.set or not self.mark_column):
            raise ValueError("anonymize needs set (columns to overwrite) and mark_column")
        if self.action == "notice" and (self.notice is None or not self.mark_column):
            raise ValueError("notice needs notice (email_column) and mark_column")
        if self.children and self.action != "delete":
            raise ValueError("children are anonymised only before a delete")
        return self


class _Policy(_Model):
    rules: tuple[Rule, ...] = Field(min_length=1)


class _File(_Model):
    version: Literal[1] = 1
    batch_size: int = Field(default=1000, ge=1, le=MAX_BATCH)
    legal_holds: frozenset[str] = frozenset()
    policies: dict[str, _Policy]


class RetentionConfig(_Model):
    batch_size: int
    legal_holds: frozenset[str]
    policies: dict[str, tuple[Rule, ...]]

    def policy(self, name: str) -> tuple[Rule, ...]:
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none"
            raise ConfigError(f"unknown retention policy {name!r}; known: {known}") from None


def parse_retention(
    data: Any, source: Path | str = "<retention>", *, base: Path | None = None
) -> RetentionConfig:
    """Validate parsed YAML; relative ``directory`` paths are resolved against ``base``."""
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: {details}") from None
    policies: dict[str, tuple[Rule, ...]] = {}
    for name, pol in parsed.policies.items():
        rules = []
        for rule in pol.rules:
            if rule.directory is not None and not rule.directory.is_absolute() and base:
                rule = rule.model_copy(update={"directory": base / rule.directory})
            rules.append(rule)
        policies[name] = tuple(rules)
    return RetentionConfig(
        batch_size=parsed.batch_size, legal_holds=parsed.legal_holds, policies=policies
    )


def load_retention(path: Path) -> RetentionConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_retention(data, path, base=path.parent)
