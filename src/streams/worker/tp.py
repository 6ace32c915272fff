"""The type of a topic-partition as the worker sees it.

faust's ``TP`` and aiokafka's ``TopicPartition`` are both named tuples ``(topic, partition)``
that compare and hash alike; the worker only reads the two fields, so it types them with
this protocol (and code that needs no faust does not import it).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol


class TP(Hashable, Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...
