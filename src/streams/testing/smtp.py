"""A real SMTP server (aiosmtpd, in its own thread) that records what it receives.

For tests and the local demo. It answers as told:

- ``fail_first_n``/``fail_code``: the first N transactions get ``fail_code`` (451 by
  default) at ``fail_stage`` (``"data"`` by default, or ``"rcpt"``), later ones succeed;
- ``reject_recipients``: those addresses (any case) get ``550 5.1.1`` at RCPT;
- ``reply_delay_s``: sleeps before answering DATA (for client timeouts);
- ``max_messages_per_connection``: after that many accepted messages on one connection,
  the next MAIL FROM on it is answered by cutting the connection (a server that restarted
  or dropped an idle client: what a connection pool must survive);
- ``implicit_tls_context`` speaks TLS from the first byte (port 465 style);
- ``tls_context`` offers STARTTLS (``require_starttls`` makes it mandatory) and
  ``credentials`` (login -> password) requires AUTH (over TLS only, aiosmtpd's default).

``messages`` are the accepted messages parsed as ``email.message.EmailMessage``;
``received`` adds the envelope, TLS and login; ``wait_for(n, timeout_s)`` blocks until n
have arrived. All of them are safe to call from any thread.

Run it alone for ``make run``: ``python -m streams.testing.smtp --port 1025``; it prints one
JSON line per accepted message.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import logging
import signal
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message with its envelope."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None
    peer: str  # the client's host:port: one value per connection


class _Controller(Controller):
    """aiosmtpd's Controller, able to bind port 0 (it then learns the port it got)."""

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]

    def factory(self) -> SMTP:
        return _SMTP(self.handler, **self.SMTP_kwargs)


class _SMTP(SMTP):
    """aiosmtpd's SMTP, aware that a session over implicit TLS is encrypted (aiosmtpd only
    counts STARTTLS), so AUTH, which it allows over TLS only, works there too."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._tls_protocol is None and transport.get_extra_info("sslcontext") is not None:
            self._tls_protocol = transport  # type: ignore[assignment]  # truthy: encrypted
            assert self.session is not None
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}


def _not_login_data_deprecation(record: logging.LogRecord) -> bool:
    return "login_data is deprecated" not in record.getMessage()


# aiosmtpd 1.4.6 warns about its own use of Session.login_data after every AUTH.
logging.getLogger("mail.log").addFilter(_not_login_data_deprecation)

_ACCEPTED = "streams_accepted"  # per-connection count, kept on aiosmtpd's Session


class _Handler:
    def __init__(self, owner: RecordingSMTPServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        limit = self._owner.max_messages_per_connection
        if limit is not None and getattr(session, _ACCEPTED, 0) >= limit:
            self._owner._count_drop()
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()  # no reply: the client sees the connection cut
            return "421 4.4.2 connection dropped"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self._owner._rcpt_reply(address)
        if reply is None:
            envelope.rcpt_tos.append(address)
            return "250 OK"
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._owner.reply_delay_s > 0:
            await asyncio.sleep(self._owner.reply_delay_s)
        return self._owner._data_reply(session, envelope)


class RecordingSMTPServer:
    """A recording SMTP server on ``host``; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fail_first_n: int = 0,
        fail_code: int = 451,
        fail_stage: Literal["data", "rcpt"] = "data",
        reject_recipients: Iterable[str] = (),
        reply_delay_s: float = 0.0,
        max_messages_per_connection: int | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        credentials: Mapping[str, str] | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not 400 <= fail_code < 600:
            raise ValueError(f"fail_code must be a 4xx or 5xx reply, got {fail_code}")
        self.host = host
        self.fail_first_n = fail_first_n
        self.fail_code = fail_code
        self.fail_stage = fail_stage
        self.reject_recipients = frozenset(a.lower() for a in reject_recipients)
        self.reply_delay_s = reply_delay_s
        self.max_messages_per_connection = max_messages_per_connection
        self.credentials = dict(credentials or {})
        self._cond = threading.Condition()
        self._received: list[ReceivedMail] = []
        self._transactions = 0
        self._failed = 0
        self._dropped = 0
        self._port = port
        self._smtp_options: dict[str, Any] = {
            "server_hostname": "recording-smtp.local",
            "tls_context": tls_context,
            "require_starttls": require_starttls,
            "authenticator": self._authenticate if self.credentials else None,
            "auth_required": bool(self.credentials),
        }
        if implicit_tls_context is not None:
            self._smtp_options["ssl_context"] = implicit_tls_context
        self._controller: _Controller | None = None

    # --- lifecycle ---

    @property
    def port(self) -> int:
        """The bound port (known once started; kept across a stop and a restart)."""
        return self._port

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Start listening (in a background thread); returns once it answers.

        After ``stop()`` it may start again, on the same port: an outage for the client.
        """
        if self._controller is not None:
            raise RuntimeError("the SMTP server is already running")
        controller = _Controller(
            _Handler(self), hostname=self.host, port=self._port, **self._smtp_options
        )
        controller.start()
        self._port = int(controller.port)
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and join the thread (no-op when not running)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> RecordingSMTPServer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> RecordingSMTPServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # --- what it received ---

    @property
    def received(self) -> list[ReceivedMail]:
        """Accepted messages with their envelopes, oldest first (a copy)."""
        with self._cond:
            return list(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        """Accepted messages, parsed, oldest first (a copy)."""
        return [r.message for r in self.received]

    @property
    def transactions(self) -> int:
        """Transactions seen at the failing stage, accepted or not."""
        with self._cond:
            return self._transactions

    @property
    def failed(self) -> int:
        """Transactions answered with ``fail_code`` so far."""
        with self._cond:
            return self._failed

    @property
    def dropped(self) -> int:
        """Connections cut because of ``max_messages_per_connection``."""
        with self._cond:
            return self._dropped

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[EmailMessage]:
        """Block until ``count`` messages were accepted; raises TimeoutError past timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._received) < count:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise TimeoutError(
                        f"{len(self._received)} of {count} messages after {timeout_s:g}s"
                    )
                self._cond.wait(left_s)
            return [r.message for r in self._received]

    def clear(self) -> None:
        """Forget received messages (the failure counter is kept)."""
        with self._cond:
            self._received.clear()

    # --- SMTP callbacks (server thread) ---

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        expected = self.credentials.get(login)
        ok = expected is not None and expected == data.password.decode("utf-8", "replace")
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _count_drop(self) -> None:
        with self._cond:
            self._dropped += 1

    def _should_fail(self) -> bool:
        with self._cond:
            self._transactions += 1
            if self._failed < self.fail_first_n:
                self._failed += 1
                return True
            return False

    def _failure_reply(self) -> str:
        klass = self.fail_code // 100
        return f"{self.fail_code} {klass}.3.0 Requested action aborted (test failure)"

    def _rcpt_reply(self, address: str) -> str | None:
        if address.lower() in self.reject_recipients:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.fail_stage == "rcpt" and self._should_fail():
            return self._failure_reply()
        return None

    def _data_reply(self, session: Session, envelope: Envelope) -> str:
        if self.fail_stage == "data" and self._should_fail():
            return self._failure_reply()
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # pragma: no cover - decode_data is off
            raw = raw.encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message,
            raw=raw,
            tls=session.ssl is not None,
            login=login,
            peer=":".join(str(p) for p in session.peer) if session.peer else "",
        )
        setattr(session, _ACCEPTED, getattr(session, _ACCEPTED, 0) + 1)
        with self._cond:
            self._received.append(mail)
            self._cond.notify_all()
        self._on_message(mail)
        return "250 2.0.0 OK: queued"

    def _on_message(self, mail: ReceivedMail) -> None:
        """Hook for the command-line demo."""


class _PrintingSMTPServer(RecordingSMTPServer):
    def _on_message(self, mail: ReceivedMail) -> None:
        msg = mail.message
        line = {
            "to": list(mail.rcpt_tos),
            "subject": msg["Subject"],
            "message_id": msg["Message-ID"],
            "event_id": msg["X-Streams-Event-Id"],
            "language": msg["Content-Language"],
            "bytes": len(mail.raw),
        }
        print(json.dumps(line, ensure_ascii=False), flush=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m streams.testing.smtp [--host H] [--port P] [--fail-first-n N]``."""
    parser = argparse.ArgumentParser(description="A recording SMTP server for the demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--fail-first-n", type=int, default=0)
    parser.add_argument("--fail-code", type=int, default=451)
    args = parser.parse_args(argv)
    server = _PrintingSMTPServer(
        args.host, args.port, fail_first_n=args.fail_first_n, fail_code=args.fail_code
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"recording SMTP server on {server.host}:{server.port}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
