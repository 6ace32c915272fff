"""The Kafka control plane: commands to every worker, and the status of every event.

Two compacted topics (declared in ``topics.py``, created by ``streams topics apply``):

- ``streams.control``: key ``<kind>/<target>`` (``cancel/<event_id>``, ``pause/<family>``),
  value a JSON ``Command``; a tombstone revokes it. Every worker reads it whole from the
  beginning into a ``ControlView`` (``reader.py``) before it processes anything, and keeps
  following it; the API and the CLI write it with ``ControlWriter`` (``writer.py``).
- ``streams.status``: key = event id, value the JSON ``StatusRecord`` of its latest
  lifecycle state, written by the worker (``worker/status.py``) and materialised by the API
  into a ``StatusView``; compacted and deleted after ``retention.ms`` (the status TTL).

``model.py`` is the pure part: the records, their validation and the registry of kinds.
"""
