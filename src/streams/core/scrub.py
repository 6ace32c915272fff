"""The scrubber: what an error message may not carry into a header a console shows.

Failure headers are read by anyone with console access to a DLQ topic, so ``scrub`` turns
free text into one line without credentials or personal data. What it removes, in order:

1. Line structure: every whitespace, line separator (``\\n``, ``\\r``, tab, U+0085,
   U+2028, U+2029, ...), control and invisible format character becomes one space.
2. URL userinfo: ``scheme://user:pass@host`` -> ``scheme://<redacted>@host``.
3. Credential values by their key: ``password=..``, ``db_password: ..``,
   ``{"client_secret": ".."}``, ``access_token=..``, ``pwd=..``, ``X-Api-Key: ..``,
   ``Authorization: Bearer ..`` (the key stays, the whole value goes, quoted values
   included).
4. Authorization schemes without a key: ``Bearer <token>``, ``Basic <token>``.
5. JSON Web Tokens (``eyJ..``.``..``.``..``) -> ``<jwt>``.
6. Provider keys by their known prefixes (``sk_live_``, ``AKIA``, ``ghp_``, ``xoxb-``,
   ``AIza``, ``glpat-``, ``SG.``, ...) -> ``<key>``.
7. In URLs, secret-looking path segments and query values (``looks_secret``: Slack-style
   ``/services/T../B../<token>``, signed-URL signatures) -> ``<redacted>``.
8. E-mail addresses (any local part, also ``o'brien@..`` and ``alice@localhost``) ->
   ``<email>``.
9. Card numbers: 13-19 digits, with or without spaces or dashes between groups, first
   digit 2-6, passing the Luhn check -> ``<card>``.

Pure standard library; over-redaction is preferred to a leak.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

MAX_INPUT_CHARS = 16_384  # longer input is cut (at a space) before scrubbing

REDACTED = "<redacted>"

# --- 1. whitespace, separators, control and format characters ----------------------------

_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cs", "Cn"})
_SPACES = re.compile(r"\s+")


def _one_line(text: str) -> str:
    chars = [
        " " if ch.isspace() or unicodedata.category(ch) in _INVISIBLE_CATEGORIES else ch
        for ch in text
    ]
    return _SPACES.sub(" ", "".join(chars)).strip()


# --- 2. URL userinfo ---------------------------------------------------------------------

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")

# --- 3. credential values by key -----------------------------------------------------------

# A key contains one of these anywhere (case-insensitive, separators ignored) ...
_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "authorization",
    "cookie",
    "signature",
    "sessionid",
    "bearer",
)
# ... or is exactly / ends or starts with one of these as a separate segment.
_SECRET_SEGMENTS = frozenset({"pwd", "pass", "pw", "auth", "sig", "key", "sid", "session"})
_KEY_SPLIT = re.compile(r"[_.\-\s]+|(?<=[a-z0-9])(?=[A-Z])")

_QUOTED = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_SCHEME_WORD = r"(?:bearer|basic|digest|token|negotiate|ntlm)\s+"
_KEY = re.compile(
    r"""(?ix)
    (?<![\w.\-])
    (?P<q>["']?)(?P<key>[a-z_][\w.\-]{0,63})(?P=q)   # key, maybe quoted
    \s*[:=]\s*
    """
)
_VALUE = re.compile(rf"(?i)(?:{_SCHEME_WORD})?(?:{_QUOTED}|\S+)")

# --- 4. authorization schemes without a key -----------------------------------------------

_AUTH_SCHEMES = r"bearer|basic|digest|negotiate|ntlm"
# The credential is the first word after the scheme that is not itself a scheme word
# ("BEARER Bearer <token>": the token is what follows the second one).
_AUTH_SCHEME = re.compile(rf"(?i)\b({_AUTH_SCHEMES})\s+(?!<)(?!(?:{_AUTH_SCHEMES})\b)[^\s\"',;]+")

# --- 5. JSON Web Tokens --------------------------------------------------------------------

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")

# --- 6. provider keys by prefix ------------------------------------------------------------

_PROVIDER_KEY = re.compile(
    r"""(?x)
    (?<![A-Za-z0-9])
    (?:
        (?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}     # Stripe
      | whsec_[A-Za-z0-9]{8,}                          # Stripe webhook secret
      | (?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}  # AWS access key ids
      | gh[pousr]_[A-Za-z0-9]{20,}                     # GitHub tokens
      | github_pat_[A-Za-z0-9_]{20,}
      | glpat-[A-Za-z0-9_-]{16,}                       # GitLab
      | xox[abposr]-[A-Za-z0-9-]{8,}                   # Slack
      | AIza[0-9A-Za-z_-]{30,}                         # Google API key
      | ya29\.[0-9A-Za-z_-]{16,}                       # Google OAuth token
      | SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}     # SendGrid
      | sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}           # OpenAI / Anthropic
      | (?:npm|hf|pypi|shpat|shpss|dop_v1)_[A-Za-z0-9_-]{16,}
      | pypi-[A-Za-z0-9_-]{16,}
      | sq0(?:atp|csp)-[A-Za-z0-9_-]{16,}              # Square
      | key-[0-9a-f]{32}                               # Mailgun
    )
    """
)

# --- 7. secret-looking parts of URLs --------------------------------------------------------

_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+")
_URL_PARTS = re.compile(r"[/?&=#;]")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_~+%.\-]+$")

# --- 8. e-mail addresses ------------------------------------------------------------------

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")

# --- 9. card numbers ----------------------------------------------------------------------

_DIGIT_GROUPS = re.compile(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*(?![0-9])")
_GROUP = re.compile(r"[0-9]+")
_CARD_FIRST_DIGITS = frozenset("23456")
MIN_CARD_DIGITS = 13
MAX_CARD_DIGITS = 19


def scrub(message: str) -> str:
    """``message`` as one line without credentials, tokens, card numbers or addresses.

    See the module docstring for what is removed. Never raises; safe to apply twice.
    """
    text = message if len(message) <= MAX_INPUT_CHARS else _cut(message)
    text = _one_line(text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _redact_key_values(text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT.sub("<jwt>", text)
    text = _PROVIDER_KEY.sub("<key>", text)
    text = _URL.sub(_redact_url_parts, text)
    text = _EMAIL.sub("<email>", text)
    return _DIGIT_GROUPS.sub(_redact_cards, text)


def _cut(message: str) -> str:
    """The head of a long message, ending at a space so no token is left half-shown."""
    head = message[:MAX_INPUT_CHARS]
    space = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
    return (head[:space] if space > 0 else "") + " ..."


def is_secret_key(key: str) -> bool:
    """Whether a key name (``db_password``, ``clientSecret``, ``X-Api-Key``) names a secret."""
    segments = [s.lower() for s in _KEY_SPLIT.split(key) if s]
    squashed = "".join(segments)
    if any(word in squashed for word in _SECRET_WORDS):
        return True
    return any(segment in _SECRET_SEGMENTS for segment in segments)


def _redact_key_values(text: str) -> str:
    """Replace the value after every secret-looking ``key=`` / ``key:`` with REDACTED."""
    out: list[str] = []
    position = 0
    while (key := _KEY.search(text, position)) is not None:
        value = _VALUE.match(text, key.end())
        out.append(text[position : key.end()])
        position = key.end()
        if value is not None and is_secret_key(key.group("key")):
            out.append(REDACTED)
            position = value.end()
    out.append(text[position:])
    return "".join(out)


def looks_secret(part: str) -> bool:
    """A URL path segment or query value that looks like a token.

    16+ characters mixing digits and letters or upper and lower case, 20+ letters and digits
    without a separator, or anything of 32+ characters.
    """
    if len(part) < 16 or not _TOKEN_CHARS.match(part):
        return False
    has_digit = any(ch.isdigit() for ch in part)
    has_alpha = any(ch.isalpha() for ch in part)
    has_upper = any(ch.isupper() for ch in part)
    has_lower = any(ch.islower() for ch in part)
    unbroken = len(part) >= 20 and part.isascii() and part.isalnum()  # no word separators
    return (has_digit and has_alpha) or (has_upper and has_lower) or unbroken or len(part) >= 32


def _redact_url_parts(match: re.Match[str]) -> str:
    url = match.group(0)
    scheme, _, rest = url.partition("://")
    authority_end = next((i for i, ch in enumerate(rest) if ch in "/?#"), len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    pieces = _URL_PARTS.split(tail)
    delims = _URL_PARTS.findall(tail)
    out = [REDACTED if looks_secret(piece) else piece for piece in pieces]
    rebuilt = out[0] + "".join(d + p for d, p in zip(delims, out[1:], strict=True))
    return f"{scheme}://{authority}{rebuilt}"


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string."""
    total = 0
    for index, ch in enumerate(reversed(digits)):
        value = int(ch)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_windows(groups: list[str]) -> Iterator[tuple[int, int]]:
    """(first, last) group indexes of runs of whole groups that form a card number."""
    for first in range(len(groups)):
        if groups[first][0] not in _CARD_FIRST_DIGITS:
            continue
        digits = ""
        for last in range(first, len(groups)):
            digits += groups[last]
            if len(digits) > MAX_CARD_DIGITS:
                break
            if len(digits) >= MIN_CARD_DIGITS and luhn_valid(digits):
                yield first, last


def _redact_cards(match: re.Match[str]) -> str:
    run = match.group(0)
    spans = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    groups = [run[start:end] for start, end in spans]
    covered = [False] * len(groups)
    for first, last in _card_windows(groups):
        for index in range(first, last + 1):
            covered[index] = True
    if not any(covered):
        return run
    out: list[str] = []
    position = 0
    index = 0
    while index < len(groups):
        if not covered[index]:
            index += 1
            continue
        end = index
        while end + 1 < len(groups) and covered[end + 1]:
            end += 1
        out.append(run[position : spans[index][0]])
        out.append("<card>")
        position = spans[end][1]
        index = end + 1
    out.append(run[position:])
    return "".join(out)
