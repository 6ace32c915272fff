"""A TCP proxy a fault test can cut: one client's path to the broker, and only that.

``TcpProxy(listen_port, target_port)`` forwards every connection on 127.0.0.1:listen_port
to 127.0.0.1:target_port (a broker's ``PROXIED`` listener, which advertises the proxy's
port, so the client stays behind the proxy after bootstrap). ``cut()`` closes every open
connection and from then on closes each new one at once, counting it in ``refused`` (the
client's reconnect attempts: progress a test can wait for); ``reopen()`` forwards again.

It runs an asyncio loop on its own thread; ``close()`` stops and joins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

HOST = "127.0.0.1"
CHUNK_BYTES = 65536


class TcpProxy:
    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.refused = 0  # connections closed at once while cut
        self.forwarded = 0  # connections forwarded
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the proxy did not listen on {HOST}:{self.listen_port}")
        return self

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Close every open connection; refuse (accept and close) new ones until reopen."""
        self._call(self._do_cut)

    def reopen(self) -> None:
        self._call(self._do_reopen)

    def close(self) -> None:
        if self._thread.is_alive():
            stopped = self._stopped
            if stopped is not None:
                self._loop.call_soon_threadsafe(stopped.set)
            self._thread.join(10)

    # --- the loop's side ----------------------------------------------------------------

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the proxy's loop did not answer")

    def _do_cut(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            writer.transport.abort()  # an RST: the client sees the broker vanish
        self._writers.clear()

    def _do_reopen(self) -> None:
        self._cut = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._accept, HOST, self.listen_port)
        self._ready.set()
        async with server:
            await self._stopped.wait()
            self._do_cut()
            server.close()
            await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.forwarded += 1
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.transport.abort()


@contextlib.contextmanager
def running_proxy(listen_port: int, target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(listen_port, target_port).start()
    try:
        yield proxy
    finally:
        proxy.close()
