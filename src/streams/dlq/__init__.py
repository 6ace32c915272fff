"""Reading dead-letter topics: ``records`` (the pure record model and statistics) and
``reader`` (the assign()-based consumer IO)."""
