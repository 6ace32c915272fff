"""Load that keeps going through a fault: a publisher thread paced by the side effects.

``PacedLoad`` publishes ``total`` audit claims in batches through the SDK, never more
than ``ahead`` events past the count of the side-effect ledger at ``ledger_path`` (read on
the thread's own connection), so it is still publishing
whatever the machine's speed when a test injects its fault at a count of side effects.
A batch the broker did not acknowledge in full is published again, the items that failed
with their own event ids (an item stored but not acknowledged then reaches the worker
twice, and its idempotency drops the second copy). ``acked`` are the ids the broker
acknowledged, ``unacknowledged`` those a publish reported failed at least once.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from streams.errors import BatchPublishError, PublishError

POLL_S = 0.01


class PacedLoad(threading.Thread):
    def __init__(
        self,
        publisher: Any,
        *,
        total: int,
        ledger_path: Path,
        batch: int = 50,
        ahead: int = 200,
        keys: int = 50,
        deadline_s: float = 120.0,
        **details: str,
    ) -> None:
        super().__init__(name="paced-load", daemon=True)
        self.publisher = publisher
        self.total = total
        self.batch = batch
        self.ahead = ahead
        self.ledger_path = ledger_path
        self.deadline_s = deadline_s
        self.items = [
            {
                "event_type": "audit.claim_submitted",
                "event_id": str(uuid.uuid4()),
                "payload": {
                    "subject_id": f"claim-{i % keys}",
                    "actor_id": "load",
                    "details": {**details, "seq": str(i)},
                },
            }
            for i in range(total)
        ]
        self.acked: list[str] = []
        self.unacknowledged: set[str] = set()
        self.publish_errors = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    @property
    def published(self) -> int:
        """Events acknowledged so far."""
        return len(self.acked)

    @property
    def finished(self) -> bool:
        return not self.is_alive()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        from tests.support.engine import Ledger

        ledger = Ledger(self.ledger_path)
        try:
            for start in range(0, self.total, self.batch):
                while self.published - ledger.count() >= self.ahead:
                    if self._halt.wait(POLL_S):
                        return
                self._publish(self.items[start : start + self.batch])
                if self._halt.is_set():
                    return
        except BaseException as exc:  # reported by the test (check())
            self.error = exc
        finally:
            ledger.conn.close()

    def _publish(self, items: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + self.deadline_s
        while items and not self._halt.is_set():
            try:
                results = self.publisher.publish_batch(items)
                self.acked.extend(r.event_id for r in results)
                return
            except BatchPublishError as exc:
                if not exc.sent:
                    raise
                self.publish_errors += len(exc.errors)
                self.acked.extend(r.event_id for r in exc.results if r is not None)
                items = [items[i] for i in sorted(exc.errors)]
            except PublishError:  # the whole call failed (e.g. metadata): all again
                self.publish_errors += len(items)
            self.unacknowledged.update(item["event_id"] for item in items)
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(items)} events still not acknowledged")

    def check(self) -> None:
        """Raise what the thread raised (a test calls it once the load is over)."""
        if self.error is not None:
            raise AssertionError(f"the load thread failed: {self.error!r}") from self.error
