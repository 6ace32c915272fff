"""Schedules (issue 11): cron ticks as events, fired by one leader, exactly once per tick.

``plan`` is the pure tick planner (croniter + zoneinfo, clock injected), ``config`` loads
and validates ``schedules.yaml``, ``leader`` is the worker-side firing loop whose
leadership and cursor live in Kafka, ``cli`` is ``streams schedules``.
"""
