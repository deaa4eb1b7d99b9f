"""Sends ``RestRequest``s to Sendstack's REST API with httpx (``RestGateway``).

Every call carries the §2 headers (``app_id``, ``app_secret`` and, unless
disabled, ``x-sendstack-source: control.sendstack``), ``Idempotency-Key``
(the command id; Sendstack documents no such header, so nothing relies on it)
and, with a body, ``Content-Type: application/json``.

Replies of any status are returned as they are; judging them is
``bridge.core.commands.classify``'s job. Transport failures become
``RestUnavailable`` with ``ambiguous`` telling whether the request may have
reached Sendstack:

=====================================  =========  ==============================
httpx error                            ambiguous  why
=====================================  =========  ==============================
ConnectError, ConnectTimeout,          False      nothing was sent
PoolTimeout, UnsupportedProtocol,
LocalProtocolError, ProxyError
ReadTimeout, WriteTimeout, ReadError,  True       (part of) the request was sent;
WriteError, CloseError,                           the server may have acted on it
RemoteProtocolError (the server
dropped the connection without a
reply), DecodingError, and any other
=====================================  =========  ==============================

A write failure can only be "not executed" if the request was incomplete, which
the client cannot know, so it counts as ambiguous. Messages name the method
and path, never a header value.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import orjson

from bridge.adapters.auth_api import credential_headers
from bridge.core.commands import RestRequest
from bridge.errors import RestUnavailable
from bridge.secrets import Secret

__all__ = ["IDEMPOTENCY_HEADER", "SendstackRest"]

IDEMPOTENCY_HEADER = "Idempotency-Key"

# Failures before any byte of the request left the client.
_NOT_SENT: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


class SendstackRest:
    """``RestGateway`` over an ``httpx.AsyncClient`` (transport injectable).

    Args:
        client: The client; its timeouts apply unless ``execute`` is given
            one. The caller owns (and closes) it.
        base_url: Up to and including ``/api/v1``.
        app_id: The app id.
        app_secret: The app secret; revealed only into the request headers.
        send_source: Send ``x-sendstack-source`` (api doc §2, §17.3).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        app_id: str,
        app_secret: Secret,
        send_source: bool = True,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        # Checked now so that a bad base URL fails at start, not per call.
        httpx.URL(self._base)
        self._headers = {
            **credential_headers(
                app_id, app_secret, style="snake", send_source=send_source
            ),
            "accept": "application/json",
        }

    async def execute(
        self, request: RestRequest, *, timeout_seconds: float | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one request and return ``(status, body, headers)``.

        Args:
            request: What to send.
            timeout_seconds: httpx timeout of each phase (connect, write,
                read, pool) of this call, instead of the client's; e.g.
                capped by the command's deadline.

        Returns:
            The HTTP status, the body bytes and the headers (a
            case-insensitive mapping), whatever the status.

        Raises:
            RestUnavailable: On a transport failure; see the module docstring
                for ``ambiguous``.
        """
        headers = dict(self._headers)
        headers[IDEMPOTENCY_HEADER] = request.idempotency_key
        content = None
        if request.body is not None:
            content = orjson.dumps(request.body)
            headers["content-type"] = "application/json"
        what = f"{request.method} {request.path}"
        try:
            response = await self._client.request(
                request.method,
                self._base + request.path,
                params=list(request.query) or None,
                content=content,
                headers=headers,
                timeout=(
                    httpx.USE_CLIENT_DEFAULT
                    if timeout_seconds is None
                    else timeout_seconds
                ),
            )
        except _NOT_SENT as exc:
            raise RestUnavailable(
                f"{what} not sent: {type(exc).__name__}", ambiguous=False
            ) from exc
        except httpx.HTTPError as exc:
            # str(exc) may quote the URL, which holds ids but never a secret;
            # the type name is enough and cannot leak a header.
            raise RestUnavailable(
                f"{what} failed, it may have taken effect: {type(exc).__name__}",
                ambiguous=True,
            ) from exc
        return response.status_code, response.content, response.headers
