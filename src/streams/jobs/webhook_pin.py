"""Connection pinning for the webhook job: aiohttp may connect only to vetted addresses.

The job vets a target's addresses once (``ssrf.resolve_and_vet``), then sets ``PIN`` around
the request; the session's ``PinnedResolver`` answers only from it, so a rebinding DNS
server cannot swap in another address for the connect.
"""

from __future__ import annotations

import contextvars
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult

from streams.jobs.ssrf import normalize_host


@dataclass(frozen=True)
class Pin:
    host: str
    port: int
    addresses: tuple[str, ...]


PIN: contextvars.ContextVar[Pin | None] = contextvars.ContextVar("webhook_pin", default=None)


class PinnedResolver(AbstractResolver):
    """aiohttp resolver answering only with the addresses vetted for the current request.

    Fails closed: a lookup for any other host (or outside ``pinned()``) raises OSError,
    which aiohttp reports as a connection error. Requires ``use_dns_cache=False`` so each
    new connection asks it (in the request's task, hence its context).
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pin = PIN.get()
        if pin is None or normalize_host(host) != pin.host:
            raise OSError(f"refusing unvetted DNS lookup of {host}")
        results: list[ResolveResult] = []
        for address in pin.addresses:
            addr_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, addr_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port or pin.port,
                    family=addr_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            raise OSError(f"no vetted address of {host} in family {family!r}")
        return results

    async def close(self) -> None:
        return None
