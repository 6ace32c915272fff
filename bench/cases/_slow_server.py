"""P2's dependency: an aiohttp server that answers every GET after a fixed delay.

Run as ``python -m bench.cases._slow_server PORT DELAY_MS`` (its own process, so its CPU is
not the worker's). ``GET /stats`` returns {"requests": n, "max_in_flight": m} without delay.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


def main() -> None:
    port, delay_s = int(sys.argv[1]), int(sys.argv[2]) / 1000
    stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0}

    async def slow(request: web.Request) -> web.Response:
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(delay_s)
        finally:
            stats["in_flight"] -= 1
        return web.Response(text="ok")

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application()
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/{tail:.*}", slow)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
