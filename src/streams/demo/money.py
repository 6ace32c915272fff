"""The demo's money step: a payment, its receipt, a refund and a subscription renewal.

After the email/webhook demo has settled, ``streams up`` starts the Stripe-shaped provider
of ``streams.testing.payment_provider`` (a thread of this process) and a second worker
for the ``payment``, ``refund`` and ``subscription`` families (its own app id, so its
consumer group is its own), then publishes one payment in Ontario, one subscription
renewal in Quebec and, once the payment is charged, a partial refund. The receipts (with
HST, or GST + QST), the renewal notice and the refund confirmation go through the email
family of the main worker to the SMTP catcher. It checks what arrived by the ids the jobs
derive (``jobs.money.derived_id``) and says so in a few lines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.demo.services import SMTPCatcher
from streams.jobs.money import derived_id
from streams.settings import Settings
from streams.testing import processes
from streams.testing.payment_provider import PaymentProvider

MONEY_FAMILIES = ("payment", "refund", "subscription")
READY_TIMEOUT_S = 90.0
Say = Callable[[str, str], None]


class _ProviderThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.provider = PaymentProvider()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="streams-up-payment-provider")  # fmt: skip

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.provider.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.provider.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def expected_mails(payment_event: str, renewal_event: str, sub: str, period: str,
                   refund_id: str) -> dict[str, str]:  # fmt: skip
    """Email event id -> what it is, as the money jobs derive them."""
    renewal_key = f"renewal:{sub}:{period}:0"
    return {
        derived_id(derived_id(payment_event, "captured"), "receipt"): "payment receipt",
        derived_id(renewal_event, "email:notice"): "renewal notice",
        derived_id(derived_id(renewal_key, "captured"), "receipt"): "renewal receipt",
        derived_id(f"refund:{refund_id}", "email:refund"): "refund confirmation",
    }


def run_money_demo(
    settings: Settings,
    env: dict[str, str],
    smtp: SMTPCatcher,
    log_path: Path,
    run_id: str,
    say: Say,
    *,
    loglevel: str = "info",
    timeout_s: float = 60.0,
    api_url: str | None = None,
) -> int:
    """Run the money step (see the module docstring); 0 when everything arrived, else 1."""

    from streams.broker.admin import apply
    from streams.catalog import load_catalog

    money_settings = settings.model_copy(update={"app_id": f"{settings.app_id}-money"})
    apply(money_settings, load_catalog(settings.catalog_path))  # its changelogs, leader topic
    provider = _ProviderThread()
    provider.start()
    port = processes.free_port()
    worker_env = {**env, "STREAMS_HTTP_PORT": str(port), "STREAMS_APP_ID":
                  money_settings.app_id, "STREAMS_WORKER_ID": f"money-{run_id}",
                  "STREAMS_PAYMENT_API_BASE": provider.provider.url}  # fmt: skip
    worker = processes.WorkerProcess(
        processes.worker_command(MONEY_FAMILIES, loglevel=loglevel), worker_env, log_path,
        own_session=True, die_with_parent=True, log_header=f"streams up {run_id} money",
        http_port=port,
    )  # fmt: skip
    worker.start()
    try:
        worker.wait_healthy(READY_TIMEOUT_S, interval_s=0.2)
        code = _exercise(settings, provider.provider, smtp, run_id, say, timeout_s)
        if code == 0 and api_url is not None:
            code = _dispute(provider, api_url, smtp, run_id, say, timeout_s)
        return code
    except processes.NotReady:
        say("money", f"the money worker was not ready; see {log_path}")
        return 1
    finally:
        worker.stop(15.0)
        provider.stop()


def _exercise(settings: Settings, provider: PaymentProvider, smtp: SMTPCatcher, run_id: str,
              say: Say, timeout_s: float) -> int:  # fmt: skip
    from streams.publish.publisher import Publisher

    sub, period, refund_id = f"sub-{run_id}", "2026-12", f"ref-{run_id}"
    started = time.monotonic()
    with Publisher(settings, producer_name="streams-up") as publisher:
        pay = publisher.publish("payment.requested", {
            "payment_id": f"pay-{run_id}", "customer_id": "ada", "amount_minor": 4803,
            "currency": "CAD", "provider": "payments", "receipt_email": "ada@example.com",
            "province": "ON", "customer_name": "Ada", "description": "demo order"},
            event_id=f"demo-{run_id}-pay").event_id  # fmt: skip
        renewal = publisher.publish("subscription.renewal_due", {
            "subscription_id": sub, "customer_id": "chloe", "period": period,
            "amount_minor": 1150, "currency": "CAD", "provider": "payments",
            "receipt_email": "chloe@example.fr", "locale": "fr", "province": "QC"},
            event_id=f"demo-{run_id}-renewal").event_id  # fmt: skip
        if not _wait(lambda: provider.state.charges >= 2, started, timeout_s):
            say("money", f"only {provider.state.charges} of 2 charges reached the provider")
            return 1
        publisher.publish("refund.requested", {
            "payment_id": f"pay-{run_id}", "refund_id": refund_id, "amount_minor": 1000,
            "currency": "CAD", "reason": "demo partial refund",
            "receipt_email": "ada@example.com"}, event_id=f"demo-{run_id}-refund")  # fmt: skip
    mails = expected_mails(pay, renewal, sub, period, refund_id)
    arrived = _wait(lambda: set(mails) <= smtp.accepted(), started, timeout_s)
    got = [what for mail_id, what in mails.items() if mail_id in smtp.accepted()]
    refunded = sum(r["amount"] for r in provider.state.refunds.values())
    say("money", f"{provider.state.charges} charges at the local provider {provider.url}, "
                 f"refunded {refunded / 100:.2f} CAD; mails: {', '.join(got) or 'none'}"
                 f" ({time.monotonic() - started:.1f}s)")  # fmt: skip
    if not arrived:
        missing = [what for mail_id, what in mails.items() if mail_id not in smtp.accepted()]
        say("money", f"missing: {', '.join(missing)}")
        return 1
    return 0


def _dispute(provider: _ProviderThread, api_url: str, smtp: SMTPCatcher, run_id: str,
             say: Say, timeout_s: float) -> int:  # fmt: skip
    """The provider sends a signed dispute webhook to the API; the payment job audits it
    and emails the payments admin."""
    import json
    import os

    from streams.api.provider_routes import derived_event_id

    secrets = json.loads(os.environ.get("STREAMS_PROVIDER_WEBHOOK_SECRETS", "{}"))
    if not secrets.get("stripe"):
        return 0
    event = provider.provider.webhook_event("charge.dispute.created", {
        "id": f"dp_{run_id}", "object": "dispute", "status": "needs_response",
        "amount": 1000, "metadata": {"payment_id": f"pay-{run_id}"}})  # fmt: skip
    url = f"{api_url}/v1/providers/stripe/webhooks"
    send = provider.provider.send_webhook(url, event, secrets["stripe"][0])
    status, _ = asyncio.run_coroutine_threadsafe(send, provider.loop).result(30)
    mail = derived_id(derived_event_id("stripe", event["id"]), "email:dispute.opened")
    started = time.monotonic()
    arrived = status == 200 and _wait(lambda: mail in smtp.accepted(), started, timeout_s)
    say("money", f"signed dispute webhook -> {url}: HTTP {status}; admin email "
                 f"{'received' if arrived else 'MISSING'}")  # fmt: skip
    return 0 if arrived else 1


def _wait(done: Callable[[], Any], started: float, timeout_s: float) -> bool:
    while not done():
        if time.monotonic() - started > timeout_s:
            return False
        time.sleep(0.1)
    return True
