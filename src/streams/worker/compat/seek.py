"""Seek in the consumer's own thread and wait until the positions are set.

faust's ``Consumer.seek`` calls aiokafka from the event loop's thread while aiokafka runs in
the consumer thread; such a seek was seen not to take effect (a partition then waited
forever for its expected offset). ``Consumer.seek_wait`` does the seek in the consumer
thread (faust's ``ThreadDelegateConsumer``) and waits for the new positions. A failure is
logged, not raised: the next out-of-sequence record or the stall watchdog seeks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import cast

from faust.types import TP as FaustTP
from faust.types.transports import ConsumerT

from streams.worker.tp import TP

log = logging.getLogger(__name__)

SEEK_TIMEOUT_S = 30.0


async def seek_in_consumer_thread(
    consumer: ConsumerT, offsets: Mapping[TP, int], timeout_s: float = SEEK_TIMEOUT_S
) -> None:
    """Seek ``offsets`` in ``consumer``'s thread within ``timeout_s``; never raises."""
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.seek_wait(cast(Mapping[FaustTP, int], offsets))
    except Exception as exc:  # retried by the next out-of-sequence record / watchdog
        log.warning("seek to %s failed: %r", offsets, exc)
