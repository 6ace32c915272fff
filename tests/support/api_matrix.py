"""Set-up coroutines a route's ``Probe(setup=...)`` names (tests/integration/test_api_matrix.py).

Each is ``async def name(ctx: MatrixContext) -> dict[str, str]``: it creates, as tenant
``acme``, the resource the probe addresses, and returns the probe's path parameters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp


@dataclass
class MatrixContext:
    url: str
    http: aiohttp.ClientSession
    acme_admin: dict[str, str]  # headers of an admin of tenant acme


SETUPS: dict[str, Callable[[MatrixContext], Awaitable[dict[str, str]]]] = {}
"""Name -> set-up coroutine; add yours here (one entry per resource kind)."""
