"""Committer: the finished prefixes of assigned partitions, sent once, kept until sent."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from tests.unit.worker_fakes import TP, settle, until

from streams.worker.commits import Committer

TP0, TP1, TP2 = TP("t.audit", 0), TP("t.audit", 1), TP("t.audit", 2)


class Broker:
    """The commit call: records what was sent; fails, refuses or blocks when told to."""

    def __init__(self) -> None:
        self.assigned: set[Any] = {TP0, TP1, TP2}
        self.sent: list[dict[Any, int]] = []
        self.outcomes: list[bool | BaseException] = []  # popped per call; True when empty
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.max_running = 0

    async def commit(self, offsets: Mapping[Any, int]) -> bool:
        self.sent.append(dict(offsets))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            outcome = self.outcomes.pop(0) if self.outcomes else True
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        finally:
            self.running -= 1

    def committer(self) -> Committer:
        return Committer(self.commit, lambda: self.assigned)


async def test_only_advances_past_the_last_commit_are_sent() -> None:
    b = Broker()
    c = b.committer()
    assert not await c.commit()  # nothing to send: no request at all
    c.advance(TP0, 5)
    c.advance(TP1, 3)
    c.advance(TP0, 4)  # a stale advance never moves the offset back
    assert await c.commit()
    assert b.sent == [{TP0: 5, TP1: 3}]
    assert c.committed == {TP0: 5, TP1: 3}
    assert not await c.commit()
    c.advance(TP0, 5)  # no further than what was committed
    assert not await c.commit()
    c.advance(TP0, 8)
    assert await c.commit()
    assert b.sent == [{TP0: 5, TP1: 3}, {TP0: 8}]


async def test_partitions_no_longer_assigned_are_left_out() -> None:
    b = Broker()
    c = b.committer()
    c.advance(TP0, 5)
    c.advance(TP1, 7)
    b.assigned = {TP0}
    assert await c.commit()
    assert b.sent == [{TP0: 5}]
    b.assigned = {TP0, TP1}
    assert not await c.commit()  # TP1's advance was dropped with its assignment
    c.advance(TP2, 1)
    b.assigned = set()
    assert not await c.commit()
    assert len(b.sent) == 1


async def test_a_failed_or_refused_commit_keeps_the_offsets_for_the_next_one() -> None:
    b = Broker()
    c = b.committer()
    c.advance(TP0, 5)
    b.outcomes = [ConnectionError("coordinator moved"), False]
    assert not await c.commit()
    assert not await c.commit()
    assert c.committed == {}
    c.advance(TP1, 2)
    assert await c.commit()
    assert b.sent == [{TP0: 5}, {TP0: 5}, {TP0: 5, TP1: 2}]
    assert c.committed == {TP0: 5, TP1: 2}


async def test_commits_are_serialized_and_advances_meanwhile_are_kept() -> None:
    b = Broker()
    c = b.committer()
    b.gate = asyncio.Event()
    c.advance(TP0, 5)
    loop = asyncio.get_running_loop()
    first = loop.create_task(c.commit())
    await until(lambda: len(b.sent) == 1)
    c.advance(TP0, 9)  # finished while the first request is on its way
    c.advance(TP1, 1)
    second = loop.create_task(c.commit())
    await settle()
    assert len(b.sent) == 1  # the second waits for the first
    b.gate.set()
    assert await first
    assert await second
    assert b.max_running == 1
    assert b.sent == [{TP0: 5}, {TP0: 9, TP1: 1}]
    assert c.committed == {TP0: 9, TP1: 1}
    assert not await c.commit()


async def test_forget_drops_pending_advances_and_what_was_committed() -> None:
    b = Broker()
    c = b.committer()
    c.advance(TP0, 5)
    assert await c.commit()
    c.advance(TP0, 7)
    c.advance(TP1, 2)
    c.forget({TP0})
    assert await c.commit()
    assert b.sent == [{TP0: 5}, {TP1: 2}]
    assert c.committed == {TP1: 2}
    # assigned again later: its first advance is sent even if not past the old commit
    c.advance(TP0, 5)
    assert await c.commit()
    assert b.sent[-1] == {TP0: 5}
