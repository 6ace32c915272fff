"""Batch handlers: one call for many events, one outcome per event.

::

    from streams.errors import Permanent, Retryable
    from streams.jobs.batch import DONE, Batch, BatchContext, Outcome
    from streams.jobs.registry import handler

    @handler("analytics.rollup_requested", batch=Batch(max_events=100, max_wait_ms=1000))
    async def rollup(events: list[Any], ctx: BatchContext) -> list[Outcome]:
        ...
        return [DONE if ok else Retryable("store busy") for ok in results]

The worker collects the events of one event type that passed decoding, idempotency,
cancellation and the rate gate (each event on its own, as for a plain handler) and calls
the handler once ``max_events`` are collected or ``max_wait_ms`` after the first one
arrived. ``ctx.contexts[i]`` is the ``JobContext`` of ``events[i]`` (its id, attempt,
headers, position, cancel signal).

Outcomes are the errors a plain handler raises, *returned* per event instead: ``DONE``, or
an exception instance (``Retryable``, ``RetryAfter``, ``Permanent``, ``Suppressed``,
``Cancelled``, any other exception = retryable), routed for that event alone exactly as if
its own handler had raised it. The handler returns them as a sequence in the order of
``events`` or as a mapping event id -> outcome. A result that does not give every event
exactly one outcome is a bug in the handler: every event of the batch retries with
``BatchResultError`` saying what was wrong (never silently done). An exception raised by the
handler itself (or its timeout, the family's ``handler_timeout`` for the whole call) is the
outcome of every event of the batch, each routed individually.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.errors import ConfigError, Retryable
from streams.jobs.base import DependencyGuard, JobContext, JobTable, no_guard

MAX_EVENTS_LIMIT = 10_000
MAX_WAIT_MS_LIMIT = 60_000  # the partitions commit nothing past a waiting event


@dataclass(frozen=True)
class Batch:
    """When a batch handler is called: at ``max_events`` collected events, or
    ``max_wait_ms`` milliseconds after the first of them arrived, whichever comes first.

    Raises ConfigError for a value that is not a positive integer within the limits.
    """

    max_events: int
    max_wait_ms: int

    def __post_init__(self) -> None:
        _check("max_events", self.max_events, MAX_EVENTS_LIMIT)
        _check("max_wait_ms", self.max_wait_ms, MAX_WAIT_MS_LIMIT)


def _check(name: str, value: object, limit: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"Batch.{name} must be an integer, got {value!r}")
    if not 1 <= value <= limit:
        raise ConfigError(f"Batch.{name} must be between 1 and {limit:,}, got {value}")


class Done:
    """The outcome of an event its batch handler finished (use the ``DONE`` instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


DONE = Done()

Outcome = Done | Exception
"""``DONE``, or the error the event failed with (classified as if raised by a handler)."""


@dataclass(frozen=True)
class BatchContext:
    """What a batch handler sees besides the events: ``contexts[i]`` belongs to
    ``events[i]``; ``dependency`` guards calls with the family's circuit breakers (an open
    circuit raises ``Deferred``: raised out of the handler it defers the whole batch,
    returned for one event it defers that event)."""

    family: str
    event_type: str
    contexts: tuple[JobContext, ...]
    dependency: DependencyGuard = no_guard
    tables: Mapping[str, JobTable] = field(default_factory=dict)


BatchResult = Sequence[Outcome] | Mapping[str, Outcome]
BatchHandler = Callable[[list[Any], BatchContext], Awaitable[BatchResult]]


@dataclass(frozen=True)
class BatchSpec:
    """A registered batch handler and its ``Batch``."""

    fn: BatchHandler
    batch: Batch


class BatchResultError(Retryable):
    """A batch handler's result does not give each event of its batch one outcome."""


def match_outcomes(event_ids: Sequence[str], result: object) -> list[Outcome]:
    """The outcome of each of ``event_ids`` (in order) from a batch handler's ``result``.

    Raises BatchResultError naming what is wrong: not a sequence or mapping, a sequence of
    the wrong length, a mapping missing ids or naming ids not in the batch, an outcome that
    is neither ``DONE`` nor an exception.
    """
    n = len(event_ids)
    if isinstance(result, Mapping):
        outcomes = _from_mapping(event_ids, result)
    elif isinstance(result, Sequence) and not isinstance(result, str | bytes):
        if len(result) != n:
            raise BatchResultError(f"batch handler returned {len(result)} outcomes for {n} events")
        outcomes = list(result)
    else:
        raise BatchResultError(
            f"batch handler returned a {type(result).__name__}, not a list of outcomes "
            f"or a mapping event id -> outcome"
        )
    for i, outcome in enumerate(outcomes):
        if not isinstance(outcome, Done | Exception):
            raise BatchResultError(
                f"batch handler's outcome for event {event_ids[i]} is a "
                f"{type(outcome).__name__} ({outcome!r:.40}), not DONE or an exception"
            )
    return outcomes


def _from_mapping(event_ids: Sequence[str], result: Mapping[Any, Any]) -> list[Any]:
    missing = [eid for eid in event_ids if eid not in result]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BatchResultError(
            f"batch handler returned no outcome for event {missing[0]}{more} "
            f"(of {len(event_ids)} events)"
        )
    extra = set(result) - set(event_ids)
    if extra:
        first = sorted(map(str, extra))[0]
        raise BatchResultError(
            f"batch handler returned outcomes for {len(extra)} event(s) not in its batch, "
            f"e.g. {first}"
        )
    return [result[eid] for eid in event_ids]
