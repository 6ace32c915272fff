"""Database errors classified as handler outcomes (errors.py's ``Retryable``/``Permanent``).

Transient: a lost or refused connection, a server shutting down, a cancelled statement
(our timeout), resource exhaustion, a serialisation failure or a deadlock (PostgreSQL
SQLSTATE classes 08, 53, 57, 58, 40), SQLite's "database is locked", a call timing out.
Permanent: constraint violations (class 23), bad data (22) and bad SQL (42). Whether a
unique violation means "already done" only the caller knows: it asks
``is_unique_violation`` and decides. Anything unrecognised is retryable.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from streams.errors import HandlerError, Permanent, Retryable

MAX_MESSAGE_CHARS = 300
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23", "42"})
UNIQUE_VIOLATION = "23505"


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE carried by ``exc`` (or the driver error it wraps), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attr in ("sqlstate", "pgcode"):
            value = getattr(current, attr, None)
            if isinstance(value, str) and len(value) == 5:
                return value
        current = getattr(current, "orig", None) or current.__cause__
    return None


def is_unique_violation(exc: BaseException) -> bool:
    """True when ``exc`` is a unique-constraint violation (PostgreSQL 23505, SQLite's
    "UNIQUE constraint failed")."""
    if sqlstate(exc) == UNIQUE_VIOLATION:
        return True
    return isinstance(exc, sa_exc.IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    return f"database: {type(orig).__name__}: {text[:MAX_MESSAGE_CHARS]}"


def classify_db_error(exc: BaseException) -> HandlerError:
    """``exc`` (raised by SQLAlchemy, a driver or a timeout) as Retryable or Permanent."""
    if isinstance(exc, HandlerError):
        return exc
    if isinstance(exc, TimeoutError):
        return Retryable("database: call timed out")
    message = _describe(exc)
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return Retryable(message)
    state = sqlstate(exc)
    if state is not None:
        if state[:2] in _RETRYABLE_SQLSTATE_CLASSES:
            return Retryable(message)
        if state[:2] in _PERMANENT_SQLSTATE_CLASSES:
            return Permanent(message)
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.ProgrammingError):
        return Permanent(message)
    return Retryable(message)  # OperationalError, InterfaceError, OSError, unknown
