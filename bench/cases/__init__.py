"""One module per benchmark case; each defines ``CASE = Case(...)`` (see bench.harness).

The harness imports every module here whose name does not start with ``_`` (those are
shared helpers), so adding a case is adding one module.
"""
