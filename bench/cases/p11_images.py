"""P11: images per minute through one worker (seed 001's floor: 50 per minute).

Each run provisions an ``image`` family of its own (the run's partition count, catalog
concurrency 2, a prefix per run so no run re-reads another's records), starts one worker
with the image job (2 spawned render processes) and publishes ``min(N, 60)`` uploads of
camera-like 1600 x 1200 JPEGs (about 2 MB, EXIF with GPS, ICC, XMP; five distinct files
cycled). Each is screened, rendered in three sizes x JPEG + WebP and announced. The rate
runs from the first publish to the last upload's outputs on disk; worker start-up is not
timed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.support.engine import WorkerProcess

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

MAX_IMAGES = 60
FLOOR_PER_MIN = 50.0
RUN_TIMEOUT_S = 600.0
PROCESSES = 2


@dataclass
class _State:
    dir: Path
    photos: list[bytes]
    images: int
    runs: int = 0
    workers: list[Any] = field(default_factory=list)


def setup(ctx: BenchContext) -> _State:
    from streams.jobs.image_samples import photo_jpeg

    photos = [photo_jpeg(1600, 1200) for _ in range(5)]
    return _State(Path(tempfile.mkdtemp(prefix="streams-bench-p11-")), photos,
                  min(ctx.events, MAX_IMAGES))  # fmt: skip


def _provision(ctx: BenchContext, state: _State) -> Any:
    from streams.broker.admin import apply, catalog_topics
    from streams.catalog import load_catalog
    from streams.settings import Settings

    state.runs += 1
    run_dir = state.dir / f"run-{state.runs}"
    run_dir.mkdir()
    data = yaml.safe_load((eng.REPO / "topics.yaml").read_text())
    data["families"] = {"image": {**data["families"]["image"], "partitions": ctx.partitions}}
    catalog_path = run_dir / "topics.yaml"
    catalog_path.write_text(yaml.safe_dump(data))
    settings = Settings(
        kafka_bootstrap=ctx.bootstrap,
        topic_prefix=f"{ctx.settings.topic_prefix}img{state.runs}.",
        app_id=f"{ctx.settings.app_id}-img-{state.runs}",
        replication_factor_override=1,
        catalog_path=catalog_path,
        home=run_dir / "home",
    )
    catalog = load_catalog(catalog_path)
    apply(settings, catalog)
    ctx.created_topics += [s.name for s in catalog_topics(settings, catalog)]
    return settings, catalog, run_dir


def run(ctx: BenchContext, state: _State) -> Sample:
    from streams import Publisher
    from streams.blobs import FilesystemBlobStore

    settings, catalog, run_dir = _provision(ctx, state)
    blobs = FilesystemBlobStore(run_dir / "blobs")
    refs = [blobs.put(f"uploads/p{i}.jpg", photo) for i, photo in enumerate(state.photos)]
    env = {"STREAMS_BLOB_ROOT": str(blobs.root), "STREAMS_IMAGE_PROCESSES": str(PROCESSES)}
    worker = WorkerProcess(settings, ["image"], run_dir / "unused.db", run_dir / "worker.log",
                           extra_env=env, handlers="streams.jobs.registry",
                           builtin_jobs=True)  # fmt: skip
    worker.start()
    publisher = Publisher(settings, catalog=catalog, producer_name="bench")
    try:
        worker.wait_ready(eng.WORKER_READY_TIMEOUT_S)
        items = [
            ("image.uploaded", {
                "image_id": f"img-{i}", "owner_id": "bench", "filename": f"p{i % 5}.jpg",
                "content_type": "image/jpeg", "size_bytes": len(state.photos[i % 5]),
                "storage_uri": refs[i % 5].uri,
            })
            for i in range(state.images)
        ]  # fmt: skip
        started = time.monotonic()
        publisher.publish_batch(items)
        done = blobs.root / "images"
        while len(list(done.glob("*/thumbnail.webp"))) < state.images:
            if time.monotonic() - started > RUN_TIMEOUT_S:
                raise RuntimeError(f"P11: images not processed within {RUN_TIMEOUT_S:.0f}s")
            time.sleep(0.1)
        elapsed_s = time.monotonic() - started
    finally:
        publisher.close()
        worker.stop()
    return Sample(state.images / elapsed_s * 60, {"elapsed_s": elapsed_s, "images": state.images})


def teardown(state: _State) -> None:
    return None


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median >= FLOOR_PER_MIN


def _note(summary: Summary) -> str:
    elapsed = summary.detail("elapsed_s")
    images = summary.samples[0].details.get("images", MAX_IMAGES)
    return (
        f"{images:.0f} uploads of 1600x1200 JPEG (~2 MB) per run, 3 sizes x 2 formats each; "
        f"drain time median {elapsed[0]:.1f}s (min {elapsed[1]:.1f}s, max {elapsed[2]:.1f}s)"
    )


CASE = Case(
    id="P11",
    title="image pipeline (screen + 6 renditions per upload)",
    unit="images/min",
    target=f">= {FLOOR_PER_MIN:.0f}/min",
    setup=setup,
    run=run,
    teardown=teardown,
    judge=_judge,
    note=_note,
    concurrency=f"1 worker process, family concurrency 2, {PROCESSES} render processes",
)
