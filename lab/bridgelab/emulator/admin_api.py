"""The admin API: fault injection and observation, on 127.0.0.1 only.

Endpoints (all JSON; ``conn`` selects one stream connection by id, default all):

    GET  /admin/stats
    GET  /admin/ledger[?conn=ID]                 written seqs as [first, last] runs
    POST /admin/faults/drop[?conn=ID]            flush, then cut TCP (client: 1006)
    POST /admin/faults/half-open[?conn=ID][&hold_seconds=S]
    POST /admin/faults/malformed[?conn=ID]
    POST /admin/faults/unknown[?conn=ID]
    POST /admin/faults/oversize[?bytes=N][&conn=ID]   default N = 2097152
    POST /admin/faults/session   {"mode": "5xx"|"429"|"drop"|"off", "count": N,
                                  "status": 5xx (optional)}
    POST /admin/sessions/expire
    POST /admin/fleet            {"paused": bool, "max_frames_per_second": x|null,
                                  "frame_items": n}   (every key optional)

Webhook endpoints (see ``bridgelab.emulator.webhooks``):

    GET  /admin/webhooks[?limit=N]       counters and the last N deliveries
    POST /admin/webhooks/send    {"url": U, "kind": K|"all", "count": N,
                                  "scheme": "webhook_id"|"payload"|"none",
                                  "tamper": bool, "duplicate": bool,
                                  "max_attempts": N}   (only url required)
    POST /admin/webhooks/ticker  {"url": U, "every": S, "scheme": ...} or
                                 {"stop": true}

Delivery endpoints (see ``bridgelab.emulator.deliveries.admin_routes``):

    GET  /admin/requests[?key=K]   recorded requests, executions for key K
    GET  /admin/deliveries         counters and armed faults
    POST /admin/deliveries/wallet  {"balance": N}
    POST /admin/faults/deliveries/{latency,fail-next,always,execute-then-drop,
                                   complete-late,reject-credentials,clear}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from bridge.adapters.http_server import HttpRequest, HttpResponse
from bridgelab.emulator.deliveries import admin_routes as delivery_admin_routes
from bridgelab.emulator.faults import SESSION_FAULT_MODES
from bridgelab.emulator.webhooks import admin_routes as webhook_admin_routes

if TYPE_CHECKING:
    from bridgelab.emulator.server import Emulator

ADMIN_HOST = "127.0.0.1"


class AdminError(ValueError):
    """A bad admin request; becomes a 400."""


def _ok(**data: Any) -> HttpResponse:
    return HttpResponse.json(200, {"ok": True, **data})


def _int_param(request: HttpRequest, name: str, default: int | None) -> int | None:
    raw = request.query_one(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise AdminError(f"{name} must be an integer") from exc


def _float_param(request: HttpRequest, name: str) -> float | None:
    raw = request.query_one(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise AdminError(f"{name} must be a number") from exc


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise AdminError("body must be JSON") from exc
    if not isinstance(body, dict):
        raise AdminError("body must be a JSON object")
    return body


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminApi:
    """HTTP handler over the ``Emulator`` control methods."""

    def __init__(self, emulator: Emulator) -> None:
        self._emu = emulator
        self._routes: dict[
            tuple[str, str], Callable[[HttpRequest], Awaitable[HttpResponse]]
        ] = {
            ("GET", "/admin/stats"): self._stats,
            ("GET", "/admin/ledger"): self._ledger,
            ("POST", "/admin/faults/drop"): self._drop,
            ("POST", "/admin/faults/half-open"): self._half_open,
            ("POST", "/admin/faults/malformed"): self._malformed,
            ("POST", "/admin/faults/unknown"): self._unknown,
            ("POST", "/admin/faults/oversize"): self._oversize,
            ("POST", "/admin/faults/session"): self._session_fault,
            ("POST", "/admin/sessions/expire"): self._expire,
            ("POST", "/admin/fleet"): self._fleet,
        }
        self._routes.update(delivery_admin_routes(emulator.deliveries))
        self._routes.update(webhook_admin_routes(emulator.webhooks))

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        # Bound to loopback already; refusing other peers guards against a
        # misconfigured bind as well.
        if not _is_loopback(request.client_host):
            return HttpResponse.json(403, {"ok": False, "error": "loopback only"})
        route = self._routes.get((request.method, request.path.rstrip("/")))
        if route is None:
            return HttpResponse.json(404, {"ok": False, "error": "no such endpoint"})
        try:
            return await route(request)
        except AdminError as exc:
            return HttpResponse.json(400, {"ok": False, "error": str(exc)})

    async def _stats(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._emu.stats())

    async def _ledger(self, request: HttpRequest) -> HttpResponse:
        conn = _int_param(request, "conn", None)
        runs = self._emu.written_ranges(conn)
        return _ok(
            conn=conn,
            ranges=[[a, b] for a, b in runs],
            count=sum(b - a + 1 for a, b in runs),
        )

    async def _drop(self, request: HttpRequest) -> HttpResponse:
        affected = await self._emu.drop(_int_param(request, "conn", None))
        return _ok(affected=affected)

    async def _half_open(self, request: HttpRequest) -> HttpResponse:
        affected = await self._emu.half_open(
            _int_param(request, "conn", None), _float_param(request, "hold_seconds")
        )
        return _ok(affected=affected)

    async def _malformed(self, request: HttpRequest) -> HttpResponse:
        return _ok(affected=self._emu.send_malformed(_int_param(request, "conn", None)))

    async def _unknown(self, request: HttpRequest) -> HttpResponse:
        return _ok(affected=self._emu.send_unknown(_int_param(request, "conn", None)))

    async def _oversize(self, request: HttpRequest) -> HttpResponse:
        nbytes = _int_param(request, "bytes", 2_097_152)
        if nbytes is None or nbytes < 1:
            raise AdminError("bytes must be >= 1")
        conn = _int_param(request, "conn", None)
        return _ok(affected=self._emu.send_oversize(nbytes, conn), bytes=nbytes)

    async def _session_fault(self, request: HttpRequest) -> HttpResponse:
        body = _json_body(request)
        mode = body.get("mode")
        count = body.get("count", 1)
        status = body.get("status")
        if mode not in SESSION_FAULT_MODES:
            raise AdminError(f"mode must be one of {list(SESSION_FAULT_MODES)}")
        if not isinstance(count, int) or count < 0:
            raise AdminError("count must be an integer >= 0")
        if status is not None and (not isinstance(status, int) or status // 100 != 5):
            raise AdminError("status must be a 5xx integer")
        self._emu.set_session_fault(mode, count, status)
        return _ok(mode=mode, count=count)

    async def _expire(self, request: HttpRequest) -> HttpResponse:
        return _ok(closed=self._emu.expire_sessions())

    async def _fleet(self, request: HttpRequest) -> HttpResponse:
        body = _json_body(request)
        paused = body.get("paused")
        if paused is not None and not isinstance(paused, bool):
            raise AdminError("paused must be a boolean")
        if "max_frames_per_second" in body or "frame_items" in body:
            rate = body.get("max_frames_per_second", self._emu.max_frames_per_second)
            items = body.get("frame_items")
            if rate is not None and (
                isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0
            ):
                raise AdminError("max_frames_per_second must be a number >= 0 or null")
            if items is not None and (
                isinstance(items, bool) or not isinstance(items, int) or items < 1
            ):
                raise AdminError("frame_items must be an integer >= 1")
            self._emu.set_rate(rate, items)
        if paused is True:
            self._emu.pause()
        elif paused is False:
            self._emu.resume()
        return _ok(fleet=self._emu.stats()["fleet"])
