"""Strict per-key order on the real broker (issue 18's acceptance for ``ordering: strict``).

200 keys, 5 events each, published in one batch. The second event of every fourth key fails
its first attempt (``fail_times=1``: deterministic per event), so 50 keys are held behind a
head waiting 8 s in the retry tier while their 150 later events are parked; ``max_parked``
is 60, so most of those spill to the parking topic. Once every event of the 150 clean keys is
done (progress, not time) the worker is killed (SIGKILL) and started again: the holds come
back from the holds table, the parked events are redelivered and parked (or spilled) again,
and the heads' retries release their keys. The same run with a scale-out instead of the kill
(a second worker joins) moves partitions with their holds to a worker that never saw them.

A second test dead-letters a key's head (a permanent failure until the test puts a fix in
place) and redrives it with ``streams dlq redrive``: ``on_dead_letter: release`` runs the
key's later events at once, ``hold`` keeps them parked until the redriven head succeeds.

The ledger handler (``tests/support/ledger_handlers.py``) inserts one row per event id
(UNIQUE), so its row order is the order of *first* completions; a rerun after the kill is
counted in its duplicates table and reported. The assertions: every key's events completed
in publish order, none lost; every clean key's events were done before the first retry ran
(the held keys held nobody else up); every held key was still held at the fault (else the
restart proved less) and some events went through the parking topic. The clean keys' rate is
printed beside the rate of a batch without failures run first on the same worker.
"""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.support.engine import TEST_AUDIT, Ledger, audit_rig, read_topic, wait_for
from tests.support.progress import wait_for_count

from streams.cli import cli
from streams.settings import Settings

pytestmark = pytest.mark.kafka

KEYS = 200
PER_KEY = 5
FAILING_EVERY = 4  # every fourth key's second event fails once
BASELINE_KEYS = 150
STRICT_AUDIT = {
    **TEST_AUDIT,
    "ordering": "strict",
    "max_parked": 60,
    "retry": {"delays": ["8s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"},
}


@pytest.fixture
def rig(
    make_settings: Callable[..., Settings], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    overrides = getattr(request, "param", {})
    with audit_rig(make_settings, tmp_path, {**STRICT_AUDIT, **overrides}) as made:
        yield made


def claims(prefix: str, keys: int, failing: bool) -> list[tuple[str, dict[str, Any]]]:
    """``PER_KEY`` events per key, interleaved across keys (seq 0..PER_KEY-1 per key)."""
    items = []
    for seq in range(PER_KEY):
        for k in range(keys):
            details = {"seq": str(seq)}
            if failing and k % FAILING_EVERY == 0 and seq == 1:
                details["fail_times"] = "1"
            items.append(
                (
                    "audit.claim_submitted",
                    {"subject_id": f"{prefix}-{k}", "actor_id": "t", "details": details},
                )
            )
    return items


def done_rows(ledger: Ledger, prefix: str) -> list[tuple[str, int, int]]:
    """(subject, seq, done_at_ms) of the first completions of ``prefix`` keys, in order."""
    rows = ledger.conn.execute(
        "SELECT subject_id, seq, done_at_ms FROM ledger WHERE subject_id LIKE ? ORDER BY rowid",
        (f"{prefix}-%",),
    )
    return [(s, int(q), int(t)) for s, q, t in rows.fetchall()]


def count_done(ledger: Ledger, subjects: set[str]) -> Callable[[], int]:
    marks = ",".join("?" * len(subjects))
    query = f"SELECT count(*) FROM ledger WHERE subject_id IN ({marks})"

    def count() -> int:
        return int(ledger.conn.execute(query, tuple(subjects)).fetchone()[0])

    return count


def rate_per_s(rows: list[tuple[str, int, int]]) -> float:
    stamps = [t for _, _, t in rows]
    return len(stamps) / max(0.001, (max(stamps) - min(stamps)) / 1000)


@pytest.mark.parametrize("fault", ["sigkill", "scale_out"])
def test_strict_order_holds_per_key_through_a_restart_and_spares_other_keys(
    rig: dict[str, Any], fault: str
) -> None:
    ledger: Ledger = rig["ledger"]
    publisher = rig["publisher"]
    worker = rig["start"]()
    worker.wait_ready()

    baseline = claims("base", BASELINE_KEYS, failing=False)
    publisher.publish_batch(baseline)
    wait_for_count(ledger.count, len(baseline), 60, "the baseline events")
    baseline_rate = rate_per_s(done_rows(ledger, "base"))

    publisher.publish_batch(claims("key", KEYS, failing=True))
    failing = {f"key-{k}" for k in range(0, KEYS, FAILING_EVERY)}
    clean = {f"key-{k}" for k in range(KEYS)} - failing
    clean_done = count_done(ledger, clean)
    wait_for_count(clean_done, len(clean) * PER_KEY, 60, "every clean key's events")
    held_at_kill = len(failing) * PER_KEY - count_done(ledger, failing)()
    if fault == "sigkill":
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        worker = rig["start"]()
    else:  # a second worker takes some partitions (and their holds) over
        worker = rig["start"]("w2")
    worker.wait_ready(90)
    total = len(baseline) + KEYS * PER_KEY
    wait_for(lambda: ledger.count() >= total, 60, "every event done after the restart")

    rows = done_rows(ledger, "key")
    by_key: dict[str, list[int]] = defaultdict(list)
    for subject, seq, _ in rows:
        by_key[subject].append(seq)
    broken = {s: seqs for s, seqs in by_key.items() if seqs != list(range(PER_KEY))}
    assert len(by_key) == KEYS and not broken, f"order broken or events lost: {broken}"

    retries = ledger.conn.execute("SELECT min(at_ms) FROM attempts WHERE attempt > 1")
    first_retry_ms = int(retries.fetchone()[0])
    clean_rows = [r for r in rows if r[0] in clean]
    last_clean_ms = max(t for _, _, t in clean_rows)
    parked = read_topic(rig["settings"], f"{rig['settings'].topic_prefix}audit.parked", 3)
    duplicates = ledger.duplicates()
    print(
        f"\nstrict order ({fault}): {KEYS} keys x {PER_KEY}, {len(failing)} held; clean keys "
        f"{rate_per_s(clean_rows):.0f} ev/s vs {baseline_rate:.0f} ev/s without failures; "
        f"last clean done {first_retry_ms - last_clean_ms} ms before the first retry; "
        f"{held_at_kill} events of held keys pending at the kill; {len(parked)} records "
        f"through the parking topic; {duplicates} reruns dropped by the ledger"
    )
    assert last_clean_ms < first_retry_ms, "a clean key waited for a held key's retry"
    assert held_at_kill >= len(failing) * (PER_KEY - 1), "keys were released before the fault"
    assert parked, "nothing spilled to the parking topic: the memory bound was not exercised"


OTHER_KEYS = 30


def redrive(settings: Settings) -> dict[str, Any]:
    env = {
        "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
        "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMS_APP_ID": settings.app_id,
        "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
        "STREAMS_HOME": str(settings.home),
        "STREAMS_CATALOG_PATH": str(settings.catalog_path),
    }
    args = ["dlq", "redrive", "audit", "--json"]
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize(
    "rig", [{"on_dead_letter": "release"}, {"on_dead_letter": "hold"}], indirect=True, ids=str
)
def test_a_dead_lettered_head_releases_or_holds_its_key_until_its_redrive(
    rig: dict[str, Any], tmp_path: Path
) -> None:
    ledger: Ledger = rig["ledger"]
    hold = rig["catalog"].family("audit").on_dead_letter == "hold"
    fix = tmp_path / "fixed"
    held = [
        ("audit.claim_submitted", {"subject_id": "held-0", "actor_id": "t", "details": details})
        for details in ({"seq": "0", "fail_unless": str(fix)}, {"seq": "1"}, {"seq": "2"})
    ]
    others = [
        ("audit.claim_submitted", {"subject_id": f"other-{k}", "actor_id": "t", "details": {}})
        for k in range(OTHER_KEYS)
    ]
    worker = rig["start"]()
    worker.wait_ready()
    rig["publisher"].publish_batch(held + others)
    wait_for_count(ledger.count, OTHER_KEYS + (0 if hold else 2), 60, "the events free to run")
    # every partition has done events published after the held ones: theirs had their turn
    wait_for_count(
        count_done(ledger, {f"other-{k}" for k in range(OTHER_KEYS)}),
        OTHER_KEYS,
        60,
        "the other keys",
    )
    before = [seq for _, seq, _ in done_rows(ledger, "held")]
    assert before == ([] if hold else [1, 2]), before
    fix.touch()
    report = redrive(rig["settings"])
    wait_for_count(count_done(ledger, {"held-0"}), 3, 60, "the held key after the redrive")
    after = [seq for _, seq, _ in done_rows(ledger, "held")]
    print(
        f"\non_dead_letter {'hold' if hold else 'release'}: {before} before the redrive "
        f"({report.get('sent', report)} sent), {after} after"
    )
    assert after == ([0, 1, 2] if hold else [1, 2, 0])
