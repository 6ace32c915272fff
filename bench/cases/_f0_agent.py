"""F0's subprocess: a bare faust agent that only counts events.

Run as ``python -m bench.cases._f0_agent``.

Raw key/value serializers, memory store, no web server, no topic declaration, no leader
topic, ``stream_wait_empty=False``; the agent iterates ``stream.noack().events()`` and acks
each event. The stream buffer size and commit interval are the streams worker's. After
F0_EXPECT events it writes {first_s, last_s, calls, cpu} to F0_OUT (JSON) and keeps running
until the bench stops it.

Environment: F0_BOOTSTRAP, F0_TOPIC, F0_APP_ID, F0_EXPECT, F0_OUT.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def main() -> None:
    import faust

    bootstrap = os.environ["F0_BOOTSTRAP"]
    expect = int(os.environ["F0_EXPECT"])
    out = Path(os.environ["F0_OUT"])
    app = faust.App(
        os.environ["F0_APP_ID"],
        broker=[f"kafka://{host}" for host in bootstrap.split(",") if host],
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        stream_wait_empty=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_buffer_maxsize=4096,
        datadir=str(out.parent / f"{os.environ['F0_APP_ID']}-data"),
    )
    topic = app.topic(
        os.environ["F0_TOPIC"],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )

    async def count(stream: faust.StreamT) -> None:  # type: ignore[type-arg]
        calls = 0
        first_s = first_cpu_s = 0.0
        async for event in stream.noack().events():
            calls += 1
            if calls == 1:
                first_s, first_cpu_s = time.monotonic(), time.process_time()
            event.ack()
            if calls == expect:
                record = {
                    "calls": calls,
                    "first_s": first_s,
                    "last_s": time.monotonic(),
                    "first_cpu_s": first_cpu_s,
                    "last_cpu_s": time.process_time(),
                    "pid": os.getpid(),
                }
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(record))
                tmp.replace(out)

    app.agent(topic, name="f0.count")(count)
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    if os.environ.get("F0_SPINNER") != "1":
        # faust's terminal spinner sets the root logger to DEBUG (faust/worker.py,
        # _setup_spinner_handler), so every debug call in aiokafka/faust builds a LogRecord.
        worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
