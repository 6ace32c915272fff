"""The API's view of the control plane: the ``streams.status`` and ``streams.control``
topics followed from their beginning (``control.reader``), and the control writer.

Started with the app (after the SDK publisher, whose settings and catalog it uses) by the
route modules that need it (``status_routes``, ``pause_routes``, ``ingest_routes``);
``plane(request)`` gives it to a handler, or answers 503 while the views are still catching
up with the topics; ``plane_if_ready(app)`` is for a route that works without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from streams.api.problems import Problem
from streams.api.state import PUBLISHER
from streams.broker.clients import base_conf
from streams.catalog import Catalog
from streams.control.model import Command
from streams.control.reader import ControlView, StatusView, TopicFollower
from streams.control.topics import control_topic, status_topic
from streams.control.writer import AcceptedNotes, ControlWriter
from streams.errors import BrokerUnavailable, ConfigError

log = logging.getLogger("streams.api")


@dataclass
class ControlPlane:
    catalog: Catalog
    status: StatusView
    control: ControlView
    followers: tuple[TopicFollower, TopicFollower]
    writer: ControlWriter
    accepted: AcceptedNotes

    @property
    def cancel_ttl_ms(self) -> int:
        return self.catalog.control_plane.cancel_ttl_ms

    def loaded(self) -> bool:
        return all(f.caught_up.is_set() for f in self.followers)

    async def issue(self, command: Command) -> None:
        """Write ``command`` (acks=all); Problem 503 when the broker does not acknowledge."""
        try:
            await asyncio.to_thread(self.writer.issue, command)
        except BrokerUnavailable as exc:
            raise Problem(503, "broker-unavailable", str(exc)) from None

    async def revoke(self, kind: str, target: str) -> None:
        try:
            await asyncio.to_thread(self.writer.revoke, kind, target)
        except BrokerUnavailable as exc:
            raise Problem(503, "broker-unavailable", str(exc)) from None


CONTROL_PLANE = web.AppKey("control_plane", ControlPlane)


def now_ms() -> int:
    return int(time.time() * 1000)


def install(app: web.Application) -> None:
    """Start the followers with the app (once, whichever route module asks first)."""
    if app.get(_INSTALLED):
        return
    app[_INSTALLED] = True

    async def start(app: web.Application) -> None:
        publisher = app.get(PUBLISHER)
        if publisher is None:  # no cluster configured (the app logged it): these routes 503
            return
        settings, catalog = publisher.settings, publisher.catalog
        try:
            conf = base_conf(settings)
        except ConfigError as exc:  # no cluster configured: these routes answer 503
            log.warning("control plane unavailable: %s", exc)
            return
        status = StatusView(catalog.control_plane.status_ttl_ms)
        control = ControlView()
        followers = (
            TopicFollower(conf, status_topic(settings.topic_prefix), status, name="api-status"),
            TopicFollower(conf, control_topic(settings.topic_prefix), control, name="api-ctl"),
        )
        for follower in followers:
            follower.start()
        writer = ControlWriter(conf, control_topic(settings.topic_prefix))
        notes = AcceptedNotes(conf, status_topic(settings.topic_prefix))
        app[CONTROL_PLANE] = ControlPlane(catalog, status, control, followers, writer, notes)

    async def stop(app: web.Application) -> None:
        plane = app.get(CONTROL_PLANE)
        if plane is not None:
            for follower in plane.followers:
                await asyncio.to_thread(follower.stop)
            await asyncio.to_thread(plane.accepted.close)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


_INSTALLED = web.AppKey("control_plane_installed", bool)


def plane_if_ready(app: web.Application) -> ControlPlane | None:
    return app.get(CONTROL_PLANE)


def plane(request: web.Request) -> ControlPlane:
    found = request.app.get(CONTROL_PLANE)
    if found is None or not found.loaded():
        raise Problem(
            503,
            "control-plane-loading",
            "the status and control topics are still being read; retry shortly",
            headers={"Retry-After": "1"},
        )
    return found
