"""One module per benchmark case; each defines ``CASE = Case(...)`` (see bench.harness).

The harness imports every module here, so adding a case is adding one module.
"""
