"""atheris harness: header parsing and the route of a failure.

The input is a Kafka header list: names as str or bytes (non-UTF-8, over-long, our own
``streams-*`` names, duplicates), values as None, bytes or str (huge, lone surrogates,
numbers that do not fit 64 bits in the integer headers). The oracle: ``headers.decode``
never raises and stays bounded (value <= MAX_HEADER_VALUE_BYTES, name <=
MAX_HEADER_NAME_BYTES, foreign names capped), what it keeps survives ``encode`` ->
``decode``; and routing a failure of that record (``plan_failure`` -> ``encode``, as
the worker does on the way to a retry tier or the DLQ) never raises and grows the
headers by no more than the family's header reserve.

    .venv/bin/python fuzz/fuzz_headers.py -runs=20000           # what CI runs (seeded)
    .venv/bin/python fuzz/fuzz_headers.py -max_total_time=600
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["streams"]):
    from streams.catalog import Family
    from streams.core import headers as h
    from streams.core.errors import DecodeError, Deferred, RetryAfter
    from streams.core.planner import DeadLetter, is_due, plan_failure
    from streams.core.policies import RetryPolicy

KNOWN = sorted((*h.EVENT_HEADERS, *h.FAILURE_HEADERS, h.LANE))
POLICY = RetryPolicy(delays_ms=(1_000, 60_000), max_attempts=3)
MAX_KEPT = len(KNOWN) + 2 * h.MAX_FOREIGN_HEADERS
HEADER_RESERVE_BYTES = Family.model_fields["header_reserve_bytes"].default


def headers_of(fdp: Any) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    for _ in range(fdp.ConsumeIntInRange(0, 80)):
        kind = fdp.ConsumeIntInRange(0, 5)
        if kind == 0:
            name: Any = KNOWN[fdp.ConsumeIntInRange(0, len(KNOWN) - 1)]
        elif kind == 1:
            name = "streams-" + fdp.ConsumeUnicode(8)
        elif kind == 2:
            name = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
        elif kind == 3:
            name = "n" * fdp.ConsumeIntInRange(200, 400)
        else:
            name = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 20))  # may hold surrogates
        shape = fdp.ConsumeIntInRange(0, 4)
        if shape == 0:
            value: Any = None
        elif shape == 1:
            value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        elif shape == 2:
            value = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64))
        elif shape == 3:
            value = bytes([fdp.ConsumeIntInRange(0, 255)]) * fdp.ConsumeIntInRange(0, 70_000)
        else:
            value = str(fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 40))).encode()
        out.append((name, value))
    return out


def error_of(fdp: Any) -> BaseException:
    kind = fdp.ConsumeIntInRange(0, 3)
    text = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 600))
    if kind == 0:
        return DecodeError(text)
    if kind == 1:
        return RetryAfter(abs(fdp.ConsumeFloat()), text)
    if kind == 2:
        return Deferred(abs(fdp.ConsumeFloat()), text)
    return RuntimeError(text)


def size_bytes(raw: list[tuple[Any, Any]]) -> int:
    def size(x: Any) -> int:
        if isinstance(x, bytes):
            return len(x)
        return len(x.encode("utf-8", errors="replace")) if isinstance(x, str) else 0

    return sum(size(n) + size(v) for n, v in raw)


def check(raw: list[tuple[Any, Any]], error: BaseException, now_ms: int) -> None:
    out = h.decode(raw)
    if len(out) > MAX_KEPT:
        raise AssertionError(f"kept {len(out)} headers")
    for name, value in out.items():
        if len(value.encode("utf-8")) > h.MAX_HEADER_VALUE_BYTES:
            raise AssertionError(f"value of {name!r} over the bound")
        if len(name.encode("utf-8")) > h.MAX_HEADER_NAME_BYTES:
            raise AssertionError("name over the bound")
    if h.decode(h.encode(out)) != out:
        raise AssertionError("decode(encode(decoded)) differs")
    plan = plan_failure(
        family="email",
        prefix="t.",
        retry=POLICY,
        error=error,
        headers=out,
        origin=h.Origin("t.email", 0, 5, 1_700_000_000_000),
        now_ms=now_ms,
        rand=lambda: 0.5,
        default_max_defer_ms=3_600_000,
    )
    if h.decode(h.encode(plan.headers)) != plan.headers:
        raise AssertionError("the routed headers do not survive a trip through Kafka")
    growth_bytes = size_bytes(h.encode(plan.headers)) - size_bytes(raw)
    if growth_bytes > HEADER_RESERVE_BYTES:
        raise AssertionError(f"routing grew the headers by {growth_bytes} bytes")
    if not isinstance(plan, DeadLetter) and plan.due_at_ms < now_ms:
        raise AssertionError("a retry due before now")
    if is_due(out, now_ms, 0) < 0:
        raise AssertionError("negative wait")
    for name in KNOWN:
        if not -(2**63) <= h.int_header(out, name, 0) < 2**63:
            raise AssertionError(f"{name}: an integer header outside 64 bits")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    now_ms = fdp.ConsumeIntInRange(0, 2**62)
    error = error_of(fdp)
    check(headers_of(fdp), error, now_ms)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
