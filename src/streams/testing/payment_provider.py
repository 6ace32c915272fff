"""A real payment provider server (aiohttp) for tests and the demo, Stripe-shaped where the
payment and refund jobs touch it.

Endpoints (form-encoded requests, JSON answers, ``Authorization: Bearer <key>`` required):

- ``POST /v1/payment_intents`` (``amount``, ``currency``, ``confirm``, ``payment_method``,
  ``description``, ``metadata[...]``): a confirmed intent is captured at once
  (``status: succeeded``) and counts as one charge; ``payment_method=pm_card_chargeDeclined``
  (Stripe's test token) answers 402 ``card_error``/``card_declined``.
- ``GET /v1/payment_intents/{id}``; ``GET /v1/payment_intents/search?query=
  metadata['payment_id']:'<id>'`` (the one query form Stripe's search offers that we use).
- ``POST /v1/refunds`` (``payment_intent``, ``amount``, ``metadata[...]``): refused with 400
  ``invalid_request_error``/``amount_too_large`` when it would refund more than remains.

``Idempotency-Key`` semantics like Stripe's: the first answer (2xx or 4xx) to a key is
stored and replayed for the same key with ``Idempotent-Replayed: true``; the same key with
different parameters is refused (400 ``idempotency_error``); 429 and 5xx answers are not
stored (the request may be retried). Faults on demand: ``fail_next(status, count,
retry_after_s)`` answers the next ``count`` requests with 402/429/5xx before any work;
``rate_limit_per_s`` answers 429 (``rate_limit``) over a token bucket.

Webhooks it sends: ``send_webhook(url, type, obj)`` POSTs an ``event`` object signed with
``Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 hex of "t.payload">`` (``sign``).

Run alone for ``make run``: ``python -m streams.testing.payment_provider --port 12111``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from streams.testing.serve import serve

DECLINED_METHOD = "pm_card_chargeDeclined"
_SEARCH_PREFIX = "metadata['payment_id']:'"


def sign(payload: bytes, secret: str, timestamp_s: int) -> str:
    """The ``Stripe-Signature`` header value of ``payload`` at ``timestamp_s``."""
    signed = f"{timestamp_s}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={digest}"


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass
class ProviderState:
    """What the provider keeps (read it from the test thread: values are replaced whole)."""

    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: int = 0  # captured payment intents (one per successful creation)
    requests: int = 0
    replays: int = 0
    idempotency_conflicts: int = 0


def _error(status: int, kind: str, code: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"type": kind, "code": code, "message": message, **extra}}
    return web.json_response(body, status=status)


def _form(text: str) -> dict[str, Any]:
    """Stripe's form encoding: ``metadata[k]=v`` becomes ``{"metadata": {"k": "v"}}``."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if "[" in key and key.endswith("]"):
            outer, inner = key[:-1].split("[", 1)
            out.setdefault(outer, {})[inner] = value
        else:
            out[key] = value
    return out


class PaymentProvider:
    """``async with PaymentProvider(api_key="sk_test_x") as p: ... p.url``."""

    def __init__(
        self,
        *,
        api_key: str = "sk_test_streams",
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit_per_s: float | None = None,
    ) -> None:
        self.api_key = api_key
        self._host = host
        self._port = port
        self._rate = rate_limit_per_s
        self._tokens = rate_limit_per_s or 0.0
        self._refilled_at = time.monotonic()
        self._faults: list[tuple[int, float | None]] = []
        self._idempotency: dict[str, _Stored] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self.state = ProviderState()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/payment_intents/search", self._search)
        app.router.add_post("/v1/payment_intents", self._create_intent)
        app.router.add_get("/v1/payment_intents/{id}", self._get_intent)
        app.router.add_post("/v1/refunds", self._create_refund)
        app.router.add_get("/_test/state", self._state)
        self._runner, self._bound_port = await serve(app, self._host, self._port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> PaymentProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("PaymentProvider not started")
        return f"http://{self._host}:{self._bound_port}"

    # --- scripting -----------------------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1, retry_after_s: float | None = None) -> None:
        """Answer the next ``count`` API requests with ``status`` (402, 429 or 5xx)."""
        self._faults.extend([(status, retry_after_s)] * count)

    def refunded_minor(self, intent_id: str) -> int:
        return int(self.state.intents[intent_id]["amount_refunded"])

    # --- request plumbing ----------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):08d}"

    def _refused(self, request: web.Request) -> web.Response | None:
        self.state.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_request_error", "api_key_invalid", "Invalid API Key.")
        if self._faults:
            status, retry_after_s = self._faults.pop(0)
            headers = {} if retry_after_s is None else {"Retry-After": f"{retry_after_s:g}"}
            if status == 402:
                return _error(402, "card_error", "card_declined", "Your card was declined.")
            kind = "rate_limit_error" if status == 429 else "api_error"
            resp = _error(status, kind, "injected", f"injected HTTP {status}")
            resp.headers.update(headers)
            return resp
        if self._rate is not None:
            now = time.monotonic()
            self._tokens = min(self._rate, self._tokens + (now - self._refilled_at) * self._rate)
            self._refilled_at = now
            if self._tokens < 1:
                resp = _error(429, "rate_limit_error", "rate_limit", "Too many requests.")
                resp.headers["Retry-After"] = "1"
                return resp
            self._tokens -= 1
        return None

    async def _idempotent(
        self, request: web.Request, params: Mapping[str, Any], work: Any
    ) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        fingerprint = json.dumps([request.path, params], sort_keys=True)
        if key is not None:
            stored = self._idempotency.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    self.state.idempotency_conflicts += 1
                    return _error(
                        400,
                        "idempotency_error",
                        "idempotency_key_in_use",
                        "Keys for idempotent requests can only be used with the same parameters"
                        f" they were first used with. Try using a key other than '{key}' if you"
                        " meant to execute a different request.",
                    )
                self.state.replays += 1
                resp = web.json_response(stored.body, status=stored.status)
                resp.headers["Idempotent-Replayed"] = "true"
                return resp
        status, body = work(params)
        if key is not None and status < 500:
            self._idempotency[key] = _Stored(fingerprint, status, body)
        return web.json_response(body, status=status)

    # --- resources ------------------------------------------------------------------------------

    async def _create_intent(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return await self._idempotent(request, _form(await request.text()), self._intent_for)

    def _intent_for(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            amount = int(params["amount"])
            currency = str(params["currency"]).lower()
        except (KeyError, ValueError):
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "parameter_missing",
                    "message": "amount and currency are required",
                }
            }
        if amount <= 0:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "amount_too_small",
                    "message": "Amount must be at least 1 minor unit.",
                }
            }
        intent: dict[str, Any] = {
            "id": self._new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "currency": currency,
            "description": params.get("description"),
            "metadata": dict(params.get("metadata", {})),
            "created": int(time.time()),
            "amount_refunded": 0,
        }
        if params.get("payment_method") == DECLINED_METHOD:
            intent.update(status="requires_payment_method", amount_received=0)
            self.state.intents[intent["id"]] = intent
            return 402, {
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "generic_decline",
                    "message": "Your card was declined.",
                    "payment_intent": intent,
                }
            }
        charge = self._new_id("ch")
        intent.update(status="succeeded", amount_received=amount, latest_charge=charge)
        self.state.intents[intent["id"]] = intent
        self.state.charges += 1
        return 200, intent

    async def _get_intent(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        intent = self.state.intents.get(request.match_info["id"])
        if intent is None:
            return _error(
                404, "invalid_request_error", "resource_missing", "No such payment_intent"
            )
        return web.json_response(intent)

    async def _search(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        query = request.query.get("query", "")
        if not (query.startswith(_SEARCH_PREFIX) and query.endswith("'")):
            return _error(400, "invalid_request_error", "parameter_invalid", "unsupported query")
        wanted = query[len(_SEARCH_PREFIX) : -1]
        found = [
            i
            for i in self.state.intents.values()
            if i["metadata"].get("payment_id") == wanted and i["status"] == "succeeded"
        ]
        return web.json_response(
            {"object": "search_result", "data": found, "has_more": False, "url": request.path}
        )

    async def _create_refund(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return await self._idempotent(request, _form(await request.text()), self._refund_for)

    def _refund_for(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        intent = self.state.intents.get(str(params.get("payment_intent", "")))
        if intent is None or intent["status"] != "succeeded":
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": "No such payment_intent",
                }
            }
        remaining = int(intent["amount_received"]) - int(intent["amount_refunded"])
        amount = int(params.get("amount", remaining))
        if amount > remaining:
            cur = str(intent["currency"]).upper()
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "amount_too_large",
                    "message": f"Refund amount ({amount / 100:.2f} {cur}) is greater than"
                    f" unrefunded amount on charge ({remaining / 100:.2f} {cur})",
                }
            }
        refund = {
            "id": self._new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "metadata": dict(params.get("metadata", {})),
        }
        intent["amount_refunded"] = int(intent["amount_refunded"]) + amount
        self.state.refunds[refund["id"]] = refund
        return 200, refund

    async def _state(self, request: web.Request) -> web.Response:
        s = self.state
        return web.json_response(
            {
                "charges": s.charges,
                "refunds": len(s.refunds),
                "requests": s.requests,
                "replays": s.replays,
                "idempotency_conflicts": s.idempotency_conflicts,
            }
        )

    # --- webhooks it sends ---------------------------------------------------------------------

    def webhook_event(self, event_type: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A Stripe ``event`` object wrapping ``obj``."""
        return {
            "id": self._new_id("evt"),
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "api_version": "2024-06-20",
            "data": {"object": dict(obj)},
        }

    async def send_webhook(
        self, url: str, event: Mapping[str, Any], secret: str, *, timestamp_s: int | None = None
    ) -> tuple[int, str]:
        """POST ``event`` to ``url`` signed with ``secret``; returns (status, body)."""
        payload = json.dumps(event).encode()
        header = sign(payload, secret, int(time.time()) if timestamp_s is None else timestamp_s)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url,
                data=payload,
                headers={"Content-Type": "application/json", "Stripe-Signature": header},
            ) as resp,
        ):
            return resp.status, await resp.text()


async def _serve(host: str, port: int, api_key: str, rate: float | None) -> None:
    provider = PaymentProvider(api_key=api_key, host=host, port=port, rate_limit_per_s=rate)
    await provider.start()
    print(json.dumps({"listening": provider.url}), flush=True)
    await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default="sk_test_streams")
    parser.add_argument("--rate-limit-per-s", type=float, default=None)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.api_key, args.rate_limit_per_s))


if __name__ == "__main__":
    main()
