"""Which compression the publisher should use: ``python -m bench.compression``.

Publishes the same N ``email.requested`` events (200-byte values, as P9) through one
Publisher per codec, interleaved over ``--repeat`` rounds, and reports the median events/s
and the bytes librdkafka sent per event (its ``txbytes`` statistic). Needs
STREAMS_KAFKA_BOOTSTRAP; topics are created under a unique prefix and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

CODECS = ("none", "lz4", "zstd", "snappy", "gzip")


class _TxBytes:
    """librdkafka's cumulative bytes sent to brokers, from the statistics callback."""

    def __init__(self) -> None:
        self.value = 0

    def __call__(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        self.value = sum(b.get("txbytes", 0) for b in stats.get("brokers", {}).values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compression")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--codecs", default="none,lz4,zstd")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("STREAMS_KAFKA_BOOTSTRAP", "").strip()
    if not bootstrap:
        print("set STREAMS_KAFKA_BOOTSTRAP=host:port (a running broker)", file=sys.stderr)
        return 2
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = sorted(set(codecs) - set(CODECS))
    if unknown:
        parser.error(f"unknown codec(s) {unknown}; known: {list(CODECS)}")

    from bench.cases.p9_publish import EVENT_TYPE, payload
    from streams import Publisher
    from streams.broker import admin as topics_admin
    from streams.catalog import load_catalog
    from streams.settings import Settings

    settings = Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=f"benchcomp-{uuid.uuid4().hex[:8]}.",
        replication_factor_override=1,
        publish_timeout_s=120,
    )
    full = load_catalog(settings.catalog_path)
    catalog = full.model_copy(update={"families": {"email": full.families["email"]}})
    topics_admin.apply(settings, catalog)
    items = [(EVENT_TYPE, payload(i, 40)) for i in range(args.events)]
    meters = {c: _TxBytes() for c in codecs}
    publishers: dict[str, Any] = {
        c: Publisher(
            settings,
            catalog=catalog,
            producer_conf={
                "compression.type": c,
                "statistics.interval.ms": 100,
                "stats_cb": meters[c],
            },
        )
        for c in codecs
    }
    rates: dict[str, list[float]] = {c: [] for c in codecs}
    wire: dict[str, list[float]] = {c: [] for c in codecs}
    try:
        for publisher in publishers.values():
            publisher.publish_batch(items[:100])
        for _ in range(args.repeat):
            for codec, publisher in publishers.items():
                time.sleep(0.25)  # let the previous statistics settle
                before = meters[codec].value
                started = time.perf_counter()
                publisher.publish_batch(items)
                rates[codec].append(len(items) / (time.perf_counter() - started))
                time.sleep(0.25)  # one more statistics interval
                wire[codec].append((meters[codec].value - before) / len(items))
    finally:
        for publisher in publishers.values():
            publisher.close(10)
        names = [s.name for s in topics_admin.catalog_topics(settings, catalog)]
        admin = topics_admin.admin_client(settings)
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=60)
    print(f"{args.events:,} email.requested events (200 B values) x {args.repeat} rounds")
    print(f"{'codec':8} {'median ev/s':>12} {'min':>9} {'max':>9} {'wire B/event':>13}")
    for codec in codecs:
        r = rates[codec]
        print(
            f"{codec:8} {statistics.median(r):12,.0f} {min(r):9,.0f} {max(r):9,.0f} "
            f"{statistics.median(wire[codec]):13.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
