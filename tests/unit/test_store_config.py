"""Store settings (which database, which driver) and error classification."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from streams.errors import ConfigError, Permanent, Retryable
from streams.store.errors import classify_db_error, is_unique_violation, sqlstate
from streams.store.settings import StoreSettings, async_url


def test_the_default_is_a_sqlite_file_under_streams_home(tmp_path: Path) -> None:
    url = StoreSettings(home=tmp_path).resolved_url()
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(tmp_path / "streams.db")


def test_streams_database_url_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMS_DATABASE_URL", "postgresql://u:secret@db:5432/audit")
    url = StoreSettings().resolved_url()
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.database, url.password) == ("db", 5432, "audit", "secret")


@pytest.mark.parametrize(
    ("text", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgres://h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg"),
    ],
)
def test_urls_get_the_async_driver(text: str, driver: str) -> None:
    assert async_url(text).drivername == driver


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mysql://h/db", "unsupported database"),
        ("postgresql+psycopg2://h/db", "not supported"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_urls_are_config_errors(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        async_url(text)


class _PgError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"pg error {code}")
        self.sqlstate = code


def _wrapped(cls: type[sa_exc.DBAPIError], orig: BaseException) -> sa_exc.DBAPIError:
    return cls("INSERT ...", {}, orig)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("40001", Retryable),  # serialization failure
        ("40P01", Retryable),  # deadlock
        ("08006", Retryable),  # connection failure
        ("57P01", Retryable),  # admin shutdown
        ("57014", Retryable),  # statement timeout / cancel
        ("53300", Retryable),  # too many connections
        ("23505", Permanent),  # unique violation: the caller decides "already done"
        ("23502", Permanent),  # not-null violation
        ("22001", Permanent),  # value too long
        ("42P01", Permanent),  # undefined table
    ],
)
def test_postgresql_errors_are_classified_by_sqlstate(code: str, outcome: type) -> None:
    err = _wrapped(sa_exc.DBAPIError, _PgError(code))
    assert sqlstate(err) == code
    assert type(classify_db_error(err)) is outcome


def test_sqlite_errors_are_classified_by_kind() -> None:
    locked = _wrapped(sa_exc.OperationalError, Exception("database is locked"))
    assert isinstance(classify_db_error(locked), Retryable)
    unique = _wrapped(sa_exc.IntegrityError, Exception("UNIQUE constraint failed: t.event_id"))
    assert isinstance(classify_db_error(unique), Permanent)
    assert is_unique_violation(unique)
    not_null = _wrapped(sa_exc.IntegrityError, Exception("NOT NULL constraint failed: t.x"))
    assert not is_unique_violation(not_null)


def test_timeouts_lost_connections_and_unknown_errors_are_retryable() -> None:
    assert isinstance(classify_db_error(TimeoutError()), Retryable)
    assert isinstance(classify_db_error(ConnectionRefusedError("refused")), Retryable)
    lost = sa_exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert isinstance(classify_db_error(lost), Retryable)
    assert "gone" in str(classify_db_error(lost))
