"""The control plane's topic names (the catalog's ``control_plane:`` section sizes them;
``catalog.desired_topics`` declares them beside the families' topics)."""

from __future__ import annotations

from streams.core.topology import with_prefix

CONTROL = "streams.control"
STATUS = "streams.status"


def control_topic(prefix: str) -> str:
    """One partition, compacted only: a pause lasts until it is revoked."""
    return with_prefix(prefix, CONTROL)


def status_topic(prefix: str) -> str:
    """Compacted and deleted after the status TTL (``retention.ms``)."""
    return with_prefix(prefix, STATUS)
