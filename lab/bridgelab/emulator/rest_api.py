"""The emulated REST API: ``POST /auth/session`` and the live-tracking reads.

Only the session endpoint is documented; the tracker read paths and their
reply shapes are assumptions (configurable in ``EmulatorConfig``). Every reply
uses the documented ``{status, message, data}`` envelope.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bridge.adapters.http_server import HttpRequest, HttpResponse
from bridgelab.emulator.config import EmulatorConfig
from bridgelab.emulator.faults import SessionFaults
from bridgelab.emulator.fleet import Fleet, iso_ms
from bridgelab.emulator.sessions import (
    FailureLimiter,
    Session,
    SessionStore,
    credentials_match,
)

if TYPE_CHECKING:
    from bridgelab.emulator.deliveries import DeliveryApi

_log = logging.getLogger(__name__)

SOURCE_HEADER = "x-sendstack-source"
SOURCE_VALUE = "control.sendstack"
BAD_CREDENTIALS = "Invalid app_id or app_secret"
_MAX_PAGE_LIMIT = 1_000


def ok(message: str, data: Any, status: int = 200) -> HttpResponse:
    """Success envelope."""
    return HttpResponse.json(status, {"status": True, "message": message, "data": data})


def fail_short(status: int, message: str) -> HttpResponse:
    """Short error form (validation errors)."""
    return HttpResponse.json(status, {"status": False, "message": message})


def fail_long(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    """Long error form (authentication errors), ``isOperational`` included."""
    body = {
        "status": False,
        "message": message,
        "data": {"statusCode": status, "message": message, "isOperational": True},
    }
    return HttpResponse.json(status, body, headers)


def _retry_after(seconds: float) -> tuple[tuple[str, str], ...]:
    # Retry-After on 429 is our assumption; Sendstack documents no header.
    return (("retry-after", str(max(1, math.ceil(seconds)))),)


def _parse_iso_ms(text: str) -> int:
    """ISO-8601 (``Z`` allowed) to epoch ms; ValueError if it is not one."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("timezone required")
    return int(when.timestamp() * 1000)


class RestApi:
    """HTTP handler for everything under ``rest_prefix``."""

    def __init__(
        self,
        config: EmulatorConfig,
        sessions: SessionStore,
        limiter: FailureLimiter,
        fleet: Fleet,
        session_faults: SessionFaults,
        on_replaced: Callable[[list[Session]], None],
        deliveries: DeliveryApi | None = None,
    ) -> None:
        self._cfg = config
        self._sessions = sessions
        self._limiter = limiter
        self._fleet = fleet
        self._faults = session_faults
        self._on_replaced = on_replaced
        self._deliveries = deliveries
        prefix = config.rest_prefix.rstrip("/")
        self._routes: dict[str, tuple[str, Callable[[HttpRequest], HttpResponse]]] = {
            prefix + config.session_path: ("POST", self._session),
            prefix + config.devices_path: ("GET", self._devices),
            prefix + config.positions_path: ("GET", self._positions),
            prefix + config.history_path: ("GET", self._history),
        }
        self.faults_served: dict[str, int] = {"5xx": 0, "429": 0, "drop": 0}

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        route = self._routes.get(request.path.rstrip("/") or "/")
        if route is None:
            if self._deliveries is not None:
                # Delivery endpoints (§14, §15.3) share the credential check.
                answer = await self._deliveries.handle(request, self._authenticate)
                if answer is not None:
                    return answer
            return fail_short(404, "Route not found")
        method, handler = route
        if request.method != method:
            return fail_short(405, f"Method {request.method} not allowed")
        if handler == self._session:
            fault = self._faults.take()
            if fault == "5xx":
                self.faults_served["5xx"] += 1
                return fail_long(self._faults.status, "Internal server error")
            if fault == "429":
                self.faults_served["429"] += 1
                return fail_long(429, "Too many requests", _retry_after(1))
            if fault == "drop":
                # Execute, then lose the reply: the session exists, the
                # client never hears about it.
                self.faults_served["drop"] += 1
                rejected = self._authenticate(request)
                if rejected is None:
                    self._session(request)
                return HttpResponse(200, abort_connection=True)
        rejected = self._authenticate(request)
        if rejected is not None:
            return rejected
        return handler(request)

    def _authenticate(self, request: HttpRequest) -> HttpResponse | None:
        """None when the app credentials are good; else the 401/429 reply."""
        key = request.client_host
        wait = self._limiter.retry_after(key)
        if wait is not None:
            self._limiter.rejections_total += 1
            return fail_long(
                429, "Too many failed attempts, try again later", _retry_after(wait)
            )
        headers = request.headers
        # The docs spell them app_id/app_secret, except the session page
        # (appId/appSecret); both are accepted everywhere.
        app_id = headers.get("app_id", headers.get("appid"))
        app_secret = headers.get("app_secret", headers.get("appsecret"))
        good = credentials_match(
            app_id, app_secret, self._cfg.app_id, self._cfg.app_secret
        )
        if good and self._cfg.strict_source_header:
            good = headers.get(SOURCE_HEADER) == SOURCE_VALUE
        if good:
            return None
        self._limiter.record_failure(key)
        _log.info("rejected credentials from %s on %s", key, request.path)
        return fail_long(401, BAD_CREDENTIALS)

    def _session(self, request: HttpRequest) -> HttpResponse:
        issued = self._sessions.issue(self._cfg.app_id, self._cfg.app_secret)
        if issued.replaced:
            self._on_replaced(issued.replaced)
        expires_at = iso_ms(int(issued.session.expires_at * 1000))
        return ok(
            "Session successfully generated",
            {"session": issued.token, "expiresAt": expires_at},
        )

    def _devices(self, request: HttpRequest) -> HttpResponse:
        try:
            page = int(request.query_one("page") or 1)
            limit = int(request.query_one("limit") or 100)
        except ValueError:
            return fail_short(400, '"page" and "limit" must be numbers')
        if page < 1 or not 1 <= limit <= _MAX_PAGE_LIMIT:
            return fail_short(400, f'"page" >= 1 and 1 <= "limit" <= {_MAX_PAGE_LIMIT}')
        devices = self._fleet.device_list()
        start = (page - 1) * limit
        return ok(
            "Devices fetched successfully",
            {
                "devices": devices[start : start + limit],
                "page": page,
                "totalPages": max(1, math.ceil(len(devices) / limit)),
                "totalCount": len(devices),
            },
        )

    def _positions(self, request: HttpRequest) -> HttpResponse:
        return ok(
            "Positions fetched successfully",
            {"positions": self._fleet.latest_positions()},
        )

    def _history(self, request: HttpRequest) -> HttpResponse:
        raw_id = request.query_one("deviceId")
        if not raw_id:
            return fail_short(400, '"deviceId" is required')
        try:
            device_id = int(raw_id)
        except ValueError:
            return fail_short(400, '"deviceId" must be a number')
        bounds: dict[str, int | None] = {}
        for name in ("from", "to"):
            text = request.query_one(name)
            try:
                bounds[name] = _parse_iso_ms(text) if text else None
            except ValueError:
                return fail_short(400, f'"{name}" must be a valid ISO 8601 date')
        if not self._fleet.has_device(device_id):
            return fail_short(404, "Device not found")
        positions = self._fleet.history(device_id, bounds["from"], bounds["to"])
        return ok(
            "Position history fetched successfully",
            {"deviceId": device_id, "positions": positions},
        )
