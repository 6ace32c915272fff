"""The HTTP API (``streams api``): an aiohttp application in its own process.

Every route declares who may call it (``access.public`` for ``/health/*``, or
``access.requires(Role.X)``); the application refuses to build with an undeclared route,
so a new route is closed until it says otherwise. The ``auth`` middleware turns the
request's credential (a bearer JWT or an ``X-Api-Key``) into a ``Principal``
(``auth.Authenticator``) and checks the route's role; handlers read
``request[PRINCIPAL]``. Errors of every kind leave as RFC 9457 problem documents
(``problems``). Tenancy is decided per route from the principal's ``tenant`` claim
(``tenancy``). No CORS headers are sent: browsers on other origins are refused.
"""
