"""Serve an aiohttp application on ``host:port`` (0 = a free port) for the test servers.

``serve`` returns the set-up runner and the port bound; a socket that fails to bind or start
is closed and the runner cleaned up before the error propagates. ``handler_cancellation``
ends a slow handler whose client gave up (the webhook receiver's timeouts).
"""

from __future__ import annotations

import socket

from aiohttp import web


async def serve(
    app: web.Application, host: str, port: int, *, handler_cancellation: bool = False
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        handler_cancellation=handler_cancellation,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, int(sock.getsockname()[1])
