"""The producer SDK's public names: ``from streams.publisher import Publisher``."""

from streams.kafka.outgoing import BatchPublishError, PublishResult
from streams.kafka.publisher import PreparedRecord, Publisher

__all__ = ["BatchPublishError", "PreparedRecord", "PublishResult", "Publisher"]
