"""``streams up``: the whole pipeline on one machine, with a demo run through it.

- ``scenario``: the sample events and what each one should end as (pure);
- ``services``: the local SMTP catcher and webhook receiver (in-process threads);
- ``metrics``: reading the worker's ``/metrics`` into per-family counts;
- ``display``: the live progress table and the final summary (pure text);
- ``runner``: starts and stops everything (broker, topics, peers, worker, publishing).
"""
