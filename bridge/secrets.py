"""Secret values and the redaction of text that might contain one.

Theory of operation: a credential enters the bridge once, as a `Secret`, and
stays wrapped until the one adapter that sends it calls `Secret.reveal()`.
Everything that turns a value into text (``repr``, ``str``, f-strings,
``logging``'s ``%s``) sees ``***`` instead. ``bool(secret)`` raises, so that
``if secret:`` cannot quietly tell a log line whether a credential is empty.

Wrapping is not enough on its own, because some secrets are minted at run
time as plain strings. The Sendstack session token is an HS256 JWT whose
payload carries the app id *and the app secret* in clear (base64), and it
travels in the websocket URL's query string (``?session=<JWT>``; see
``docs/wire-format.md`` and ``sendstack-api.md`` §6). Libraries happily put
that URL into exception messages and DEBUG logs. The functions below are the
last line of defence and are applied by `bridge.logs` to every log line:

* `scrub` masks anything shaped like a JWT or a base64-encoded JSON object
  (``eyJ...``), with or without the other two segments;
* `redact_url` masks the value of ``session=`` (and any other key given) in
  a URL or in free text that contains one;
* `redact_text` masks literal occurrences of known secret values.

All three are pure, never raise on odd input, and leave text without a match
unchanged (and cheaply so: each checks for a marker substring first).
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Iterable
from typing import NoReturn

__all__ = ["MASK", "Secret", "TextRedactor", "redact_text", "redact_url", "scrub"]

MASK = "***"
"""What every redacted value is replaced with."""

# A JWT segment and the payload itself both start with ``eyJ`` (base64 of
# ``{"``). Mask the whole blob plus up to two more dotted segments, so that a
# token cut short (a truncated repr, a header.payload pair without signature)
# is masked too. Eight characters after ``eyJ`` keep ordinary words safe.
_JWT_LIKE = re.compile(
    r"eyJ[A-Za-z0-9_\-+/]{8,}=*(?:\.[A-Za-z0-9_\-+/]+=*){0,2}",
    re.ASCII,
)

# Where a query value ends: the next parameter, the fragment, whitespace, or
# the closing quote/bracket of whatever text the URL is embedded in.
_QUERY_VALUE = r"[^\s&#;'\"<>,)\]}]*"

# ``scheme://user:password@``: the password part, up to the ``@``.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:)[^\s/@]*@")

_DEFAULT_URL_KEYS = ("session",)


class Secret:
    """A string that never shows itself unless asked to with `reveal`.

    ``repr`` is ``Secret('***')``; ``str`` and every format spec give
    ``***``. Two secrets are equal when their values are (compared in
    constant time); a secret never equals a plain string. ``bool()`` raises
    `TypeError` so that a truthiness test cannot leak whether it is empty.

    Args:
        value: the secret text.

    Raises:
        TypeError: if *value* is not a `str`.
    """

    __slots__ = ("_value",)

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the wrapped value; call this only where it is sent."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> NoReturn:
        raise TypeError(
            "the truth value of a Secret is not defined; "
            "test len(secret.reveal()) explicitly"
        )

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self  # immutable, so copies may share the value

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self  # keeps dataclasses.asdict() and copy.deepcopy() working

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value in clear to wherever the pickle goes.
        raise TypeError("a Secret cannot be pickled")


def scrub(text: str) -> str:
    """Mask everything in *text* that looks like a JWT or its payload.

    Args:
        text: any text, for example a log message or an exception message.

    Returns:
        *text* with each ``eyJ...`` blob (and its dotted segments) replaced
        by ``***``.
    """
    if "eyJ" not in text:
        return text
    return _JWT_LIKE.sub(MASK, text)


def redact_url(url: str, keys: Iterable[str] = _DEFAULT_URL_KEYS) -> str:
    """Mask query values that carry credentials, and any URL password.

    Works on a bare URL and on free text that contains URLs. ``session`` is
    always masked; *keys* adds more query keys (for example a configured
    ``BRIDGE_STREAM_SESSION_QUERY_KEY``). Keys match case-insensitively,
    also when URL-encoded as ``key%3D``.

    Args:
        url: a URL, or text containing one.
        keys: extra query keys whose values to mask.

    Returns:
        The text with ``key=value`` turned into ``key=***`` and
        ``scheme://user:password@`` into ``scheme://user:***@``.
    """
    names = {"session", *(key for key in keys if key)}
    lowered = url.lower()
    if "://" in url:
        url = _USERINFO.sub(rf"\g<1>{MASK}@", url)
    for name in sorted(names):
        if name.lower() not in lowered:
            continue
        url = _query_pattern(name).sub(rf"\g<1>{MASK}", url)
    return url


@functools.lru_cache(maxsize=64)
def _query_pattern(name: str) -> re.Pattern[str]:
    """Return the compiled pattern that finds ``name=value`` for *name*."""
    return re.compile(
        # Preceded by a non-word character, or by an encoded "?" or "&" when
        # the URL sits percent-encoded inside another one.
        r"((?:(?<![A-Za-z0-9_])|(?<=%3F)|(?<=%26))"
        + re.escape(name)
        + r"(?:=|%3D))"
        + _QUERY_VALUE,
        re.IGNORECASE,
    )


def redact_text(text: str, secrets: Iterable[str | Secret]) -> str:
    """Replace every occurrence of each secret value in *text* with ``***``.

    Args:
        text: the text to clean.
        secrets: the values to mask, plain or wrapped; empty values are
            skipped.

    Returns:
        *text* with the secrets masked, longest first (so that a secret that
        contains another one is masked whole).
    """
    values = {s.reveal() if isinstance(s, Secret) else s for s in secrets}
    for value in sorted(values, key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, MASK)
    return text


class TextRedactor:
    """Masks JWT-shaped text, credential query values and known secrets.

    The one text redaction of the bridge: log lines (``bridge.logs``) and
    capture files (``bridge.core.capture``) both go through it. A string
    without any marker (``eyJ``, ``=``, ``%3``, ``@``) and without a known
    secret is returned as is, so the common case costs a few substring checks.

    Args:
        secrets: literal values to mask wherever they appear.
        query_keys: URL query keys to mask besides ``session``.
    """

    __slots__ = ("_keys", "_secrets")

    def __init__(
        self, secrets: Iterable[str | Secret] = (), query_keys: Iterable[str] = ()
    ) -> None:
        revealed = (s.reveal() if isinstance(s, Secret) else s for s in secrets)
        self._secrets = tuple(value for value in revealed if value)
        self._keys = ("session", *(key for key in query_keys if key))

    def add(self, secret: str | Secret) -> None:
        """Mask this value too from now on (e.g. a session obtained later)."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            self._secrets = (*self._secrets, value)

    def text(self, text: str) -> str:
        """Return *text* with every secret-looking part masked."""
        if "eyJ" in text:
            text = scrub(text)
        if "=" in text or "%3" in text or "@" in text:
            text = redact_url(text, self._keys)
        if self._secrets:
            text = redact_text(text, self._secrets)
        return text
