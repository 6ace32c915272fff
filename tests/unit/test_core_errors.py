"""core.errors: the handler outcomes, their public home, and the typed deferral kind."""

from __future__ import annotations

import pickle

import pytest

import streams.errors
from streams.core import errors as core_errors
from streams.core import headers as h

MOVED = (
    "StreamsError",
    "HandlerError",
    "Retryable",
    "Permanent",
    "RetryAfter",
    "Deferred",
    "Rejected",
    "DecodeError",
    "EventValidationError",
)


@pytest.mark.parametrize("name", MOVED)
def test_streams_errors_re_exports_the_same_classes(name: str) -> None:
    cls = getattr(core_errors, name)
    assert getattr(streams.errors, name) is cls
    assert name in streams.errors.__all__
    assert issubclass(cls, streams.errors.StreamsError)


@pytest.mark.parametrize("name", MOVED)
def test_the_error_class_header_names_the_public_module(name: str) -> None:
    cls = getattr(core_errors, name)
    assert cls.__module__ == "streams.errors"
    error = cls(1.0, "r") if name in ("RetryAfter", "Deferred") else cls("boom")
    assert h.Failure.from_exception(error).error_class == f"streams.errors.{name}"


def test_errors_survive_pickling_through_their_public_module() -> None:
    error = streams.errors.Permanent("bad request")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is streams.errors.Permanent and str(copy) == "bad request"


def test_the_other_errors_stay_in_streams_errors() -> None:
    assert streams.errors.CatalogError.__module__ == "streams.errors"
    assert issubclass(streams.errors.CatalogError, core_errors.StreamsError)


@pytest.mark.parametrize("kind", ["rate_limited", "circuit_open", "other"])
def test_a_deferral_carries_its_kind(kind: core_errors.DeferralKind) -> None:
    deferred = core_errors.Deferred(2.5, "why", 60.0, reserved=True, kind=kind)
    assert (deferred.kind, deferred.delay_s, deferred.reason) == (kind, 2.5, "why")
    assert (deferred.max_defer_s, deferred.reserved) == (60.0, True)
    assert str(deferred) == "deferred 2.5s: why"


def test_a_deferral_without_a_kind_is_other() -> None:
    assert core_errors.Deferred(1, "rate limit per_user exceeded").kind == "other"


def test_an_unknown_deferral_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        core_errors.Deferred(1, "r", kind="throttled")  # type: ignore[arg-type]
    assert core_errors.DEFERRAL_KINDS == ("rate_limited", "circuit_open", "quiet_hours", "other")
