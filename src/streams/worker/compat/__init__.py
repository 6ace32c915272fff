"""Every reach into faust, aiokafka, mode and aiohttp internals, one workaround per module.

The rest of the worker touches none of their private attributes (a unit test checks it);
each module's docstring tells why its workaround exists, and each has its own unit test:

- ``consumer``: the typed face of faust's consumer the worker uses (``FaustConsumer``).
- ``seek``: seeks run in the consumer's own thread.
- ``read_offsets``: faust's read-offset filter is bypassed for our topics.
- ``flow_control``: stream buffers that faust clears are reported (and sought back).
- ``fetch``: a fetch sees a snapshot of the active partitions; what faust would drop is
  given back.
- ``fetch_wait``: the worker consumer's fetch max wait is configurable.
- ``signals``: mode's signal handlers are replaced (a second signal exits at once).
- ``batch_fetch``: the batch route: our records are taken from the fetch per partition
  batch (never faust's per-event stream); our own commits; backpressure with aiokafka's
  pause.
- ``memory_store``: keys deleted from faust's memory store leave its key-to-partition map
  too, and the store's dicts (and glibc's heap) give their memory back.
- ``header_keys``: a record whose header key is not UTF-8 is parsed (key bytes repaired)
  instead of crashing aiokafka's fetcher.
- ``table_start``: faust's table manager starts without its fixed one-second sleep.
- ``loop_close``: mode's worker closes its loop without its fixed one-second sleep.
"""

from streams.worker.compat.consumer import FaustConsumer
from streams.worker.compat.loop_close import QuickLoopClose
from streams.worker.compat.signals import SignalledWorker
from streams.worker.compat.table_start import TableManager

__all__ = ["FaustConsumer", "QuickLoopClose", "SignalledWorker", "TableManager"]
