"""Handlers by event type.

Register a function::

    from streams.jobs.registry import handler

    @handler("push.requested")
    async def send_push(event: PushRequested, ctx: JobContext) -> None: ...

or a ``Job`` object (``registry.add_job(EmailJob(settings))``) whose ``start``/``stop`` the
worker calls around its run. ``streams worker --handlers my.module`` imports modules that
register handlers on the default registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from streams.errors import ConfigError
from streams.jobs.base import Handler, Job


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self.jobs: list[Job] = []

    def register(self, event_type: str, fn: Handler) -> None:
        """Register ``fn`` for ``event_type``; raises ConfigError on a second registration."""
        if event_type in self._handlers:
            raise ConfigError(f"a handler for {event_type!r} is already registered")
        self._handlers[event_type] = fn

    def handler(self, event_type: str) -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            self.register(event_type, fn)
            return fn

        return decorate

    def add_job(self, job: Job) -> None:
        for event_type in job.event_types:
            self.register(event_type, job.handle)
        self.jobs.append(job)

    def get(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type)

    def event_types(self) -> set[str]:
        return set(self._handlers)

    def merged(self, other: HandlerRegistry) -> HandlerRegistry:
        out = HandlerRegistry()
        for registry in (self, other):
            for event_type, fn in registry._handlers.items():
                out.register(event_type, fn)
            out.jobs.extend(registry.jobs)
        return out


default_registry = HandlerRegistry()
handler = default_registry.handler


def import_handler_modules(modules: list[str]) -> None:
    """Import modules that register handlers; ConfigError names a module that fails."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import handler module {name!r}: {exc}") from exc
