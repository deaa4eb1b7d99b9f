"""Obtains sessions from ``POST {base}/auth/session`` with httpx.

Credentials go in headers; the session page spells them ``appId``/``appSecret``
while every other page says ``app_id``/``app_secret`` (api doc §6, §17), so the
style is configurable and ``both`` sends both. Failures become ``bridge.errors``
types; no message ever carries the token or the secret.
"""

from __future__ import annotations

from datetime import datetime

import httpx
import orjson

from bridge.config import HeaderStyle
from bridge.errors import (
    AuthLockedOut,
    SessionRejected,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from bridge.ports import SessionGrant
from bridge.secrets import Secret


def credential_headers(
    app_id: str, app_secret: Secret, *, style: HeaderStyle, send_source: bool
) -> dict[str, str]:
    """The credential headers Sendstack expects (api doc §2, §6)."""
    headers: dict[str, str] = {}
    if style in ("both", "snake"):
        headers["app_id"] = app_id
        headers["app_secret"] = app_secret.reveal()
    if style in ("both", "camel"):
        headers["appId"] = app_id
        headers["appSecret"] = app_secret.reveal()
    if send_source:
        headers["x-sendstack-source"] = "control.sendstack"
    return headers


def parse_expires_at(value: object) -> float:
    """Parse ``expiresAt`` (ISO-8601, e.g. ``2025-06-14T19:05:41.207Z``) to epoch s."""
    if not isinstance(value, str):
        raise UpstreamProtocolError("session reply has no expiresAt string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UpstreamProtocolError(
            "session reply has an unreadable expiresAt"
        ) from exc
    if parsed.tzinfo is None:
        raise UpstreamProtocolError("session reply expiresAt has no timezone")
    return parsed.timestamp()


class HttpSessionSource:
    """``SessionSource`` over an ``httpx.AsyncClient`` (transport injectable)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        app_id: str,
        app_secret: Secret,
        header_style: HeaderStyle = "both",
        send_source: bool = True,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/auth/session"
        self._headers = credential_headers(
            app_id, app_secret, style=header_style, send_source=send_source
        )

    async def obtain(self) -> SessionGrant:
        try:
            response = await self._client.post(self._url, headers=self._headers)
        except httpx.HTTPError as exc:
            # str(exc) of httpx errors names the URL, which holds no secret here.
            raise UpstreamUnavailable(
                f"session request failed: {type(exc).__name__}"
            ) from exc
        status = response.status_code
        if status in (401, 403):
            raise SessionRejected(f"session request refused with HTTP {status}")
        if status == 429:
            raise AuthLockedOut(
                "session endpoint locked out (HTTP 429)",
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        if status >= 500:
            raise UpstreamUnavailable(f"session endpoint answered HTTP {status}")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(
                f"session reply (HTTP {status}) is not JSON"
            ) from exc
        if (
            status >= 400
            or not isinstance(body, dict)
            or body.get("status") is not True
        ):
            raise UpstreamProtocolError(f"session request failed with HTTP {status}")
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("session"), str):
            raise UpstreamProtocolError("session reply has no data.session")
        return SessionGrant(
            token=Secret(data["session"]),
            expires_at=parse_expires_at(data.get("expiresAt")),
        )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
