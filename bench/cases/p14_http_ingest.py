"""P14 (benchmarks.md's "P11 HTTP ingest"; P10/P11 were taken here): events/s through
``POST /v1/events:batch`` of a real ``streams api`` process, beside the SDK's
``Publisher.publish_batch`` of the same events in the same run.

Setup creates the ``email`` family's main topic, starts ``streams api`` (HS256 token,
the run's prefix, a catalog of the email family only, no rate limit to speak of) and
builds N ``email.requested`` payloads of about 200 encoded bytes. Each run, in
alternating order: HTTP — N events in batches of ``BATCH`` (the API's default maximum),
``IN_FLIGHT`` requests at once, every one answered 202 (every event acknowledged with
acks=all); SDK — one ``publish_batch`` of the same N payloads. Value: HTTP events/s;
``ratio_to_sdk`` = HTTP / SDK. No target (reported beside P9).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cases.p9_publish import EVENT_TYPE, payload
from bench.harness import BenchContext, Case, Sample, Summary

BATCH = 500
IN_FLIGHT = 4
SECRET = "bench-http-ingest-" + "b" * 32
ISSUER, AUDIENCE = "bench", "streams-api"
START_TIMEOUT_S = 90.0
PAD_CHARS = 60  # about 200 encoded bytes with the fields of p9's payload


@dataclass
class _State:
    process: Any  # streams.testing.processes.ManagedProcess
    url: str
    token: str
    publisher: Any
    bodies: list[bytes]
    items: list[tuple[str, dict[str, Any]]]
    workdir: tempfile.TemporaryDirectory[str]
    rounds: int = 0


def setup(ctx: BenchContext) -> _State:
    import jwt

    from streams import Publisher
    from streams.catalog import desired_topics, load_catalog
    from streams.testing.processes import ManagedProcess, free_port, write_catalog

    catalog = load_catalog(ctx.settings.catalog_path)
    spec = next(
        s
        for s in desired_topics(
            catalog, prefix=ctx.settings.topic_prefix, app_id=ctx.settings.app_id, rf_override=1
        )
        if s.family == "email" and s.role == "main"
    )
    ctx.create_topic(spec.name, ctx.partitions, spec.configs)
    workdir = tempfile.TemporaryDirectory(prefix="bench-p14-")
    base = Path(workdir.name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(
        {
            "STREAMS_KAFKA_BOOTSTRAP": ctx.settings.bootstrap,
            "STREAMS_TOPIC_PREFIX": ctx.settings.topic_prefix,
            "STREAMS_CATALOG_PATH": str(write_catalog(base, {"email": {}})),
            "STREAMS_HOME": str(base / "home"),
            "STREAMS_API_PORT": str(port),
            "STREAMS_API_JWT_SECRET": SECRET,
            "STREAMS_API_JWT_ISSUER": ISSUER,
            "STREAMS_API_JWT_AUDIENCE": AUDIENCE,
            "STREAMS_API_RATE_LIMIT_PER_MIN": "1000000",
        }
    )
    process = ManagedProcess(
        [sys.executable, "-m", "streams", "api"], env, base / "api.log", die_with_parent=True
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{url}/health/startup", timeout_s=START_TIMEOUT_S, interval_s=0.1)
    now = int(time.time())
    token = jwt.encode(
        {"sub": "bench", "roles": ["producer"], "iss": ISSUER, "aud": AUDIENCE, "exp": now + 86400},
        SECRET,
        "HS256",
    )
    items = [(EVENT_TYPE, payload(i, PAD_CHARS)) for i in range(ctx.events)]
    bodies = [
        json.dumps(
            {"events": [{"event_type": t, "payload": p} for t, p in items[i : i + BATCH]]}
        ).encode()
        for i in range(0, len(items), BATCH)
    ]
    publisher = Publisher(ctx.settings, catalog=catalog, producer_name="bench")
    state = _State(process, url, token, publisher, bodies, items, workdir)
    asyncio.run(_post_all(state, bodies[:1]))  # warm: connections, producer id, topic check
    publisher.publish_batch(items[:100])
    return state


async def _post_all(state: _State, bodies: list[bytes]) -> int:
    import aiohttp

    headers = {"Authorization": f"Bearer {state.token}", "Content-Type": "application/json"}
    gate = asyncio.Semaphore(IN_FLIGHT)
    url = f"{state.url}/v1/events:batch"

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:

        async def one(body: bytes) -> int:
            async with gate, http.post(url, data=body, headers=headers) as response:
                answer = await response.json(content_type=None)
                if response.status != 202:
                    raise RuntimeError(f"P14: HTTP {response.status}: {answer}")
                return len(answer["results"])

        counts = await asyncio.gather(*(one(b) for b in bodies))
    return sum(counts)


def _time_http(state: _State) -> float:
    started = time.perf_counter()
    acked = asyncio.run(_post_all(state, state.bodies))
    elapsed_s = time.perf_counter() - started
    if acked != len(state.items):
        raise RuntimeError(f"P14: {acked} acknowledged of {len(state.items)}")
    return acked / elapsed_s


def _time_sdk(state: _State) -> float:
    started = time.perf_counter()
    results = state.publisher.publish_batch(state.items, timeout_s=300)
    return len(results) / (time.perf_counter() - started)


def run(ctx: BenchContext, state: _State) -> Sample:
    state.rounds += 1
    if state.rounds % 2:
        http, sdk = _time_http(state), _time_sdk(state)
    else:
        sdk = _time_sdk(state)
        http = _time_http(state)
    return Sample(http, {"sdk_events_per_s": sdk, "ratio_to_sdk": http / sdk})


def teardown(state: _State) -> None:
    state.publisher.close(10)
    state.process.stop(20)
    state.workdir.cleanup()


def _note(summary: Summary) -> str:
    sdk = summary.detail("sdk_events_per_s")
    ratio = summary.detail("ratio_to_sdk")
    return (
        f"SDK publish_batch of the same events median {sdk[0]:,.0f} events/s; HTTP/SDK median "
        f"{ratio[0]:.2f} (min {ratio[1]:.2f}, max {ratio[2]:.2f}); batches of {BATCH}, "
        f"{IN_FLIGHT} requests in flight"
    )


CASE = Case(
    id="P14",
    title="HTTP ingest (batched) vs SDK",
    unit="events/s",
    target="report beside P9 (SDK)",
    setup=setup,
    run=run,
    teardown=teardown,
    note=_note,
    concurrency=f"1 API process, {IN_FLIGHT} requests of {BATCH} in flight",
)
