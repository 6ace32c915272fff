"""Pure parts of the push, consent and suppression jobs."""

from __future__ import annotations

import json

import pytest

from streams.errors import Permanent, Retryable, RetryAfter, Suppressed
from streams.jobs.consent import ConsentState, consent_key
from streams.jobs.mail_suppression import Blacklist, check_suppressed, suppression_key
from streams.jobs.push import check_consent, classify_reply, invalid_devices, personalise


class Table:
    def __init__(self, data: dict[str, bytes] | None = None) -> None:
        self.data = data or {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def put(self, partition: int, key: str, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value


class Push:
    def __init__(self, category: str) -> None:
        self.user_id = "u1"
        self.category = category


def test_consent_promotional_needs_it_transactional_does_not_opt_out_stops_both() -> None:
    empty = Table()
    check_consent(empty, Push("transactional"))
    with pytest.raises(Suppressed, match="without the user's consent"):
        check_consent(empty, Push("promotional"))
    granted = Table({consent_key("u1"): ConsentState(promotional=True, at_ms=1).encode()})
    check_consent(granted, Push("promotional"))
    out = Table({consent_key("u1"): ConsentState(True, opted_out=True, at_ms=1).encode()})
    for category in ("promotional", "transactional"):
        with pytest.raises(Suppressed, match="opted out"):
            check_consent(out, Push(category))
    assert ConsentState.decode(b"garbage") == ConsentState()


def test_provider_replies_are_classified_without_echoing_the_body() -> None:
    assert classify_reply(200, None) is None
    assert isinstance(classify_reply(429, "7"), RetryAfter)
    assert classify_reply(429, "7").delay_s == 7  # type: ignore[union-attr]
    assert type(classify_reply(503, None)) is Retryable
    assert type(classify_reply(408, None)) is Retryable
    assert isinstance(classify_reply(400, None), Permanent)
    assert invalid_devices({"id": "n", "errors": {"invalid_player_ids": ["b"]}}, ["a", "b"]) == [
        "b"
    ]
    assert invalid_devices(
        {"id": "", "errors": ["All included players are not subscribed"]}, ["a", "b"]
    ) == ["a", "b"]
    assert invalid_devices({"id": "n"}, ["a"]) == []


def test_personalisation_names_a_missing_variable() -> None:
    assert personalise("Hi ${name}", {"name": "Ada"}, "title") == "Hi Ada"
    with pytest.raises(Permanent, match="title: variable 'name'"):
        personalise("Hi ${name}", {}, "title")


def test_blacklist_and_suppression_list() -> None:
    blacklist = Blacklist.parse("spam@x.example, @blocked.example, junk.test")
    for address in ("SPAM@x.example", "a@blocked.example", "a@mail.junk.test"):
        assert blacklist.blocks(address)
    assert not blacklist.blocks("a@x.example") and not blacklist.blocks("a@notjunk.test")
    table = Table(
        {suppression_key("u1", "Gone@Example.com"): json.dumps({"reason": "hard_bounce"}).encode()}
    )
    with pytest.raises(Suppressed, match="suppression list \\(hard_bounce\\)") as info:
        check_suppressed(table, Blacklist([]), "u1", "gone@example.com", "welcome")
    assert "gone@" not in str(info.value)  # the reason never names the address
    check_suppressed(table, Blacklist([]), "u2", "gone@example.com", "welcome")  # per user
