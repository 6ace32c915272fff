"""The image job end to end in one process: real blob files, a real process pool, clamd.

The publisher is a recorder (the real producer is exercised by the integration test).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from streams.blobs import FilesystemBlobStore
from streams.errors import ConfigError, Permanent, Retryable
from streams.events import build_event
from streams.jobs import image_samples as samples
from streams.jobs.base import JobContext
from streams.jobs.image import ImageJob, ImageSettings, derived_event_id
from streams.jobs.image_render import metadata_left
from streams.testing.clamd import EICAR, FakeClamd


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], str | None]] = []

    async def publish_async(
        self, event_type: str, payload: dict[str, Any], *, event_id: str | None = None
    ) -> None:
        self.published.append((event_type, payload, event_id))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[ImageJob, Recorder, FilesystemBlobStore]]:
    recorder = Recorder()
    settings = ImageSettings(blob_root=tmp_path / "blobs", image_processes=1)
    job = ImageJob(settings, publisher=recorder)
    await job.start()
    try:
        yield job, recorder, job.blobs
    finally:
        await job.stop()


def upload(blobs: FilesystemBlobStore, data: bytes, filename: str, content_type: str) -> Any:
    ref = blobs.put(f"uploads/{filename}", data)
    return build_event(
        "image.uploaded",
        {
            "image_id": f"img-{filename}",
            "owner_id": "user-1",
            "filename": filename,
            "content_type": content_type,
            "size_bytes": len(data),
            "storage_uri": ref.uri,
        },
        event_id=f"ev-{filename}",
    )


def ctx(event: Any) -> JobContext:
    return JobContext(event.event_id, event.event_type, "image")


async def test_a_photo_is_rendered_and_announced(rig: Any) -> None:
    job, recorder, blobs = rig
    event = upload(blobs, samples.photo_jpeg(900, 600), "p.jpg", "image/jpeg")
    await job.handle(event, ctx(event))
    [(kind, payload, event_id)] = recorder.published
    assert kind == "image.processed"
    assert event_id == derived_event_id("ev-p.jpg", "p")
    assert (payload["width"], payload["height"]) == (600, 900)
    assert sorted(payload["outputs"]) == sorted(
        f"{s}.{e}" for s in ("large", "medium", "thumbnail") for e in ("jpg", "webp")
    )
    for uri in payload["outputs"].values():
        data = blobs.get(blobs.key_for_uri(uri))
        assert metadata_left(data) == []
        Image.open(io.BytesIO(data)).verify()
    build_event(kind, payload)  # the announced payload is a valid event


async def test_an_executable_is_quarantined_with_its_reason(rig: Any) -> None:
    job, recorder, blobs = rig
    event = upload(blobs, samples.pe_executable(), "x.jpg", "image/jpeg")
    with pytest.raises(Permanent, match=r"quarantined \(executable\)"):
        await job.handle(event, ctx(event))
    [(kind, payload, _)] = recorder.published
    assert kind == "image.quarantined" and payload["reason"] == "executable"
    assert not blobs.exists("uploads/x.jpg")
    quarantined = blobs.key_for_uri(payload["quarantine_uri"])
    assert blobs.get(quarantined) == samples.pe_executable()
    reason = json.loads(blobs.get(quarantined.rsplit("/", 1)[0] + "/reason.json"))
    assert reason["reason"] == "executable"
    build_event(kind, payload)

    # a redelivery finds the upload gone and the quarantine record: announced again
    with pytest.raises(Permanent, match="executable"):
        await job.handle(event, ctx(event))
    assert [p[2] for p in recorder.published] == [recorder.published[0][2]] * 2


async def test_a_missing_upload_is_retried(rig: Any) -> None:
    job, _, blobs = rig
    event = upload(blobs, b"x", "gone.jpg", "image/jpeg")
    (blobs.root / "uploads" / "gone.jpg").unlink()
    with pytest.raises(Retryable, match="not found"):
        await job.handle(event, ctx(event))


async def test_a_uri_outside_the_blob_root_is_permanent(rig: Any) -> None:
    job, _, blobs = rig
    event = upload(blobs, b"x", "a.jpg", "image/jpeg")
    event = event.model_copy(update={"storage_uri": "file:///etc/passwd"})
    with pytest.raises(Permanent, match="outside the blob root"):
        await job.handle(event, ctx(event))


async def test_the_job_ignores_its_own_announcements(rig: Any) -> None:
    job, recorder, _ = rig
    from streams.events import EXAMPLE_PAYLOADS

    event = build_event("image.processed", EXAMPLE_PAYLOADS["image.processed"])
    await job.handle(event, ctx(event))
    assert recorder.published == []


async def test_clamd_finds_what_screening_cannot(tmp_path: Path) -> None:
    recorder = Recorder()
    with FakeClamd() as clamd:
        settings = ImageSettings(blob_root=tmp_path, image_processes=1, clamd_address=clamd.address)
        job = ImageJob(settings, publisher=recorder)
        await job.start()
        try:
            clean = upload(job.blobs, samples.photo_jpeg(200, 100), "c.jpg", "image/jpeg")
            await job.handle(clean, ctx(clean))
            infected_bytes = samples.photo_jpeg(200, 100) + EICAR
            infected = upload(job.blobs, infected_bytes, "i.jpg", "image/jpeg")
            with pytest.raises(Permanent, match="malware"):
                await job.handle(infected, ctx(infected))
        finally:
            await job.stop()
        assert clamd.scans == 2
    assert [p[0] for p in recorder.published] == ["image.processed", "image.quarantined"]
    assert recorder.published[1][1]["detail"] == "ClamAV: Eicar-Signature"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"image_sizes": "big:5"}, "16..10000"),
        ({"image_formats": "gif"}, "formats"),
        ({"clamd_address": "nowhere"}, "CLAMD"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ImageJob(ImageSettings(blob_root=tmp_path, **env))  # type: ignore[arg-type]
