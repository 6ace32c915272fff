"""The provider calls through the official stripe client: against our Stripe-shaped server
(idempotency, declines, 429/5xx, refunds) and once against stripe-mock when it is built."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import stripe

from streams.errors import Permanent, Retryable, RetryAfter
from streams.jobs.payment_stripe import PaymentSettings, ProviderClient, classify
from streams.testing.payment_provider import DECLINED_METHOD, PaymentProvider, sign

REPO = Path(__file__).resolve().parents[2]
STRIPE_MOCK = Path(os.environ.get("STREAMS_STRIPE_MOCK", REPO / ".tools/bin/stripe-mock"))
KEY = "sk_test_unit"


@pytest.fixture
async def provider() -> AsyncIterator[PaymentProvider]:
    async with PaymentProvider(api_key=KEY) as p:
        yield p


@pytest.fixture
async def client(provider: PaymentProvider) -> AsyncIterator[ProviderClient]:
    c = ProviderClient(PaymentSettings(payment_api_base=provider.url, payment_api_key=KEY))
    yield c
    await c.close()


async def charge(client: ProviderClient, key: str, amount: int = 1130, **kw: str) -> object:
    return await client.charge(
        idempotency_key=key,
        amount_minor=amount,
        currency="CAD",
        payment_method=kw.get("method", "pm_card_visa"),
        metadata={"payment_id": kw.get("pid", "p")},
        description=None,
    )


async def test_same_key_same_answer_one_charge(
    provider: PaymentProvider, client: ProviderClient
) -> None:
    first = await charge(client, "evt-1")
    again = await charge(client, "evt-1")
    assert first.intent_id == again.intent_id  # type: ignore[attr-defined]
    assert (first.replayed, again.replayed) == (False, True)  # type: ignore[attr-defined]
    assert provider.state.charges == 1


async def test_same_key_other_body_is_refused_permanently(client: ProviderClient) -> None:
    await charge(client, "evt-1")
    with pytest.raises(stripe.IdempotencyError) as caught:
        await charge(client, "evt-1", amount=999)
    outcome = classify(caught.value, what="payment p")
    assert isinstance(outcome, Permanent)
    assert "same parameters" in str(outcome)


async def test_decline_is_permanent(provider: PaymentProvider, client: ProviderClient) -> None:
    with pytest.raises(stripe.CardError) as caught:
        await charge(client, "evt-2", method=DECLINED_METHOD)
    assert str(classify(caught.value, what="payment p")) == (
        "payment p: card declined (generic_decline): Your card was declined."
    )
    assert provider.state.charges == 0


async def test_429_honours_retry_after_and_5xx_retries(
    provider: PaymentProvider, client: ProviderClient
) -> None:
    provider.fail_next(429, retry_after_s=7)
    with pytest.raises(stripe.StripeError) as caught:
        await charge(client, "evt-3")
    outcome = classify(caught.value, what="p", now_s=time.time())
    assert isinstance(outcome, RetryAfter) and outcome.delay_s == 7
    provider.fail_next(503)
    with pytest.raises(stripe.StripeError) as caught:
        await charge(client, "evt-3")
    assert type(classify(caught.value, what="p")) is Retryable
    await charge(client, "evt-3")  # a 5xx is not stored: the retry charges
    assert provider.state.charges == 1


async def test_unreachable_provider_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = ProviderClient(
        PaymentSettings(
            payment_api_base=f"http://127.0.0.1:{port}", payment_api_key=KEY, payment_timeout_s=2
        )
    )
    try:
        with pytest.raises(stripe.APIConnectionError) as caught:
            await charge(c, "evt-4")
    finally:
        await c.close()
    assert "unreachable" in str(classify(caught.value, what="p"))


async def test_refunds_stop_at_the_captured_amount(
    provider: PaymentProvider, client: ProviderClient
) -> None:
    intent = (await charge(client, "evt-5", amount=1000, pid="p-5")).intent_id  # type: ignore[attr-defined]
    assert await client.find_payment("p-5") == intent
    assert await client.find_payment("p-none") is None
    await client.refund(idempotency_key="r1", intent_id=intent, amount_minor=600, metadata={})
    await client.refund(idempotency_key="r1", intent_id=intent, amount_minor=600, metadata={})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.refund(idempotency_key="r2", intent_id=intent, amount_minor=401, metadata={})
    assert "amount_too_large" in str(classify(caught.value, what="r"))
    assert provider.refunded_minor(intent) == 600


def test_signature_matches_stripes_verifier() -> None:
    body = b'{"id": "evt_1"}'
    now = int(time.time())
    stripe.WebhookSignature.verify_header(body.decode(), sign(body, "whsec_x", now), "whsec_x", 300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            body.decode(), sign(body, "whsec_y", now), "whsec_x", 300
        )


@pytest.fixture
def stripe_mock() -> str:
    if not (STRIPE_MOCK.exists() and shutil.which(str(STRIPE_MOCK))):
        pytest.skip(
            f"stripe-mock not built at {STRIPE_MOCK} (go install "
            "github.com/stripe/stripe-mock@latest with GOBIN=.tools/bin)"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(STRIPE_MOCK), "-http-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"  # type: ignore[misc]
    finally:
        proc.terminate()
        proc.wait(10)


async def test_request_shapes_against_stripe_mock(stripe_mock: str) -> None:
    """stripe-mock validates every request against Stripe's OpenAPI spec: our calls' shapes
    (parameters, idempotency header, search query) are Stripe's own."""
    c = ProviderClient(PaymentSettings(payment_api_base=stripe_mock, payment_api_key="sk_test_123"))
    try:
        charged = await charge(c, "evt-mock-1", pid="p-mock")
        assert charged.intent_id.startswith("pi_")  # type: ignore[attr-defined]
        await c.find_payment("p-mock")  # stripe-mock answers fixtures: the shape is the test
        refund_id = await c.refund(
            idempotency_key="r-mock",
            intent_id=charged.intent_id,  # type: ignore[attr-defined]
            amount_minor=100,
            metadata={"refund_id": "r-mock"},
        )
        assert refund_id.startswith("re_")
    finally:
        await c.close()
