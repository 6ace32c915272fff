"""atheris harness: the record decoder the worker runs on every record value.

The input is arbitrary bytes, a mutated valid record (any version, sealed fields
included), a valid record with a varint spliced in (a length or count claiming up to
2**63), or a known fingerprint with an arbitrary body. The oracle: ``decode_event``
returns an event or raises DecodeError (EventValidationError is one) or Permanent (a
sealed field that cannot be opened), with a non-empty message; an event it returns
re-encodes and decodes to itself. Anything else is a crash.

    .venv/bin/python fuzz/fuzz_record.py -runs=20000           # what CI runs (seeded)
    .venv/bin/python fuzz/fuzz_record.py -max_total_time=600 corpus/record/
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["streams"]):
    from _common import FINGERPRINTS, SEEDS, STORE, WORKER_DECODER, zigzag_varint

    from streams.errors import DecodeError, Permanent


def value_of(data: bytes) -> bytes:
    """The record value ``data`` describes (see the module docstring)."""
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 3:
        fp = FINGERPRINTS[fdp.ConsumeIntInRange(0, len(FINGERPRINTS) - 1)]
        return b"\xc3\x01" + fp + fdp.ConsumeBytes(fdp.remaining_bytes())
    record = bytearray(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
    if mode == 2:
        at = fdp.ConsumeIntInRange(10, len(record))
        spliced = zigzag_varint(fdp.ConsumeIntInRange(-(2**63), 2**63 - 1))
        return bytes(record[:at]) + spliced + bytes(record[at:])
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        record[fdp.ConsumeIntInRange(10, len(record) - 1)] = fdp.ConsumeIntInRange(0, 255)
    return bytes(record[: fdp.ConsumeIntInRange(10, len(record))])


def check(value: bytes) -> None:
    try:
        event = WORKER_DECODER.decode_event(value)
    except (DecodeError, Permanent) as exc:
        if not str(exc):
            raise AssertionError(f"{type(exc).__name__} without a message") from None
        return
    again = STORE.decode_event(STORE.encode(event))  # opened values re-encode in clear
    if again != event:
        raise AssertionError(f"round trip changed the event: {event!r} -> {again!r}")


def test_one_input(data: bytes) -> None:
    check(value_of(data))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
