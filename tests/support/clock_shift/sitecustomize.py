"""Test support only: a worker started with this directory on PYTHONPATH and
STREAMS_TEST_CLOCK_SHIFT_S=<seconds> sees Python's wall clock (time.time, time.time_ns)
that far ahead -- how the delayed-event test makes a record due an hour from now without
waiting an hour. Kafka's own clock (librdkafka, the broker) and monotonic time are not
touched, so timeouts and heartbeats behave normally."""

import os
import time

_shift_s = float(os.environ.get("STREAMS_TEST_CLOCK_SHIFT_S", "0") or 0)
if _shift_s:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _shift_s  # type: ignore[assignment]
    time.time_ns = lambda: _time_ns() + int(_shift_s * 1e9)  # type: ignore[assignment]
