"""Data retention (issue 11): a configured policy engine run by the ``cleanup`` job.

``rules`` loads and validates retention.yaml (policies of rules: table, timestamp column,
conditions, action, batch size; legal holds), ``engine`` runs one policy in bounded,
resumable batches, ``archive`` writes and verifies archive files, ``sample`` is the sample
application schema (its own Alembic migrations) and a data generator for tests and bench.
"""
