"""The image job: screen an uploaded image, then render its sizes without metadata.

``image.uploaded`` references the upload in the blob store (``storage_uri``: a ``file://``
URI under the blob root or ``blob:<key>``), never its bytes. The job:

1. reads at most ``image_max_bytes + 1`` bytes of it (a thread: blob I/O never runs on the
   event loop);
2. screens them in a process pool (``image_render.inspect``: size, extension, signatures,
   magic bytes vs the declared type, checksum, pixel count from the header) and, when
   ``STREAMS_CLAMD_ADDRESS`` is set, through clamd (``image_clamd``, behind the ``clamd``
   breaker);
3. renders every size in every format in the process pool (``image_render.render``), writes
   them to ``images/<image>/<size>.<ext>`` and publishes ``image.processed`` listing them.

A failing upload is moved to ``quarantine/<image>/<event>/`` with a ``reason.json``, an
``image.quarantined`` event is published and the outcome is ``Permanent`` (its DLQ record
says why). The events the job publishes have ids derived from the upload event's id, so a
redelivery republishes the same events, which their consumers' idempotency drops. A missing
upload is retryable (object stores may lag) unless it was quarantined already.

CPU work happens in ``image_processes`` spawned worker processes; the family's
``concurrency`` bounds how many uploads are in flight, so the event loop only awaits futures.
The job also receives its own ``image.processed`` / ``image.quarantined`` events (they share
the family's topic) and leaves them to their consumers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import re
import uuid
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from streams.blobs import BlobKeyError, BlobNotFound, FilesystemBlobStore
from streams.errors import ConfigError, Permanent, Retryable
from streams.events import ImageUploaded
from streams.jobs import image_clamd
from streams.jobs.base import JobContext, JobSettings, JobSpec
from streams.jobs.image_render import (
    MEDIA_TYPES,
    Inspected,
    RenderOptions,
    Rendition,
    inspect,
    render,
)
from streams.jobs.image_screen import (
    DEFAULT_BLOCKED_EXTENSIONS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    Finding,
    Reason,
    ScreenLimits,
    Upload,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class ImageSettings(JobSettings):
    """Screening limits, renditions, the process pool and the blob store of the image job."""

    image_max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1)
    image_max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    image_blocked_extensions: str = Field(
        default=",".join(sorted(DEFAULT_BLOCKED_EXTENSIONS)),
        description="comma list of file extensions refused anywhere in a file name",
    )
    image_sizes: str = Field(
        default="large:1600,medium:800,thumbnail:200",
        description="comma list of name:longest-edge-in-pixels",
    )
    image_formats: str = Field(default="jpeg,webp", description="comma list: jpeg, webp")
    image_jpeg_quality: int = Field(default=85, ge=1, le=95)
    image_webp_quality: int = Field(default=80, ge=1, le=100)
    image_processes: int = Field(default=2, ge=1, le=64, description="CPU worker processes")
    clamd_address: str | None = Field(
        default=None, description="host:port or socket path of clamd; unset = no ClamAV stage"
    )
    clamd_timeout_s: float = Field(default=30.0, gt=0)
    blob_root: Path | None = Field(default=None, description="default: $STREAMS_HOME/blobs")
    home: Path = Field(default_factory=lambda: Settings().home)


def render_options(settings: ImageSettings) -> RenderOptions:
    """The renditions the settings ask for; raises ConfigError naming a bad entry."""
    sizes: list[tuple[str, int]] = []
    for entry in filter(None, (e.strip() for e in settings.image_sizes.split(","))):
        name, _, edge = entry.partition(":")
        if not _SAFE_SEGMENT.match(name) or not edge.isdigit() or not 16 <= int(edge) <= 10_000:
            raise ConfigError(f"STREAMS_IMAGE_SIZES: {entry!r} must be name:16..10000")
        sizes.append((name, int(edge)))
    formats = tuple(f.strip().lower() for f in settings.image_formats.split(",") if f.strip())
    unknown = [f for f in formats if f not in MEDIA_TYPES]
    if not sizes or not formats or unknown:
        raise ConfigError(
            f"STREAMS_IMAGE_SIZES/FORMATS: need sizes and formats among {sorted(MEDIA_TYPES)}"
        )
    return RenderOptions(
        tuple(sorted(sizes, key=lambda s: -s[1])),
        formats,
        settings.image_jpeg_quality,
        settings.image_webp_quality,
    )


def key_segment(value: str) -> str:
    """``value`` if it is a safe blob-key segment, else a digest of it."""
    if _SAFE_SEGMENT.match(value) and value not in (".", ".."):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:32]


def derived_event_id(event_id: str, what: str) -> str:
    """A stable id for the event the job publishes about ``event_id``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"streams:image:{event_id}:{what}"))


def _warm() -> None:
    """Runs once in a new pool process: imports Pillow before the first upload needs it."""


class ImageJob:
    """Handles ``image.uploaded`` (see the module docstring)."""

    event_types: ClassVar[tuple[str, ...]] = (
        "image.uploaded",
        "image.processed",
        "image.quarantined",
    )

    def __init__(self, settings: ImageSettings, *, publisher: Any = None) -> None:
        self.settings = settings
        self.options = render_options(settings)
        self.limits = ScreenLimits(
            settings.image_max_bytes,
            settings.image_max_pixels,
            frozenset(
                e.strip().lower().lstrip(".")
                for e in settings.image_blocked_extensions.split(",")
                if e.strip()
            ),
        )
        try:
            self.clamd = (
                image_clamd.ClamdAddress.parse(settings.clamd_address)
                if settings.clamd_address
                else None
            )
        except ValueError as exc:
            raise ConfigError(f"STREAMS_CLAMD_ADDRESS: {exc}") from None
        self.blobs = FilesystemBlobStore(settings.blob_root or settings.home / "blobs")
        self._publisher = publisher
        self._owns_publisher = publisher is None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Start the process pool and the publisher."""
        if self._pool is None:
            self._pool = self._new_pool()
            await asyncio.wrap_future(self._pool.submit(_warm))
        if self._publisher is None:
            from streams.publish.publisher import Publisher

            self._publisher = await asyncio.to_thread(Publisher, producer_name="image-job")

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.settings.image_processes,
            mp_context=multiprocessing.get_context("spawn"),
        )

    async def stop(self) -> None:
        """Stop the pool (after the worker has drained) and flush the publisher."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
        publisher = self._publisher
        if publisher is not None and self._owns_publisher:
            self._publisher = None
            await asyncio.to_thread(publisher.close)

    async def _in_pool(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            await self.start()
        assert self._pool is not None
        try:
            return await asyncio.wrap_future(self._pool.submit(fn, *args))
        except concurrent.futures.process.BrokenProcessPool as exc:
            broken, self._pool = self._pool, self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)
            raise Retryable(f"image worker process died: {exc}") from exc

    async def handle(self, event: Any, ctx: JobContext) -> None:
        if not isinstance(event, ImageUploaded):
            return  # image.processed / image.quarantined: for their consumers
        event_id = ctx.event_id or event.event_id
        try:
            key = self.blobs.key_for_uri(event.storage_uri)
        except BlobKeyError as exc:
            raise Permanent(f"storage_uri: {exc}") from None
        upload = Upload(event.filename, event.content_type, event.size_bytes, event.sha256)
        try:
            data = await asyncio.to_thread(self.blobs.get, key, max_bytes=self.limits.max_bytes)
        except BlobNotFound:
            await self._upload_missing(event, event_id, key)
            raise  # not reached: _upload_missing raises
        inspected: Inspected = await self._in_pool(inspect, data, upload, self.limits)
        finding = inspected.finding or await self._antivirus(data, ctx)
        if finding is not None:
            await self._quarantine(event, event_id, key, inspected.screened.sha256, finding)
        renditions: list[Rendition] = await self._in_pool(render, data, self.options)
        await self._publish_processed(event, event_id, inspected, renditions)

    async def _antivirus(self, data: bytes, ctx: JobContext) -> Finding | None:
        if self.clamd is None:
            return None
        try:
            async with ctx.dependency(f"clamd:{self.clamd}"):
                signature = await image_clamd.scan(
                    self.clamd, data, timeout_s=self.settings.clamd_timeout_s
                )
        except (OSError, TimeoutError, image_clamd.ClamdError) as exc:
            raise Retryable(f"clamd {self.clamd}: {exc!r}") from exc
        return None if signature is None else Finding(Reason.MALWARE, f"ClamAV: {signature}")

    def _quarantine_dir(self, event: ImageUploaded, event_id: str) -> str:
        return f"quarantine/{key_segment(event.image_id)}/{key_segment(event_id)}"

    async def _quarantine(
        self,
        event: ImageUploaded,
        event_id: str,
        key: str,
        sha256: str | None,
        finding: Finding,
    ) -> None:
        """Move the upload aside, record why, announce it; raises Permanent."""
        folder = self._quarantine_dir(event, event_id)
        moved = await asyncio.to_thread(
            self.blobs.move, key, f"{folder}/{key_segment(event.filename)}"
        )
        payload = {
            "image_id": event.image_id,
            "owner_id": event.owner_id,
            "source_uri": event.storage_uri,
            "quarantine_uri": moved.uri,
            "reason": str(finding.reason),
            "detail": finding.detail,
            "sha256": sha256,
        }
        record = json.dumps(payload, sort_keys=True).encode()
        await asyncio.to_thread(self.blobs.put, f"{folder}/reason.json", record)
        await self._announce_quarantine(payload, event_id)

    async def _announce_quarantine(self, payload: dict[str, Any], event_id: str) -> None:
        await self._publish("image.quarantined", payload, derived_event_id(event_id, "q"))
        log.warning("image %s quarantined: %s", payload["image_id"], payload["detail"])
        raise Permanent(f"quarantined ({payload['reason']}): {payload['detail']}")

    async def _upload_missing(self, event: ImageUploaded, event_id: str, key: str) -> None:
        """A redelivered quarantined upload is announced again; any other is retried."""
        reason_key = f"{self._quarantine_dir(event, event_id)}/reason.json"
        try:
            record = await asyncio.to_thread(self.blobs.get, reason_key)
        except BlobNotFound:
            raise Retryable(f"upload {key} not found in the blob store") from None
        await self._announce_quarantine(json.loads(record), event_id)

    async def _publish_processed(
        self,
        event: ImageUploaded,
        event_id: str,
        inspected: Inspected,
        renditions: list[Rendition],
    ) -> None:
        folder = f"images/{key_segment(event.image_id)}"
        outputs: dict[str, str] = {}
        for rendition in renditions:
            ref = await asyncio.to_thread(
                self.blobs.put, f"{folder}/{rendition.name}", rendition.data
            )
            outputs[rendition.name] = ref.uri
        payload = {
            "image_id": event.image_id,
            "owner_id": event.owner_id,
            "source_uri": event.storage_uri,
            "sha256": inspected.screened.sha256 or "",
            "width": inspected.width,
            "height": inspected.height,
            "outputs": outputs,
        }
        await self._publish("image.processed", payload, derived_event_id(event_id, "p"))
        log.info("image %s processed: %d outputs", event.image_id, len(outputs))

    async def _publish(self, event_type: str, payload: dict[str, Any], event_id: str) -> None:
        if self._publisher is None:
            await self.start()
        await self._publisher.publish_async(event_type, payload, event_id=event_id)


JOB = JobSpec(
    family="image", job_type=ImageJob, settings_type=ImageSettings, dependencies=("clamd",)
)
