"""Rate-limit buckets of one key, read from the family's bucket changelog; and their reset.

The buckets live in each worker's faust table ``<family>.buckets``, written through to its
changelog topic (``worker/ratelimit.py``). The API reads the changelog partition the key
belongs to (the main topic's partition of the key: murmur2, as the SDK and aiokafka place
it; a ``provider`` limit has one bucket per partition and ``key`` names the provider) and
reports each bucket as of now: the stored tokens refilled to ``now_ms``, capped at capacity.
A bucket never written is full. The view trails the worker by at most one changelog flush.

A reset cannot be written into the changelog from outside: the owning worker holds the
table in memory and only reads the changelog when it recovers. So the reset is a control
command ``ratelimit-reset/<family>/<key>`` on ``streams.control`` that the owning worker
applies to its own table (``worker/ratelimit_reset.py``), which writes the change through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.broker.offsets import ClusterOffsets
from streams.catalog import Family
from streams.control.model import Command
from streams.core import topology
from streams.core.policies import RateLimit
from streams.core.ratelimit import bucket_key, bucket_params
from streams.settings import Settings
from streams.worker.ratelimit import key_partition, unpack_state
from streams.worker.ratelimit_reset import RATELIMIT_RESET

if TYPE_CHECKING:
    from streams.api.ops_state import Ops

RESET_TTL_MS = 3_600_000


def _buckets(family: Family, key: str) -> list[tuple[RateLimit, int, bytes]]:
    """(limit, changelog partition, table key) of every bucket ``key`` names."""
    out = []
    for limit in family.rate_limits:
        if limit.scope == "key":
            p = key_partition(key, family.partitions)
            out.append((limit, p, bucket_key(limit, key=key, partition=p).encode()))
        elif limit.provider == key:
            out.extend(
                (limit, p, bucket_key(limit, key=key, partition=p).encode())
                for p in range(family.partitions)
            )
    return out


def status(
    offsets: ClusterOffsets, settings: Settings, family: Family, key: str, now_ms: int
) -> dict[str, Any]:
    """The buckets of ``key`` as of ``now_ms`` (blocking: run it in a thread)."""
    topic = topology.changelog_topic(settings.app_id, topology.table_name(family.name, "buckets"))
    wanted = _buckets(family, key)
    by_partition: dict[int, set[bytes]] = {}
    for _, p, table_key in wanted:
        by_partition.setdefault(p, set()).add(table_key)
    stored: dict[bytes, tuple[bytes | None, int]] = {}
    for p, keys in sorted(by_partition.items()):
        stored.update(offsets.last_values(topic, p, keys))
    buckets = []
    for limit, p, table_key in wanted:
        capacity, refill_per_ms = bucket_params(limit, partitions=family.partitions)
        value, offset = stored.get(table_key, (None, None))
        state = unpack_state(value)
        if state is None:
            tokens, updated_ms = float(capacity), None
        else:
            elapsed_ms = max(0, now_ms - state.updated_ms)
            tokens = min(float(capacity), state.tokens + elapsed_ms * refill_per_ms)
            updated_ms = state.updated_ms
        deficit = 1 - tokens
        buckets.append(
            {
                "limit": limit.name,
                "scope": limit.scope,
                "partition": p,
                "capacity": capacity,
                "refill_per_s": refill_per_ms * 1000,
                "tokens": round(tokens, 3),
                "updated_ms": updated_ms,
                "changelog_offset": offset,
                "limited": deficit > 1e-9,
                "next_token_in_ms": max(0, int(deficit / refill_per_ms) + 1) if deficit > 0 else 0,
                "on_exceed": limit.on_exceed,
            }
        )
    return {"family": family.name, "key": key, "at_ms": now_ms, "buckets": buckets}


async def reset(ops: Ops, family: Family, key: str, *, actor: str) -> dict[str, Any]:
    """Issue ``ratelimit-reset/<family>/<key>`` (acks=all); the owning worker applies it."""
    now_ms = ops.clock_ms()
    command = Command(
        kind=RATELIMIT_RESET.name,
        target=f"{family.name}/{key}",
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + RESET_TTL_MS,
        actor=actor,
    )
    offset = await ops.cluster(lambda _offsets: ops.control_writer().issue(command))
    return {
        "family": family.name,
        "key": key,
        "command": command.key,
        "issued_at_ms": now_ms,
        "expires_at_ms": now_ms + RESET_TTL_MS,
        "control_offset": offset,
        "state": "issued",
    }
