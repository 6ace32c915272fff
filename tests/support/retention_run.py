"""Run one retention policy in a process of its own (the kill-midway test SIGKILLs it).

python -m tests.support.retention_run URL RETENTION_YAML ARCHIVE_DIR POLICY RUN_ID TICK_MS BATCH
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from streams.retention.engine import RetentionEngine
from streams.retention.rules import load_retention
from streams.store.database import Database


async def main(
    url: str, config: str, archive_dir: str, policy: str, run_id: str, tick_ms: str, batch: str
) -> None:
    db = Database(url)
    try:
        engine = RetentionEngine(db, load_retention(Path(config)), archive_dir=Path(archive_dir))
        await engine.run(policy, run_id=run_id, tick_ms=int(tick_ms), batch_size=int(batch))
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
