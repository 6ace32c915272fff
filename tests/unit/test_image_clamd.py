"""The INSTREAM client against a tiny real clamd socket server (streams.testing.clamd)."""

from __future__ import annotations

import socket
import struct

import pytest

from streams.jobs.image_clamd import ClamdAddress, ClamdError, frames, parse_reply, scan
from streams.testing.clamd import EICAR, FakeClamd


def test_frames_are_length_prefixed_chunks_and_a_zero_terminator() -> None:
    out = frames(b"abcdefghij", chunk_bytes=4)
    assert out == [
        struct.pack(">I", 4) + b"abcd",
        struct.pack(">I", 4) + b"efgh",
        struct.pack(">I", 2) + b"ij",
        b"\0\0\0\0",
    ]


@pytest.mark.parametrize(
    ("reply", "found"),
    [(b"stream: OK\0", None), (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", "Win.Test.EICAR_HDB-1")],
)
def test_parse_reply(reply: bytes, found: str | None) -> None:
    assert parse_reply(reply) == found


def test_an_error_reply_raises() -> None:
    with pytest.raises(ClamdError, match="size limit"):
        parse_reply(b"INSTREAM size limit exceeded. ERROR\0")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:3310", ClamdAddress("127.0.0.1", 3310)),
        ("tcp://clamd:3310", ClamdAddress("clamd", 3310)),
        ("/run/clamav/clamd.ctl", ClamdAddress(path="/run/clamav/clamd.ctl")),
        ("unix:///tmp/c.sock", ClamdAddress(path="/tmp/c.sock")),
    ],
)
def test_addresses(text: str, address: ClamdAddress) -> None:
    assert ClamdAddress.parse(text) == address


def test_a_bad_address_is_refused() -> None:
    with pytest.raises(ValueError, match="host:port"):
        ClamdAddress.parse("clamd")


async def test_clean_and_infected_streams_over_a_real_socket() -> None:
    with FakeClamd() as clamd:
        address = ClamdAddress.parse(clamd.address)
        big_clean = b"\xff\xd8\xff" + b"x" * 300_000  # several chunks
        assert await scan(address, big_clean, timeout_s=5) is None
        infected = b"\xff\xd8\xff" + b"y" * 100_000 + EICAR
        assert await scan(address, infected, timeout_s=5) == "Eicar-Signature"
        assert clamd.scans == 2


async def test_the_servers_size_limit_is_an_error() -> None:
    with FakeClamd(max_stream_bytes=1000) as clamd, pytest.raises(ClamdError, match="size limit"):
        await scan(ClamdAddress.parse(clamd.address), b"z" * 5000, timeout_s=5)


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        await scan(ClamdAddress("127.0.0.1", port), b"data", timeout_s=5)


def test_the_fake_answers_ping() -> None:
    with FakeClamd() as clamd:
        host, port = clamd.address.split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"zPING\0")
            assert s.recv(16) == b"PONG\0"
