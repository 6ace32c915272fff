"""P8: recovery: SIGKILL -> first offset commit by the restarted worker (static membership).

The ``recover<round>`` audit family (PIPE_AUDIT) starts empty (new topics every round).
Worker A (``STREAMS_WORKER_ID=w1``, so ``consumer_group_instance_id=<app id>-w1``) runs the
no-op handler while the bench publishes 500 events/s from a thread. Once A has committed
offsets and run for 3 s, the bench SIGKILLs it and at once starts worker B with the same
worker id and app id, then polls the group's committed offsets of the main topic
(OffsetFetch through a non-subscribed confluent-kafka consumer, every 50 ms). The value is
milliseconds from the kill to the first committed offset past what A had committed; target
<= session timeout + 5 s (STREAMS_SESSION_TIMEOUT_S, default 15 s). Also reported: seconds
to B's /health/ready.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

RATE = 500.0
RUN_BEFORE_KILL_S = 3.0
RECOVERY_TIMEOUT_S = 90.0
KEYS = 1000


@dataclass
class _State:
    pad: str
    session_timeout_s: float
    rounds: int = 0


def setup(ctx: BenchContext) -> _State:
    fam = eng.family(ctx, "recover0", eng.PIPE_AUDIT)
    settings = fam.provision()
    publisher = fam.publisher()
    try:
        pad = eng.pad_for(publisher, ctx.payload_bytes, KEYS)
    finally:
        publisher.close(10)
    return _State(pad, float(settings.session_timeout_s))


class _Feeder(threading.Thread):
    """Publishes RATE events/s until stopped."""

    def __init__(self, fam: eng.BenchFamily, pad: str) -> None:
        super().__init__(name="p8-feeder", daemon=True)
        self.fam, self.pad = fam, pad
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        publisher = self.fam.publisher()
        seq = 0
        started = time.monotonic()
        try:
            while not self.stop_flag.is_set():
                due = int((time.monotonic() - started) * RATE)
                if due > seq:
                    items = [
                        (eng.EVENT_TYPE, eng.payload(i, KEYS, self.pad)) for i in range(seq, due)
                    ]
                    publisher.publish_batch(items, timeout_s=30)
                    seq = due
                time.sleep(0.05)
        except BaseException as exc:  # reported by the case
            self.error = exc
        finally:
            publisher.close(10)


def _committed(consumer: Consumer, topic: str, partitions: int) -> dict[int, int]:
    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)
    return {tp.partition: tp.offset for tp in tps}


def run(ctx: BenchContext, state: _State) -> Sample:
    state.rounds += 1  # new, empty topics every round
    fam = eng.family(ctx, f"recover{state.rounds}", eng.PIPE_AUDIT)
    app_id = fam.next_app_id()
    settings = fam.provision(app_id)
    env = {"BENCH_MODE": "noop"}
    offsets = Consumer(
        {"bootstrap.servers": ctx.bootstrap, "group.id": app_id, "enable.auto.commit": False}
    )
    feeder = _Feeder(fam, state.pad)
    a = eng.worker_process(fam, settings, env, f"{app_id}-a", worker_id="w1")
    b: Any = None
    try:
        a.wait_ready(eng.WORKER_READY_TIMEOUT_S)
        feeder.start()
        deadline = time.monotonic() + 60
        while max(_committed(offsets, fam.main_topic, ctx.partitions).values()) <= 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"P8: worker A committed nothing in 60 s:\n{a.tail()}")
            time.sleep(0.2)
        time.sleep(RUN_BEFORE_KILL_S)
        killed_at = time.monotonic()
        a.proc.kill()
        a.proc.wait(10)
        before = _committed(offsets, fam.main_topic, ctx.partitions)
        b = eng.worker_process(fam, settings, env, f"{app_id}-b", worker_id="w1")
        ready_s = commit_s = None
        deadline = killed_at + RECOVERY_TIMEOUT_S
        while commit_s is None or ready_s is None:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"P8: no commit/ready {RECOVERY_TIMEOUT_S} s after the kill")
            if b.proc.poll() is not None:
                raise RuntimeError(f"P8: worker B exited {b.proc.returncode}:\n{b.tail()}")
            if commit_s is None:
                now_offsets = _committed(offsets, fam.main_topic, ctx.partitions)
                if any(now_offsets[p] > before[p] for p in now_offsets):
                    commit_s = time.monotonic() - killed_at
            if ready_s is None:
                try:
                    if b.health()[0] == 200:
                        ready_s = time.monotonic() - killed_at
                except OSError:
                    pass
            time.sleep(0.05)
    finally:
        feeder.stop_flag.set()
        feeder.join(30)
        offsets.close()
        eng.stop(a)
        if b is not None:
            eng.stop(b)
    if feeder.error is not None:
        raise RuntimeError(f"P8: publishing failed: {feeder.error!r}")
    return Sample(
        commit_s * 1000, {"ready_s": ready_s, "session_timeout_s": state.session_timeout_s}
    )


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median / 1000 <= summary.detail("session_timeout_s")[0] + 5


def _note(summary: Summary) -> str:
    ready = summary.detail("ready_s")
    return (
        f"restart with the same STREAMS_WORKER_ID (static membership); B ready after median "
        f"{ready[0]:.1f} s (min {ready[1]:.1f}, max {ready[2]:.1f}); session timeout "
        f"{summary.detail('session_timeout_s')[0]:.0f} s; {RATE:.0f} events/s published "
        f"throughout"
    )


CASE = Case(
    id="P8",
    title="SIGKILL -> first commit by the restarted worker",
    unit="ms",
    target="<= session timeout + 5 s",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process at a time, static membership",
)
