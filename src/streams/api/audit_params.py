"""``GET /v1/audit``'s query string, parsed strictly (pure: no IO).

Times (``since`` inclusive, ``until`` exclusive, on the event's ``occurred_at``) are
ISO-8601 (UTC unless an offset is given) or integer milliseconds since the epoch. The
``after`` cursor is a previous page's ``next``: ``<occurred_at_ms>.<id>``, the last record
returned. Unknown or repeated parameters are refused, so a typo never widens a query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from streams.api.problems import bad_parameter

DEFAULT_LIMIT = 100
MAX_FILTER_CHARS = 256
_FILTERS = ("subject", "actor", "event_type", "tenant")
PARAMETERS = frozenset({*_FILTERS, "since", "until", "after", "limit"})


@dataclass(frozen=True)
class AuditQuery:
    subject: str | None = None
    actor: str | None = None
    event_type: str | None = None
    tenant: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    after: tuple[int, int] | None = None
    limit: int = DEFAULT_LIMIT


def cursor(occurred_at_ms: int, record_id: int) -> str:
    return f"{occurred_at_ms}.{record_id}"


def parse_time_ms(name: str, text: str) -> int:
    """``text`` (ISO-8601 or epoch ms) as ms since the epoch; Problem 400 naming ``name``."""
    if text.isascii() and text.isdigit() and len(text) <= 16:
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_parameter(
            name, "expected an ISO-8601 time (2026-12-01T10:00:00Z) or epoch milliseconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_cursor(text: str) -> tuple[int, int]:
    head, dot, tail = text.partition(".")
    if not (dot and head.isascii() and head.isdigit() and tail.isascii() and tail.isdigit()):
        raise bad_parameter("after", "expected the 'next' value of a previous page")
    if len(head) > 16 or len(tail) > 19:
        raise bad_parameter("after", "expected the 'next' value of a previous page")
    return int(head), int(tail)


def parse_limit(text: str, max_limit: int) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text[:6]) <= max_limit:
        raise bad_parameter("limit", f"expected an integer 1..{max_limit}")
    return int(text)


def parse_audit_query(params: Mapping[str, Sequence[str]], *, max_limit: int) -> AuditQuery:
    """The query ``params`` (name -> every value sent) describe; Problem 400 otherwise."""
    for name, values in params.items():
        if name not in PARAMETERS:
            raise bad_parameter(name, f"unknown parameter (known: {', '.join(sorted(PARAMETERS))})")
        if len(values) != 1:
            raise bad_parameter(name, "given more than once")
    one = {name: values[0] for name, values in params.items()}
    filters: dict[str, str] = {}
    for name in _FILTERS:
        value = one.get(name)
        if value is not None:
            if not value or len(value) > MAX_FILTER_CHARS:
                raise bad_parameter(name, f"expected 1..{MAX_FILTER_CHARS} characters")
            filters[name] = value
    since_ms = parse_time_ms("since", one["since"]) if "since" in one else None
    until_ms = parse_time_ms("until", one["until"]) if "until" in one else None
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise bad_parameter("until", "is before since")
    return AuditQuery(
        since_ms=since_ms,
        until_ms=until_ms,
        after=parse_cursor(one["after"]) if "after" in one else None,
        limit=parse_limit(one["limit"], max_limit) if "limit" in one else DEFAULT_LIMIT,
        **filters,
    )
