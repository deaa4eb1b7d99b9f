"""The webhook receiver's HTTP face: our h11 server in front of the worker.

It translates `HttpRequest` to `WebhookRequest` and `WebhookReply` to
`HttpResponse`, nothing more. Bodies over the limit are refused by the
server before they are read (413); they never reach the worker, so this
adapter counts them itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import h11

from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer
from bridge.core.webhooks import Outcome, WebhookReply, WebhookRequest

WebhookHandler = Callable[[WebhookRequest], Awaitable[WebhookReply]]
OutcomeCounter = Callable[[Outcome], None]


def to_response(reply: WebhookReply) -> HttpResponse:
    """The HTTP response for a worker's reply (JSON body, Retry-After, Allow)."""
    headers: list[tuple[str, str]] = []
    if reply.retry_after is not None:
        headers.append(("retry-after", str(reply.retry_after)))
    if reply.allow is not None:
        headers.append(("allow", reply.allow))
    return HttpResponse.json(reply.status, reply.body(), tuple(headers))


class WebhookHttpServer(HttpServer):
    """An `HttpServer` that hands webhook requests to the receiver.

    Args:
        handle: The receiver's ``handle``.
        count: Counts answers the server gives on its own (413, and 400 for
            requests that are not valid HTTP).
        host: Address to bind.
        port: Port to bind (0: any free port).
        max_body_bytes: Larger bodies are refused with 413 before being read.
    """

    def __init__(
        self,
        handle: WebhookHandler,
        count: OutcomeCounter,
        host: str,
        port: int,
        *,
        max_body_bytes: int,
    ) -> None:
        async def serve(request: HttpRequest) -> HttpResponse:
            reply = await handle(
                WebhookRequest(
                    method=request.method,
                    path=request.path,
                    headers=request.headers,
                    body=request.body,
                    peer=request.client_host,
                )
            )
            return to_response(reply)

        super().__init__(serve, host, port, max_body_bytes=max_body_bytes)
        self._count = count

    async def _reply_and_linger(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: HttpResponse,
    ) -> None:
        # The server's own early answers never reach the worker: count them.
        if response.status == 413:
            self._count("too_large")
        elif response.status == 400:
            self._count("malformed")
        await super()._reply_and_linger(conn, reader, writer, response)
