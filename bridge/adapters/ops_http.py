"""The operations endpoints: ``/livez``, ``/readyz`` and ``/metrics``.

``/livez`` answers 200 while the event loop runs. ``/readyz`` asks a check
supplied by the composition root (for ``stream``: a valid session, an open
socket and a connected producer) and answers 200 or 503 with the reasons.
A check that returns a `Readiness` adds its ``details`` (facts that do not
decide readiness, e.g. the stream's session policy) under ``"details"``.
``/metrics`` renders the injected Prometheus registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer

ReadinessCheck = Callable[[], Mapping[str, bool]]


@dataclass(frozen=True, slots=True)
class Readiness(Mapping[str, bool]):
    """Readiness checks (the mapping itself) plus details that inform only."""

    checks: Mapping[str, bool]
    details: Mapping[str, object] = field(default_factory=dict)

    def __getitem__(self, key: str) -> bool:
        return self.checks[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)


def ops_server(
    registry: CollectorRegistry, readiness: ReadinessCheck, *, host: str, port: int
) -> HttpServer:
    """An ``HttpServer`` serving the three endpoints."""

    async def handle(request: HttpRequest) -> HttpResponse:
        if request.method != "GET":
            return HttpResponse.text(405, "method not allowed\n")
        if request.path == "/livez":
            return HttpResponse.text(200, "ok\n")
        if request.path == "/readyz":
            answer = readiness()
            checks = dict(answer)
            ready = all(checks.values())
            body: dict[str, object] = {"ready": ready, "checks": checks}
            if isinstance(answer, Readiness) and answer.details:
                body["details"] = dict(answer.details)
            return HttpResponse.json(200 if ready else 503, body)
        if request.path == "/metrics":
            return HttpResponse(
                200, generate_latest(registry), (("content-type", CONTENT_TYPE_LATEST),)
            )
        return HttpResponse.text(404, "not found\n")

    return HttpServer(handle, host, port, max_body_bytes=0)
