"""HS256 JSON Web Tokens with the standard library only (RFC 7519 subset)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

import orjson

# The exact header of the docs' sample session token.
_HEADER = {"alg": "HS256", "typ": "JWT"}


class JwtError(ValueError):
    """The token is malformed, wrongly signed or expired."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwtError("bad base64") from exc


def _sign(signing_input: bytes, key: bytes) -> str:
    return _b64encode(hmac.new(key, signing_input, hashlib.sha256).digest())


def encode(payload: dict[str, Any], key: bytes) -> str:
    """Sign ``payload`` as a compact HS256 JWT."""
    # Compact separators match what jsonwebtoken (Node) emits, like Sendstack.
    head = _b64encode(orjson.dumps(_HEADER))
    body = _b64encode(orjson.dumps(payload))
    signing_input = f"{head}.{body}".encode("ascii")
    return f"{head}.{body}.{_sign(signing_input, key)}"


def decode(
    token: str, key: bytes, *, verify_exp: bool = True, now: float | None = None
) -> dict[str, Any]:
    """Verify the signature (and ``exp``) and return the payload."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("not a compact JWT")
    head, body, signature = parts
    try:
        header = orjson.loads(_b64decode(head))
        payload = orjson.loads(_b64decode(body))
    except orjson.JSONDecodeError as exc:
        raise JwtError("bad JSON in token") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JwtError("unsupported algorithm")
    expected = _sign(f"{head}.{body}".encode("ascii"), key)
    if not hmac.compare_digest(expected, signature):
        raise JwtError("bad signature")
    if not isinstance(payload, dict):
        raise JwtError("payload is not an object")
    if verify_exp:
        exp = payload.get("exp")
        if not isinstance(exp, int | float):
            raise JwtError("no exp claim")
        if (time.time() if now is None else now) >= exp:
            raise JwtError("token expired")
    return payload
