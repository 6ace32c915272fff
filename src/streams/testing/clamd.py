"""A tiny real clamd for tests: a TCP server speaking the INSTREAM and PING commands.

It reads the length-prefixed chunks exactly as clamd does, answers ``stream: OK``, or
``stream: <name> FOUND`` when the stream contains one of its ``signatures`` (the EICAR test
string by default), or ``INSTREAM size limit exceeded. ERROR`` past ``max_stream_bytes``.
``scans`` counts finished scans. It is no virus scanner: it only lets the client be tested
against a real socket.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Mapping
from types import TracebackType

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("client closed the stream")
        buf += part
    return buf


def _read_command(sock: socket.socket) -> bytes:
    first = _read_exact(sock, 1)
    end = b"\0" if first == b"z" else b"\n"
    command = b""
    while not command.endswith(end):
        command += _read_exact(sock, 1)
        if len(command) > 64:
            raise ConnectionError("command too long")
    return command[:-1]


class FakeClamd:
    """``with FakeClamd() as clamd: clamd.address`` -> ``127.0.0.1:<port>``."""

    def __init__(
        self,
        signatures: Mapping[str, bytes] | None = None,
        *,
        max_stream_bytes: int = 25 * 1024 * 1024,
    ) -> None:
        self.signatures = dict(signatures or {"Eicar-Signature": EICAR})
        self.max_stream_bytes = max_stream_bytes
        self.scans = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    owner._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def _serve(self, sock: socket.socket) -> None:
        command = _read_command(sock)
        if command == b"PING":
            sock.sendall(b"PONG\0")
        elif command == b"INSTREAM":
            sock.sendall(self._instream(sock) + b"\0")
            _drain(sock)
        else:
            sock.sendall(b"UNKNOWN COMMAND\0")

    def _instream(self, sock: socket.socket) -> bytes:
        data = bytearray()
        while True:
            (length,) = struct.unpack(">I", _read_exact(sock, 4))
            if length == 0:
                break
            if len(data) + length > self.max_stream_bytes:
                return b"INSTREAM size limit exceeded. ERROR"
            data += _read_exact(sock, length)
        with self._lock:
            self.scans += 1
        for name, signature in self.signatures.items():
            if signature in data:
                return f"stream: {name} FOUND".encode()
        return b"stream: OK"

    def start(self) -> FakeClamd:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeClamd:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _drain(sock: socket.socket) -> None:
    """Read what the client still sends until it closes (after an early ERROR reply).

    Closing with unread bytes makes the kernel reset the connection, which can discard the
    reply before the client reads it; real clamd may do that, the client copes (it reads
    what arrived), but a test of the ERROR reply must see it every time.
    """
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass
