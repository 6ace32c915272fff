"""The producer SDK: ``prepare`` (pure) builds records, ``publisher`` sends them.

Import it as ``from streams import Publisher``; the modules here are its parts:
``outgoing`` (trace context, headers, key, size, results) and ``prepare`` (events to
records) are pure, ``delivery`` keeps the broker's verdicts, ``publisher`` does the IO.
"""
