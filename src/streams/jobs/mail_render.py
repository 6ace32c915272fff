"""Rendering an ``email.requested`` event into a MIME message (pure: no I/O but template files).

Templates live in ``templates/email/<locale>/`` (see the README there): a subject, a
plain-text body and an HTML body per template, wrapped by a per-locale layout that carries
the unsubscribe link, so every email has one in both parts. Placeholders are
``string.Template`` ones (``${name}``); substitution is a single pass, so a ``$`` inside a
value is never expanded again.

Sanitising, each failure a ``Permanent("field: reason")`` that never echoes the value
(addresses are PII):

- ``to`` must be one bare ASCII address (``name@example.com``), no display name, no list;
- every value is HTML-escaped in the HTML part; values named ``*_url`` must be absolute
  http(s) URLs (no ``javascript:`` link); no value may hold control characters;
- values used in the subject may not hold line breaks of any kind (header injection);
- the locale must be a well-formed language tag; a supported language (``fr-CA`` -> ``fr``)
  is used, any other well-formed one (``de``) falls back to English.

The ``Message-ID`` is ``<{event_id}@{email_message_id_domain}>`` (the id hashed when it is
not a dot-atom), so a redelivered event carries the same id and the receiver can drop it.
"""

from __future__ import annotations

import email.policy
import hashlib
import hmac
import html
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr
from functools import cache, lru_cache
from importlib.resources import files
from string import Template
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from streams.errors import ConfigError, Permanent
from streams.jobs import signing
from streams.jobs.mail_settings import EmailSettings

LOCALES: tuple[str, ...] = ("en", "fr")
DEFAULT_LOCALE = "en"
TEMPLATES: tuple[str, ...] = ("welcome", "password_reset", "receipt", "notification")
RESERVED_VARIABLES = frozenset({"unsubscribe_url", "subject", "body"})
MAX_VARIABLE_CHARS = 10_000
MAX_HEADER_LINE_CHARS = 998  # RFC 5322 2.1.1, without the CRLF

_LOCALE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_DOT_ATOM = _LOCAL_PART
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# everything str.splitlines() splits on: a header built from any of these could be folded
# into a new header line by the email package.
_LINE_BREAK = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_WHITESPACE = re.compile(r"\s")


class _UnfoldedHeader(UnstructuredHeader, BaseHeader):
    """A header written on one line: folding a long URL would RFC 2047-encode it."""

    def fold(self, *, policy: email.policy.Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def _mail_policy() -> email.policy.EmailPolicy[EmailMessage]:
    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", _UnfoldedHeader)
    return email.policy.SMTP.clone(header_factory=registry)


MAIL_POLICY = _mail_policy()
"""``email.policy.SMTP`` (CRLF, 78-column folding) except ``List-Unsubscribe``: one line."""


def to_wire_bytes(msg: EmailMessage) -> bytes:
    """The message as sent over SMTP: CRLF line ends, 7-bit clean."""
    return msg.as_bytes(policy=MAIL_POLICY)


# --- unsubscribe ------------------------------------------------------------------------


def _secret_bytes(secret: str | SecretStr) -> bytes:
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return raw.encode("utf-8")


def unsubscribe_token(secret: str | SecretStr, user_id: str) -> str:
    """HMAC-SHA256 of ``user_id`` under ``secret`` with the unsubscribe purpose label (never
    valid as a webhook signature), as 64 lowercase hex characters."""
    return signing.purpose_hmac(
        _secret_bytes(secret), signing.UNSUBSCRIBE_PURPOSE, user_id.encode("utf-8")
    )


def verify_unsubscribe_token(secret: str | SecretStr, user_id: str, token: str) -> bool:
    """Whether ``token`` is the unsubscribe token of ``user_id`` (constant-time compare)."""
    if not isinstance(token, str) or not isinstance(user_id, str):
        return False
    expected = unsubscribe_token(secret, user_id)
    return hmac.compare_digest(expected.encode("ascii"), token.encode("utf-8"))


def unsubscribe_url(base_url: str, secret: str | SecretStr, user_id: str) -> str:
    """``<base_url>?u=<user_id>&t=<token>`` (query parameters of ``base_url`` are kept)."""
    parts = urlsplit(base_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("u", user_id), ("t", unsubscribe_token(secret, user_id))]
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- field checks -----------------------------------------------------------------------


def check_address(to: Any) -> str:
    """``to`` as one bare address; raises Permanent("to: reason") otherwise."""
    if not isinstance(to, str) or not to.strip():
        raise Permanent("to: required, one e-mail address")
    if _CONTROL.search(to) or _LINE_BREAK.search(to):
        raise Permanent("to: must not contain control characters or line breaks")
    if not to.isascii():
        raise Permanent("to: non-ASCII addresses are not supported")
    if len(getaddresses([to])) != 1 or parseaddr(to) != ("", to):
        raise Permanent("to: must be a single bare address like name@example.com")
    local, _, domain = to.rpartition("@")
    if (
        len(to) > 254
        or len(local) > 64
        or not _LOCAL_PART.match(local)
        or not _DOMAIN.match(domain)
    ):
        raise Permanent("to: must be a single bare address like name@example.com")
    return to


def resolve_locale(locale: Any) -> str:
    """The template locale for a language tag; raises Permanent("locale: ...") if malformed."""
    if not isinstance(locale, str) or not _LOCALE_TAG.match(locale):
        raise Permanent("locale: must be a language tag like 'en', 'fr' or 'fr-CA'")
    language = re.split(r"[-_]", locale, maxsplit=1)[0].lower()
    return language if language in LOCALES else DEFAULT_LOCALE


def _check_url(name: str, value: str) -> None:
    if _WHITESPACE.search(value) or _CONTROL.search(value):
        raise Permanent(f"variables.{name}: a URL must not contain whitespace")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise Permanent(f"variables.{name}: is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise Permanent(f"variables.{name}: must be an absolute http:// or https:// URL")


def _check_variable(name: str, value: Any, in_subject: bool) -> str:
    if not isinstance(value, str):
        raise Permanent(f"variables.{name}: must be a string")
    if len(value) > MAX_VARIABLE_CHARS:
        raise Permanent(f"variables.{name}: longer than {MAX_VARIABLE_CHARS} characters")
    if _CONTROL.search(value):
        raise Permanent(f"variables.{name}: must not contain control characters")
    if in_subject and _LINE_BREAK.search(value):
        raise Permanent(f"variables.{name}: is used in the subject, must not contain line breaks")
    if name.endswith("_url"):
        _check_url(name, value)
    return value.replace("\r\n", "\n").replace("\r", "\n")


def message_id(event_id: str, domain: str) -> str:
    """``<{event_id}@{domain}>``; an id that is not a dot-atom is replaced by its SHA-256."""
    left = event_id
    if not _DOT_ATOM.match(left) or len(left) > 128:
        left = "sha256." + hashlib.sha256(event_id.encode("utf-8")).hexdigest()
    return f"<{left}@{domain}>"


# --- templates --------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailTemplate:
    """One template in one locale, its body already placed inside the layout."""

    name: str
    locale: str
    subject: Template
    text: Template
    html: Template

    @property
    def subject_variables(self) -> frozenset[str]:
        return frozenset(self.subject.get_identifiers())

    @property
    def variables(self) -> frozenset[str]:
        """The event variables it needs (reserved names excluded)."""
        names = {*self.subject.get_identifiers(), *self.text.get_identifiers()}
        names.update(self.html.get_identifiers())
        return frozenset(names - RESERVED_VARIABLES)


def _read(locale: str, filename: str) -> str:
    path = files("streams.jobs").joinpath("templates", "email", locale, filename)
    return path.read_text(encoding="utf-8")


def _template(source: str, where: str) -> Template:
    template = Template(source)
    if not template.is_valid():
        raise ConfigError(f"{where}: invalid placeholder (use ${{name}}, and $$ for a $)")
    return template


def _compose(layout: str, body: str, where: str) -> Template:
    if layout.count("${body}") != 1:
        raise ConfigError(f"{where}: layout must contain ${{body}} exactly once")
    return _template(layout.replace("${body}", body.rstrip("\n")), where)


@cache
def load_template(name: str, locale: str) -> EmailTemplate:
    """The template ``name`` in ``locale``; raises ConfigError if its files are broken."""
    where = f"templates/email/{locale}/{name}"
    subject = _read(locale, f"{name}.subject.txt").strip("\n")
    if "\n" in subject:
        raise ConfigError(f"{where}.subject.txt: must be one line")
    return EmailTemplate(
        name=name,
        locale=locale,
        subject=_template(subject, where + ".subject.txt"),
        text=_compose(_read(locale, "_layout.txt"), _read(locale, f"{name}.txt"), where),
        html=_compose(_read(locale, "_layout.html"), _read(locale, f"{name}.html"), where),
    )


# --- settings-derived values ------------------------------------------------------------


@lru_cache(maxsize=16)
def sender_address(email_from: str) -> Address:
    """``settings.email_from`` as an Address; raises ConfigError naming the setting."""
    name, addr = parseaddr(email_from)
    if _CONTROL.search(email_from) or _LINE_BREAK.search(email_from) or not addr:
        raise ConfigError("STREAMS_EMAIL_FROM: must be an address like 'Name <no-reply@x.org>'")
    try:
        check_address(addr)
    except Permanent:
        raise ConfigError(
            "STREAMS_EMAIL_FROM: must be an address like 'Name <no-reply@x.org>'"
        ) from None
    return Address(display_name=name, addr_spec=addr)


def check_mail_settings(settings: EmailSettings) -> None:
    """Raise ConfigError naming the first invalid email setting."""
    sender_address(settings.email_from)
    if not _HOSTNAME.match(settings.email_message_id_domain):
        raise ConfigError("STREAMS_EMAIL_MESSAGE_ID_DOMAIN: must be a host name like mail.x.org")
    base_url = settings.unsubscribe_base_url
    if not base_url.isascii() or _CONTROL.search(base_url) or _WHITESPACE.search(base_url):
        raise ConfigError("STREAMS_UNSUBSCRIBE_BASE_URL: must be ASCII without whitespace")
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.netloc or base.fragment:
        raise ConfigError("STREAMS_UNSUBSCRIBE_BASE_URL: must be an http(s) URL, no #fragment")
    if settings.unsubscribe_secret is None:
        if not settings.dev_mode:
            raise ConfigError(
                "STREAMS_UNSUBSCRIBE_SECRET: not set; set a random secret, "
                "or STREAMS_DEV_MODE=true for a per-run one"
            )
        settings.unsubscribe_secret = SecretStr(secrets.token_urlsafe(32))
    signing.check_secret(
        "STREAMS_UNSUBSCRIBE_SECRET", settings.unsubscribe_secret.get_secret_value()
    )


# --- rendering --------------------------------------------------------------------------


def _values(template: EmailTemplate, variables: Any) -> dict[str, str]:
    if not isinstance(variables, Mapping):
        raise Permanent("variables: must be a mapping of names to strings")
    reserved = sorted(RESERVED_VARIABLES.intersection(variables))
    if reserved:
        raise Permanent(f"variables.{reserved[0]}: reserved, set by the email job")
    missing = sorted(template.variables.difference(variables))
    if missing:
        raise Permanent(
            "; ".join(
                f"variables.{name}: required by template {template.name!r} ({template.locale})"
                for name in missing
            )
        )
    subject_names = template.subject_variables
    return {
        name: _check_variable(name, variables[name], name in subject_names)
        for name in sorted(template.variables)
    }


def _html_value(value: str) -> str:
    return html.escape(value, quote=True).replace("\n", "<br>\n")


def _date_header(occurred_at_ms: Any) -> str:
    if isinstance(occurred_at_ms, int) and occurred_at_ms > 0:
        moment = datetime.fromtimestamp(occurred_at_ms / 1000, tz=UTC)
    else:
        moment = datetime.now(tz=UTC)
    return format_datetime(moment)


def _check_ids(event: Any, event_id: str) -> str:
    if not isinstance(event_id, str) or not event_id.strip():
        raise Permanent("envelope.event_id: required")
    if _CONTROL.search(event_id) or _LINE_BREAK.search(event_id):
        raise Permanent("envelope.event_id: must not contain control characters")
    user_id = getattr(event, "user_id", None)
    if not isinstance(user_id, str) or not user_id.strip():
        raise Permanent("user_id: required (it keys the unsubscribe link)")
    if _CONTROL.search(user_id) or _LINE_BREAK.search(user_id):
        raise Permanent("user_id: must not contain control characters")
    return user_id


def render_email(event: Any, settings: EmailSettings, event_id: str) -> EmailMessage:
    """The ``multipart/alternative`` message for an ``EmailRequested`` event.

    Raises Permanent("field: reason") for bad input (address, locale, template, missing or
    unsafe variable) and ConfigError for invalid email settings.
    """
    check_mail_settings(settings)
    user_id = _check_ids(event, event_id)
    to = check_address(getattr(event, "to", None))
    locale = resolve_locale(getattr(event, "locale", DEFAULT_LOCALE))
    name = getattr(event, "template", None)
    if name not in TEMPLATES:
        raise Permanent(f"template: unknown; expected one of {', '.join(TEMPLATES)}")
    template = load_template(name, locale)
    values = _values(template, getattr(event, "variables", None))

    subject = " ".join(template.subject.substitute(values).split())
    secret = settings.unsubscribe_secret
    if secret is None:  # check_mail_settings ran first: set, or drawn in dev mode
        raise ConfigError("STREAMS_UNSUBSCRIBE_SECRET: not set")
    link = unsubscribe_url(settings.unsubscribe_base_url, secret, user_id)
    if len(f"List-Unsubscribe: <{link}>") > MAX_HEADER_LINE_CHARS:
        raise Permanent("user_id: too long for the unsubscribe link")
    text = template.text.substitute(values, unsubscribe_url=link, subject=subject)
    html_values = {key: _html_value(value) for key, value in values.items()}
    body_html = template.html.substitute(
        html_values, unsubscribe_url=html.escape(link, quote=True), subject=html.escape(subject)
    )

    envelope = getattr(event, "envelope", None)
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["Subject"] = subject
    msg["From"] = sender_address(settings.email_from)
    msg["To"] = to
    msg["Date"] = _date_header(getattr(envelope, "occurred_at_ms", None))
    msg["Message-ID"] = message_id(event_id, settings.email_message_id_domain)
    msg["X-Streams-Event-Id"] = event_id
    msg["List-Unsubscribe"] = f"<{link}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(body_html, subtype="html", charset="utf-8")
    msg["Content-Language"] = locale  # after set_content, which clears Content-* headers
    return msg
