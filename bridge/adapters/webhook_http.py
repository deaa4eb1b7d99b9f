"""The webhook receiver's HTTP face: our h11 server in front of the worker.

It translates `HttpRequest` to `WebhookRequest` and `WebhookReply` to
`HttpResponse`, nothing more. Bodies over the limit are refused by the
server before they are read (413), and requests that are not valid HTTP
(400, 431 for oversize headers) never parse; neither reaches the worker, so
this adapter counts them itself through the server's ``on_early_reply`` hook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer
from bridge.core.webhooks import WebhookOutcome, WebhookReply, WebhookRequest

WebhookHandler = Callable[[WebhookRequest], Awaitable[WebhookReply]]
OutcomeCounter = Callable[[WebhookOutcome], None]

# The server's own answers that are counted. 408 (a client too slow to send a
# request) and 503 (over the connection cap, or stopping) are not requests we
# judged, and "unavailable" means Kafka trouble to whoever reads the metric.
_EARLY_OUTCOMES: Final[dict[int, WebhookOutcome]] = {
    400: "malformed",
    413: "too_large",
    431: "malformed",
}


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
        count: Counts answers the server gives on its own (413, and
            ``malformed`` for requests that are not valid HTTP: 400, 431).
        host: Address to bind.
        port: Port to bind (0: any free port).
        max_body_bytes: Larger bodies are refused with 413 before being read.
        request_timeout: Seconds for a request to arrive (see `HttpServer`).
    """

    def __init__(
        self,
        handle: WebhookHandler,
        count: OutcomeCounter,
        host: str,
        port: int,
        *,
        max_body_bytes: int,
        request_timeout: float = 30.0,
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

        def early(response: HttpResponse) -> None:
            outcome = _EARLY_OUTCOMES.get(response.status)
            if outcome is not None:
                count(outcome)

        super().__init__(
            serve,
            host,
            port,
            max_body_bytes=max_body_bytes,
            request_timeout=request_timeout,
            on_early_reply=early,
        )
