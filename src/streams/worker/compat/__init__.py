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
- ``revoke_commit``: the acked prefix is committed before faust forgets it on a revoke.
- ``signals``: mode's signal handlers are replaced (a second signal exits at once).
"""

from streams.worker.compat.consumer import FaustConsumer
from streams.worker.compat.signals import SignalledWorker

__all__ = ["FaustConsumer", "SignalledWorker"]
