"""The image job inside a real worker process, against the real broker.

A photo with EXIF GPS comes out in three sizes and two formats without metadata; hostile
uploads are quarantined with their reason; 50 images in flight do not hold back the
webhook family running on the same worker.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.support.engine import (
    WorkerProcess,
    provision,
    read_topic,
    record_headers,
    wait_for,
)
from tests.support.receiver import ThreadedReceiver

from streams.blobs import FilesystemBlobStore
from streams.core import headers as h
from streams.jobs import image_samples as samples
from streams.jobs.image_render import metadata_left
from streams.publish.publisher import Publisher
from streams.serde import SchemaStore
from streams.settings import Settings
from streams.testing.processes import write_catalog
from streams.testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.kafka

SECRET = "image-test-secret"
IMAGE = {
    "partitions": 3,
    "concurrency": 2,
    "handler_timeout": "60s",
    "retry": {"delays": ["1s"], "max_attempts": 2, "jitter": 0.0, "retention": "1d"},
}
WEBHOOK = {
    "partitions": 3,
    "concurrency": 8,
    "handler_timeout": "10s",
    "retry": {"delays": ["1s"], "max_attempts": 2, "jitter": 0.0, "retention": "1d"},
}


class Rig:
    def __init__(self, make_settings: Callable[..., Settings], tmp: Path) -> None:
        catalog_path = write_catalog(tmp, {"image": IMAGE, "webhook": WEBHOOK})
        self.settings = make_settings(catalog_path=catalog_path)
        self.catalog = provision(self.settings)
        self.blobs = FilesystemBlobStore(tmp / "blobs")
        self.publisher = Publisher(self.settings, catalog=self.catalog)
        self.schemas = SchemaStore.load(self.settings.schemas_dir)
        env = {
            "STREAMS_BLOB_ROOT": str(self.blobs.root),
            "STREAMS_IMAGE_PROCESSES": "2",
            "STREAMS_WEBHOOK_SIGNING_SECRET": SECRET,
            "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        }
        self.worker = WorkerProcess(
            self.settings,
            ["image", "webhook"],
            tmp / "unused.db",
            tmp / "worker.log",
            extra_env=env,
            handlers="streams.jobs.registry",  # nothing but the built-in jobs
            builtin_jobs=True,
        )

    def start(self) -> None:
        self.worker.start()
        self.worker.wait_ready(120)

    def upload(self, name: str, data: bytes, content_type: str, **extra: Any) -> str:
        ref = self.blobs.put(f"uploads/{name}", data)
        payload = {
            "image_id": f"img-{name}",
            "owner_id": "user-1",
            "filename": name,
            "content_type": content_type,
            "size_bytes": len(data),
            "storage_uri": ref.uri,
            **extra,
        }
        return self.publisher.publish("image.uploaded", payload).event_id

    def announcements(self, event_type: str) -> dict[str, Any]:
        """image_id -> payload of every ``event_type`` on the image topic."""
        out = {}
        topic = f"{self.settings.topic_prefix}image"
        for msg in read_topic(self.settings, topic, IMAGE["partitions"]):
            if record_headers(msg).get(h.EVENT_TYPE) == event_type:
                event = self.schemas.decode_event(msg.value())
                out[event.image_id] = event  # type: ignore[attr-defined]
        return out

    def close(self) -> None:
        self.publisher.close()
        self.worker.stop()


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Rig]:
    r = Rig(make_settings, tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_a_photo_with_gps_and_hostile_uploads(rig: Rig) -> None:
    rig.start()
    photo = samples.photo_jpeg(1600, 1200, orientation=6)
    assert "exif tags" in metadata_left(photo)
    rig.upload("photo.jpg", photo, "image/jpeg")
    hostile = {
        "pe.jpg": (samples.pe_executable(), "image/jpeg", "executable"),
        "page.png": (samples.html_page(), "image/png", "script"),
        "huge.jpg": (photo + b"\0" * (5 * 1024 * 1024), "image/jpeg", "too_large"),
        "bomb.png": (samples.png_bomb(), "image/png", "decompression_bomb"),
    }
    for name, (data, content_type, _) in hostile.items():
        rig.upload(name, data, content_type)

    quarantined = wait_for(
        lambda: (q := rig.announcements("image.quarantined")) and len(q) == 4 and q,
        90,
        "four image.quarantined events",
    )
    processed = wait_for(
        lambda: rig.announcements("image.processed").get("img-photo.jpg"), 90, "image.processed"
    )
    assert {k: q.reason for k, q in quarantined.items()} == {
        f"img-{name}": reason for name, (_, _, reason) in hostile.items()
    }
    for q in quarantined.values():
        assert rig.blobs.exists(rig.blobs.key_for_uri(q.quarantine_uri))
        assert not rig.blobs.exists(rig.blobs.key_for_uri(q.source_uri))

    assert (processed.width, processed.height) == (1200, 1600)  # orientation 6 applied
    assert sorted(processed.outputs) == sorted(
        f"{size}.{ext}" for size in ("large", "medium", "thumbnail") for ext in ("jpg", "webp")
    )
    for name, uri in processed.outputs.items():
        data = rig.blobs.get(rig.blobs.key_for_uri(uri))
        with Image.open(io.BytesIO(data)) as back:
            assert back.format == ("JPEG" if name.endswith(".jpg") else "WEBP")
            assert len(back.getexif()) == 0, name
            assert (
                max(back.size)
                == {"large": 1600, "medium": 800, "thumbnail": 200}[name.split(".")[0]]
            )
        assert metadata_left(data) == [], name

    dlq = read_topic(rig.settings, f"{rig.settings.topic_prefix}image.dlq", IMAGE["partitions"])
    reasons = sorted(record_headers(m)[h.ERROR_MESSAGE].split(")")[0] for m in dlq)
    assert len(dlq) == 4
    assert all(record_headers(m)[h.DLQ_REASON] == "permanent" for m in dlq)
    assert reasons == sorted(f"quarantined ({r}" for _, _, r in hostile.values())


def _latencies(
    rig: Rig, receiver: WebhookReceiver, count: int, processed: Callable[[], int]
) -> list[tuple[float, int]]:
    """Send ``count`` webhooks one at a time: (latency s, images processed when it landed)."""
    out = []
    for i in range(count):
        path = f"/probe/{time.monotonic_ns()}-{i}"
        sent_at = time.time()
        rig.publisher.publish(
            "webhook.requested",
            {
                "subscription_id": f"probe-{i}",
                "url": receiver.url + path,
                "event_name": "probe",
                "body": "{}",
            },
        )
        delivery = wait_for(lambda p=path: receiver.deliveries_to(p), 30, "a probe webhook")[0]
        out.append((delivery.received_at_s - sent_at, processed()))
    return out


@pytest.mark.serial  # a latency bound: measured alone
def test_fifty_images_do_not_block_webhooks_on_the_same_worker(rig: Rig) -> None:
    rig.start()
    done_dir = rig.blobs.root / "images"

    def processed() -> int:
        return len(list(done_dir.glob("*/thumbnail.webp"))) if done_dir.exists() else 0

    with ThreadedReceiver(SECRET) as receiver:
        idle = [lat for lat, _ in _latencies(rig, receiver, 10, processed)]
        photos = [samples.photo_jpeg(1600, 1200) for _ in range(5)]
        for i in range(50):
            rig.upload(f"p{i}.jpg", photos[i % 5], "image/jpeg")
        wait_for(lambda: processed() >= 1, 60, "the first image")
        busy: list[float] = []
        while processed() < 45:
            busy += [lat for lat, n in _latencies(rig, receiver, 1, processed) if n < 50]
        wait_for(lambda: processed() == 50, 120, "all 50 images")

    # measured while images were being processed: progress moved on between the first and
    # the last probe, so the probes overlapped the image work
    assert len(busy) >= 5, f"only {len(busy)} probes while images were processed"
    idle_s, busy_s = statistics.median(idle), statistics.median(busy)
    assert busy_s <= max(10 * idle_s, 0.25), f"webhook median {busy_s:.3f}s vs idle {idle_s:.3f}s"
