"""Acceptance: secrets quoted by a handler's errors never reach the DLQ's failure headers.

A real worker runs ``tests.support.leaky_handlers`` (every error message quotes a secret);
the DLQ records are read back with a plain confluent consumer and their
``streams-error-message`` headers must carry none of the secrets, on one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.engine import (
    TEST_AUDIT,
    WorkerProcess,
    provision,
    read_topic,
    record_headers,
    wait_for,
    write_catalog,
)

from streams.core import headers as h
from streams.publish.publisher import Publisher
from streams.settings import Settings

pytestmark = pytest.mark.kafka

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y"
# (error message the handler raises, the secrets in it that must not survive)
LEAKS: list[tuple[str, list[str]]] = [
    ("upstream 401: Authorization: Bearer abc.def.ghi", ["abc.def.ghi"]),
    ("proxy said Authorization: Basic dXNlcjpwYXNzd29yZA==", ["dXNlcjpwYXNzd29yZA"]),
    ("connect failed db_password=Hunter2-xyz host=db", ["Hunter2-xyz"]),
    ("oauth client_secret=cs_9f8e7d6c5b4a refused", ["cs_9f8e7d6c5b4a"]),
    ("refresh access_token=at-987zyx654 expired", ["at-987zyx654"]),
    ("legacy login pwd=p4ssw0rd!", ["p4ssw0rd"]),
    ('bad body {"user": "bob", "password": "correct horse battery"}', ["correct horse"]),
    (f"token rejected {JWT}", ["SflKxwRJSMeKKF2QT4fwpMeJf36POk6y", "eyJzdWIiOiIxMjM0NTY3ODkwIn0"]),
    ("card 4111 1111 1111 1111 declined", ["4111 1111 1111 1111"]),
    ("card 5555555555554444 declined", ["5555555555554444"]),
    ("cannot reach postgres://admin:Sup3rS3cret@db/x", ["Sup3rS3cret", "admin:"]),
    ("stripe key sk_live_4eC39HqLyjWDarjtT1zdp7dc invalid", ["4eC39HqLyjWDarjtT1zdp7dc"]),
    ("aws AKIAIOSFODNN7EXAMPLE denied", ["AKIAIOSFODNN7EXAMPLE"]),
    ("bounce for alice@localhost", ["alice@localhost", "alice"]),
    ("bounce for o'brien@example.com", ["brien", "example.com"]),
    (
        "POST https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdEFGHijklMNOPqrstUVWX",
        ["abcdEFGHijklMNOPqrstUVWX"],
    ),
    ("line one\nline two\r\n\tline\u0085three\u2028four\u2029five", ["\n", "\t", "\u2028"]),
]


def test_dlq_error_messages_carry_no_secret(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(catalog_path=write_catalog(tmp_path, {"audit": TEST_AUDIT}))
    catalog = provision(settings)
    worker = WorkerProcess(
        settings,
        ["audit"],
        tmp_path / "ledger.db",
        tmp_path / "worker.log",
        handlers="tests.support.leaky_handlers",
    )
    publisher = Publisher(settings, catalog=catalog)
    try:
        worker.start().wait_ready()
        sent = {
            publisher.publish(
                "audit.claim_submitted",
                {"subject_id": f"claim-{n}", "actor_id": "tester", "details": {"message": text}},
            ).event_id: (text, secrets)
            for n, (text, secrets) in enumerate(LEAKS)
        }
        dlq = f"{settings.topic_prefix}audit.dlq"
        partitions = catalog.family("audit").partitions
        records = wait_for(
            lambda: (
                (msgs := read_topic(settings, dlq, partitions)) and len(msgs) >= len(sent) and msgs
            ),
            60,
            "every record in the DLQ",
        )
    finally:
        publisher.close()
        worker.stop()

    seen: set[str] = set()
    for msg in records:
        headers = record_headers(msg)
        event_id = headers[h.EVENT_ID]
        text, secrets = sent[event_id]
        message = headers[h.ERROR_MESSAGE]
        assert headers[h.DLQ_REASON] == "permanent"
        for secret in secrets:
            assert secret not in message, (text, message)
        assert message == " ".join(message.split()), repr(message)  # one line, single spaces
        assert message.isprintable(), repr(message)
        seen.add(event_id)
    assert seen == set(sent)
    # what is not secret stays readable
    by_text = {sent[record_headers(m)[h.EVENT_ID]][0]: record_headers(m) for m in records}
    assert by_text[LEAKS[2][0]][h.ERROR_MESSAGE] == "connect failed db_password=<redacted> host=db"
    assert by_text[LEAKS[-1][0]][h.ERROR_MESSAGE] == "line one line two line three four five"
