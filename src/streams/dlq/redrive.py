"""Running a redrive: plan (dry-run), send, watch, checkpoint, resume.

The decisions are ``streams.dlq.replay`` (pure) and the pacing, stop rules and checkpoint
are ``streams.dlq.redrive_model`` (pure); this module does the IO in this order:

1. read the resolved-state marks and pre-scan the DLQ snapshot for superseded copies
   (a record whose replay came back: only the newest copy is sent);
2. on a resume, find on the main topic (and the family's priority lane topics) what this
   redrive sent after its last checkpoint
   (``streams-replay-source``) and skip it, so no DLQ record is sent twice by one redrive;
3. send in DLQ order, paced; park records over ``--max-replays`` (state topic);
4. checkpoint (producer flushed first) every ``checkpoint_every`` records or second;
5. with ``--canary N``, after N sends wait for their outcomes and stop on a renewed
   failure; with ``--max-failure-rate``, stop once the renewed failure rate passes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streams.catalog import Catalog
from streams.core.topology import main_topic as main_topic_name
from streams.core.topology import retry_topic
from streams.dlq.filters import DlqFilter
from streams.dlq.kafka_io import (
    CheckpointStore,
    ReplaySender,
    StateStore,
    high_watermarks,
    sent_by,
)
from streams.dlq.outcomes import OutcomeWatcher
from streams.dlq.reader import DlqReader
from streams.dlq.records import DlqRecord, dlq_topic_for
from streams.dlq.redrive_model import Checkpoint, Options, Pacer, Report, Tally, new_redrive_id
from streams.dlq.replay import REPLAY_SOURCE, decide, source_of
from streams.dlq.tenants import TenantLookup
from streams.errors import DlqError
from streams.settings import Settings

__all__ = ["Options", "Redrive", "RedriveBusy", "Report", "new_redrive_id"]


HEARTBEAT_S = 5.0
"""A running redrive writes its checkpoint at least this often (even while it waits)."""
LIVE_AFTER_MS = 15_000
"""A 'running' checkpoint younger than this belongs to a live run: resume refuses it."""


class RedriveBusy(DlqError):
    """The redrive to resume may still be running in another process."""


class Redrive:
    """One family's redrive engine. ``clock_ms``/``sleep`` are injected for tests."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        family: str,
        *,
        tenants: TenantLookup,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self.settings = settings
        self.family = catalog.family(family)
        self.dlq_topic = dlq_topic_for(settings, catalog, family)
        self.main_topic = main_topic_name(settings.topic_prefix, self.family.name)
        # an event of a priority lane goes back to its lane's topic (``replay.decide``)
        self.lane_topics = dict(self.family.topics(settings.topic_prefix).lanes)
        self.tier_topics = [
            retry_topic(settings.topic_prefix, self.family.name, d)
            for d in sorted(set(self.family.retry.delays_ms))
        ]
        self.tenants = tenants
        self.clock_ms = clock_ms
        self.sleep = sleep
        self.on_progress = on_progress
        self.states = StateStore(settings)
        self.checkpoints = CheckpointStore(settings)

    # --- reading ------------------------------------------------------------------------

    def _snapshot(self) -> dict[int, int]:
        return high_watermarks(self.settings, self.dlq_topic)

    def _superseded(self, ends: dict[int, int]) -> set[str]:
        out: set[str] = set()
        with DlqReader(self.settings, self.dlq_topic) as reader:
            ranges = reader.partitions()
            starts = {r.partition: r.low for r in ranges}
            for record in reader.read(starts, ends):
                source = record.headers.get(REPLAY_SOURCE)
                if source:
                    out.add(source)
        return out

    def _tenant(self, selection: DlqFilter, record: DlqRecord) -> str | None:
        return self.tenants.of(record) if selection.needs_tenant else None

    # --- dry run ------------------------------------------------------------------------

    def plan(self, selection: DlqFilter, options: Options) -> Report:
        """What a redrive with ``selection`` would send now; sends nothing."""
        ends = self._snapshot()
        states = self.states.load(self.dlq_topic)
        superseded = self._superseded(ends)
        report = Report("(dry run)", self.family.name, dry_run=True)
        now_ms = self.clock_ms()
        total = sum(ends.values())
        with DlqReader(self.settings, self.dlq_topic) as reader:
            starts = {r.partition: r.low for r in reader.partitions()}
            for n, record in enumerate(reader.read(starts, ends), 1):
                decision = decide(
                    record,
                    redrive_id="(dry run)",
                    main_topic=self.main_topic,
                    lane_topics=self.lane_topics,
                    partitions=self.family.partitions,
                    selection=selection,
                    tenant=self._tenant(selection, record),
                    states=states,
                    superseded=superseded,
                    max_replays=options.max_replays,
                    now_ms=now_ms,
                )
                self._count(report, record, decision.action, decision.reason)
                if n % 1000 == 0:
                    self.on_progress(n, total)
        return report

    def _count(self, report: Report, record: DlqRecord, action: str, reason: str) -> None:
        if action == "skip" and reason == "filtered":
            return
        report.matched += 1
        if action == "skip":
            report.skipped[reason] += 1
            return
        if action == "park":
            report.parked += 1
            return
        report.sent += 1
        report.by_event_type[record.event_type or "(unknown)"] += 1
        report.by_fingerprint[record.fingerprint] += 1
        report.by_tenant[self.tenants.of(record) or "(none)"] += 1
        position = source_of(record)
        report.first = report.first or position
        report.last = position

    # --- running ------------------------------------------------------------------------

    def start(
        self,
        selection: DlqFilter,
        options: Options,
        *,
        actor: str,
        redrive_id: str | None = None,
        on_started: Callable[[str], None] = lambda redrive_id: None,
    ) -> Report:
        """Plan nothing, checkpoint, then send (the run); ``on_started(id)`` is called once
        the first checkpoint is durable (the redrive can be resumed from then on)."""
        now_ms = self.clock_ms()
        ends = self._snapshot()
        watch = {t: high_watermarks(self.settings, t) for t in [*self.tier_topics, self.dlq_topic]}
        checkpoint = Checkpoint(
            redrive_id=redrive_id or new_redrive_id(now_ms),
            family=self.family.name,
            dlq_topic=self.dlq_topic,
            main_topic=self.main_topic,
            actor=actor,
            created_at_ms=now_ms,
            selection=selection.describe(),
            options=options.as_json(),
            end_offsets=ends,
            next_offsets={p: 0 for p in ends},
            main_marks=high_watermarks(self.settings, self.main_topic),
            watch_from=watch,
            lane_marks={t: high_watermarks(self.settings, t) for t in self.lane_topics.values()},
            updated_at_ms=now_ms,
        )
        self.checkpoints.save(checkpoint)  # before anything is sent: a kill can resume
        on_started(checkpoint.redrive_id)
        return self._run(checkpoint, resumed=False)

    def resume(self, redrive_id: str, *, force: bool = False) -> Report:
        """Continue ``redrive_id``. A redrive whose last checkpoint says running and is
        younger than LIVE_AFTER_MS may still be running elsewhere: RedriveBusy unless
        ``force`` (two live runs of one id could both send a record)."""
        checkpoint = self.checkpoints.load(redrive_id)
        if checkpoint is None:
            raise DlqError(f"no redrive {redrive_id!r} in {self.checkpoints.topic}")
        if checkpoint.family != self.family.name:
            raise DlqError(f"redrive {redrive_id} is of family {checkpoint.family}")
        age_ms = self.clock_ms() - checkpoint.updated_at_ms
        if checkpoint.state == "running" and age_ms < LIVE_AFTER_MS and not force:
            raise RedriveBusy(
                f"redrive {redrive_id} may still be running: its last checkpoint is "
                f"{age_ms / 1000:.1f}s old (a live run writes one at least every "
                f"{HEARTBEAT_S:g}s); if its process is gone, wait "
                f"{LIVE_AFTER_MS / 1000:g}s or pass --force"
            )
        return self._run(checkpoint, resumed=True)

    def _run(self, cp: Checkpoint, *, resumed: bool) -> Report:
        if resumed:  # claim it: a concurrent resume now sees a live run
            cp.state, cp.outcome, cp.updated_at_ms = "running", "", self.clock_ms()
            self.checkpoints.save(cp)
        selection = DlqFilter.from_description(cp.selection)
        options = Options.from_json(cp.options)
        report = Report(cp.redrive_id, cp.family, dry_run=False)
        report.sent_before = cp.counts.get("sent", 0)
        report.parked_before = cp.counts.get("parked", 0)
        states = self.states.load(self.dlq_topic)
        superseded = self._superseded(cp.end_offsets)
        already = sent_by(self.settings, self.main_topic, cp.main_marks, cp.redrive_id)
        for topic in self.lane_topics.values():  # no marks (an older checkpoint): from the start
            already |= sent_by(self.settings, topic, cp.lane_marks.get(topic, {}), cp.redrive_id)
        tally = Tally()
        watcher = None
        if options.canary or options.max_failure_rate is not None:
            watcher = OutcomeWatcher(
                self.settings,
                family=self.family.name,
                redrive_id=cp.redrive_id,
                failure_topics=cp.watch_from,
                tally=tally,
            )
        sender = ReplaySender(self.settings)
        pacer = Pacer(options.rate_per_s, time.monotonic)
        canary: set[str] = set()
        canary_open = options.canary > 0 and not resumed and cp.counts.get("sent", 0) == 0
        total = sum(cp.end_offsets[p] - cp.next_offsets.get(p, 0) for p in cp.end_offsets)
        last_cp_s = time.monotonic()
        since_cp = 0
        stop: str | None = None
        last_beat_s = [time.monotonic()]

        def beat() -> None:  # the liveness checkpoint while waiting (see resume)
            if time.monotonic() - last_beat_s[0] >= HEARTBEAT_S:
                self._checkpoint(cp, sender, report)
                last_beat_s[0] = time.monotonic()

        try:
            with DlqReader(self.settings, self.dlq_topic) as reader:
                ranges = {r.partition: r for r in reader.partitions()}
                starts = {
                    p: max(cp.next_offsets.get(p, 0), ranges[p].low if p in ranges else 0)
                    for p in cp.end_offsets
                }
                for n, record in enumerate(reader.read(starts, cp.end_offsets), 1):
                    decision = decide(
                        record,
                        redrive_id=cp.redrive_id,
                        main_topic=self.main_topic,
                        lane_topics=self.lane_topics,
                        partitions=self.family.partitions,
                        selection=selection,
                        tenant=self._tenant(selection, record),
                        states=states,
                        superseded=superseded,
                        max_replays=options.max_replays,
                        now_ms=self.clock_ms(),
                    )
                    source = source_of(record)
                    if decision.action == "send" and source in already:
                        report.matched += 1
                        report.skipped["sent before the resume"] += 1
                    elif decision.action == "send" and decision.replay is not None:
                        self._pace(pacer, watcher, beat)
                        sender.send(decision.replay)
                        pacer.sent()
                        tally.note_sent(source)
                        if watcher is not None:
                            watcher.track(source, decision.replay.event_id)
                        self._count(report, record, "send", "")
                        if canary_open:
                            canary.add(source)
                    else:
                        if decision.action == "park":
                            self.states.mark(
                                source,
                                "parked",
                                actor=cp.actor,
                                at_ms=self.clock_ms(),
                                note=f"{cp.redrive_id}: {decision.reason}",
                            )
                        self._count(report, record, decision.action, decision.reason)
                    cp.next_offsets[record.partition] = record.offset + 1
                    since_cp += 1
                    if n % 500 == 0:
                        self.on_progress(n, total)
                    if canary_open and len(canary) >= options.canary:
                        canary_open = False
                        self._checkpoint(cp, sender, report)
                        stop = self._await_canary(tally, canary, watcher, options, beat)
                        if stop:
                            break
                    if watcher is not None:
                        watcher.poll()
                        if tally.over_failure_rate(options.max_failure_rate, options.min_outcomes):
                            stop = (
                                f"renewed failure rate {tally.failure_rate():.0%} of "
                                f"{tally.outcomes} outcomes passed --max-failure-rate "
                                f"{options.max_failure_rate:g}"
                            )
                            break
                    if since_cp >= options.checkpoint_every or time.monotonic() - last_cp_s > 1:
                        self._checkpoint(cp, sender, report)
                        since_cp, last_cp_s = 0, time.monotonic()
            if stop is None:
                for p, end in cp.end_offsets.items():
                    cp.next_offsets[p] = max(cp.next_offsets.get(p, 0), end)
                if canary_open and canary:  # fewer records than the canary size
                    self._checkpoint(cp, sender, report)
                    stop = self._await_canary(tally, canary, watcher, options, beat)
            report.state = "stopped" if stop else "done"
            report.outcome = stop or f"sent {report.sent + report.sent_before}"
        except BaseException as exc:
            report.state, report.outcome = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            try:
                if watcher is not None:
                    watcher.poll()
                report.done, report.failed = len(tally.done), len(tally.failed)
                cp.state, cp.outcome = report.state, report.outcome
                self._checkpoint(cp, sender, report)
                self.on_progress(total, total)
            finally:
                sender.close()
                self.states.flush()
                if watcher is not None:
                    watcher.close()
        return report

    def _pace(self, pacer: Pacer, watcher: OutcomeWatcher | None, beat: Callable[[], None]) -> None:
        while (wait_s := pacer.wait_s()) > 0:
            beat()
            if watcher is not None:
                watcher.poll(min(wait_s, 0.05))
            else:
                self.sleep(min(wait_s, 0.05))

    def _checkpoint(self, cp: Checkpoint, sender: ReplaySender, report: Report) -> None:
        marks = sender.flush()
        cp.main_marks.update(marks.get(self.main_topic, {}))
        for topic in self.lane_topics.values():
            cp.lane_marks.setdefault(topic, {}).update(marks.get(topic, {}))
        self.states.flush()
        cp.counts = {
            "sent": report.sent_before + report.sent,
            "parked": report.parked_before + report.parked,
        }
        cp.updated_at_ms = self.clock_ms()
        self.checkpoints.save(cp)

    def _await_canary(
        self,
        tally: Tally,
        canary: set[str],
        watcher: OutcomeWatcher | None,
        options: Options,
        beat: Callable[[], None],
    ) -> str | None:
        """None when every canary record is done; the reason to stop otherwise."""
        assert watcher is not None
        deadline = time.monotonic() + options.outcome_timeout_s
        while time.monotonic() < deadline:
            beat()
            watcher.poll(0.2)
            verdict = tally.canary_verdict(canary)
            if verdict == "passed":
                return None
            if verdict is not None:
                failed = sorted(s for s in canary if s in tally.failed)
                return (
                    f"canary: {verdict} (e.g. {failed[0]} came back on {tally.failed[failed[0]]})"
                )
        pending = tally.pending(canary)
        return (
            f"canary: {len(pending)} of {len(canary)} records have no outcome after "
            f"{options.outcome_timeout_s:g}s (is a worker running?)"
        )
