"""ClamAV through clamd's socket protocol: the optional last screening stage.

``scan`` sends ``zINSTREAM\\0``, the bytes as chunks (a 4-byte big-endian length, then the
chunk), a zero-length chunk to end the stream, and reads one NUL-terminated reply:
``stream: OK`` (clean), ``stream: <signature> FOUND`` (infected) or ``... ERROR`` (e.g.
``INSTREAM size limit exceeded``). The address is ``host:port``, ``tcp://host:port``,
``unix:///path`` or a socket path (``/run/clamav/clamd.ctl``). Every call is bounded by
``timeout_s``; connection failures and timeouts propagate (the job retries them through its
``clamd`` breaker), an ERROR reply raises ``ClamdError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass

CHUNK_BYTES = 64 * 1024
MAX_REPLY_BYTES = 4096


class ClamdError(RuntimeError):
    """clamd answered with an error (or something that is not a scan reply)."""


@dataclass(frozen=True)
class ClamdAddress:
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> ClamdAddress:
        """Parse an address (see the module docstring); raises ValueError."""
        value = text.strip()
        if value.startswith("unix://"):
            return cls(path=value.removeprefix("unix://"))
        if value.startswith("/"):
            return cls(path=value)
        host, sep, port = value.removeprefix("tcp://").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"clamd address {text!r}: expected host:port or a socket path")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"


def parse_reply(reply: bytes) -> str | None:
    """None for a clean stream, the signature name for an infected one; raises ClamdError."""
    text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
    body = text.partition(":")[2].strip() if text.startswith("stream:") else text
    if body == "OK":
        return None
    if body.endswith(" FOUND"):
        return body.removesuffix(" FOUND").strip() or "unknown"
    raise ClamdError(f"clamd: {text or '(empty reply)'}")


def frames(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """The INSTREAM body: length-prefixed chunks and the zero-length terminator."""
    out = [
        struct.pack(">I", len(data[i : i + chunk_bytes])) + data[i : i + chunk_bytes]
        for i in range(0, len(data), chunk_bytes)
    ]
    out.append(struct.pack(">I", 0))
    return out


async def _open(address: ClamdAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.path:
        return await asyncio.open_unix_connection(address.path)
    return await asyncio.open_connection(address.host, address.port)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> ConnectionError | None:
    """Write the INSTREAM request; a connection error is returned, not raised.

    clamd answers a stream over its size limit with an ERROR reply and closes the socket
    while the client is still sending, so a broken pipe may hide the reply worth reading.
    """
    try:
        writer.write(b"zINSTREAM\0")
        for frame in frames(data):
            writer.write(frame)
            await writer.drain()
    except ConnectionError as exc:
        return exc
    return None


async def scan(address: ClamdAddress, data: bytes, *, timeout_s: float) -> str | None:
    """Scan ``data``: None when clean, else the signature clamd found (see module doc)."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await _open(address)
        try:
            sent_error = await _send(writer, data)
            try:
                reply = await reader.readuntil(b"\0")
            except asyncio.IncompleteReadError as exc:
                reply = exc.partial
            except asyncio.LimitOverrunError as exc:
                raise ClamdError("clamd: reply too long") from exc
            except ConnectionError:
                reply = b""
            if not reply and sent_error is not None:
                raise sent_error
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return parse_reply(reply)
