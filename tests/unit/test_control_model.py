"""The control plane's pure parts: commands, status records, the views."""

from __future__ import annotations

import json

import pytest

from streams.control.model import (
    Command,
    ControlError,
    StatusRecord,
    parse_command,
    parse_status,
    register_kind,
    split_key,
    status_value,
)
from streams.control.reader import ControlView, StatusView


def cmd(kind: str = "cancel", target: str = "ev-1", **kw: object) -> Command:
    return Command(kind=kind, target=target, issued_at_ms=1000, **kw)  # type: ignore[arg-type]


def test_command_round_trip_and_key() -> None:
    c = cmd(expires_at_ms=5000, actor="ops@x")
    assert c.key == "cancel/ev-1"
    assert parse_command(b"cancel/ev-1", c.encode()) == c
    assert c.active(4999) and not c.active(5000)
    assert cmd("pause", "email").active(10**15)  # no expiry: until revoked


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "nuke"}, "unknown kind 'nuke'"),
        ({"kind": "pause", "target": "Email"}, "target 'Email' is not valid for kind 'pause'"),
        ({"target": "has space"}, "is not valid for kind 'cancel'"),
        ({"expires_at_ms": 1000}, "expires_at_ms must be after issued_at_ms"),
    ],
)
def test_command_refuses_bad_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cmd(**kwargs)  # type: ignore[arg-type]


def test_parse_command_checks_the_key() -> None:
    with pytest.raises(ControlError, match="expected '<kind>/<target>'"):
        split_key("cancel")
    with pytest.raises(ControlError, match="value is for 'cancel/ev-1'"):
        parse_command(b"cancel/ev-2", cmd().encode())
    with pytest.raises(ControlError, match="control record 'cancel/ev-1': kind"):
        parse_command(b"cancel/ev-1", b'{"target": "ev-1", "issued_at_ms": 1}')


def test_a_new_kind_is_registered_once() -> None:
    register_kind("ratelimit-reset", r"[a-z][a-z0-9_]*/.+", "reset a key's buckets")
    c = Command(kind="ratelimit-reset", target="email/user-1", issued_at_ms=1)
    assert c.key == "ratelimit-reset/email/user-1"
    assert split_key(c.key) == ("ratelimit-reset", "email/user-1")


def test_control_view_applies_tombstones_expiry_and_skips_garbage() -> None:
    now = [2000]
    view = ControlView(lambda: now[0])
    seen: list[tuple[str, str, bool]] = []
    view.listen(lambda k, t, c: seen.append((k, t, c is not None)))
    view.apply(b"pause/email", cmd("pause", "email").encode())
    view.apply(b"cancel/ev-1", cmd(expires_at_ms=3000).encode())
    view.apply(b"cancel/ev-2", b"not json")
    assert view.paused("email") and not view.paused("webhook")
    assert view.cancelled("ev-1") is not None and view.cancelled("ev-2") is None
    assert view.malformed == 1
    now[0] = 3000
    assert view.cancelled("ev-1") is None  # expired with its TTL
    view.apply(b"pause/email", None)
    assert not view.paused("email") and view.paused_families() == []
    assert seen == [("pause", "email", True), ("cancel", "ev-1", True), ("pause", "email", False)]


def test_status_value_parses_back_validated() -> None:
    raw = status_value(
        event_id="e1",
        family="email",
        event_type="email.requested",
        tenant_id="t1",
        state="dead_lettered",
        attempt=3,
        at_ms=10,
        error_class="streams.errors.Permanent",
        reason="permanent",
        dlq=("email.dlq", 2, 41),
    )
    record = parse_status(raw)
    assert record.state == "dead_lettered" and record.final
    assert record.dlq is not None and (record.dlq.topic, record.dlq.offset) == ("email.dlq", 41)
    with pytest.raises(ControlError, match="status record: state"):
        parse_status(json.dumps({**json.loads(raw), "state": "lost"}).encode())


def test_status_view_is_bounded_by_ttl() -> None:
    now = [1000]
    view = StatusView(ttl_ms=500, clock_ms=lambda: now[0])
    rec = StatusRecord(event_id="e", family="f", event_type="f.x", state="running", at_ms=900)
    view.apply(b"e", rec.model_dump_json().encode())
    view.apply(b"bad", b"{}")
    assert view.get("e") == rec and view.malformed == 1
    now[0] = 1401
    assert view.get("e") is None
    assert view.expire() == 1 and len(view) == 0
    view.apply(b"e", rec.model_dump_json().encode())
    view.apply(b"e", None)
    assert len(view) == 0
