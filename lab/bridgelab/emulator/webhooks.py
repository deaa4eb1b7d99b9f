"""The emulator's outgoing webhooks: build, sign and POST them like Sendstack.

Sendstack POSTs a JSON body to a URL the customer registered and signs it in
``x-sendstack-signature`` (``sendstack-api.md`` §8). This module does the
same, for tests and the demo:

* **Payloads** for the fourteen kinds (eight delivery, six live-tracking) come
  from ``fixtures/webhooks.json``. Only ``order.new`` is documented; the
  other bodies and event types are assumptions written down in that file,
  replaceable by captures. Placeholders (``{batchId}``, ``{now}``, ...) are
  filled per webhook from a small seeded pool of bookings and trackers, so
  successive webhooks about one booking share its ``batchId``.
* **Bodies** are compact JSON, as Node's ``JSON.stringify`` writes them
  (``separators=(",", ":")``, non-ASCII as is).
* **Signatures**: ``webhook_id`` (current: HMAC-SHA256 hex of
  ``JSON.stringify(webhookId)``, quotes included), ``payload`` (legacy: of the
  body bytes sent), or ``none`` (no header). ``tamper`` alters the body after
  signing (the ``webhookId`` and one more field), so either scheme fails.
  This code is deliberately independent of ``bridge.core.webhooks``: the
  bridge's verifier is tested against it, not against itself.
* **Delivery** with retries, the way webhook senders usually work (Sendstack
  does not document its policy, so this is an assumption): any non-2xx
  answer, timeout or connection error is retried with capped exponential
  backoff, the very same request (same body, same ``webhookId``, same
  signature), up to ``max_attempts``. ``duplicate`` delivers a webhook a
  second time after the first delivery ended, as a redelivery would.

Every delivery and its attempts are kept (bounded) for tests and the admin
API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import random
import re
import string
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from bridge.adapters.http_server import HttpRequest, HttpResponse

SignScheme = Literal["webhook_id", "payload", "none"]
SIGN_SCHEMES: tuple[SignScheme, ...] = ("webhook_id", "payload", "none")

#: The fourteen kinds, delivery first; ``all`` in `WebhookOutbox.send` means these.
WEBHOOK_KINDS: tuple[str, ...] = (
    "new_delivery",
    "delivery_status_updated",
    "new_internal_note",
    "new_customer_message",
    "pickup_attempt",
    "dropoff_attempt",
    "pickup_window_updated",
    "delivery_window_updated",
    "overspeed",
    "low_battery",
    "no_movement",
    "no_signal",
    "geofence_in",
    "geofence_out",
)

SIGNATURE_HEADER = "x-sendstack-signature"
_PLACEHOLDER = re.compile(r"\{([A-Za-z]+)\}")
_HEX = "0123456789abcdef"
_CODE = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class WebhookKind:
    """One kind of webhook from the fixtures."""

    name: str
    family: str
    event_type: str
    documented: bool
    template: Mapping[str, Any]


def load_webhook_kinds(path: str | None = None) -> dict[str, WebhookKind]:
    """Read the packaged payload templates, or a replacement file.

    Raises:
        ValueError: If a kind is missing or a template lacks ``eventType`` or
            ``webhookId``.
    """
    if path is None:
        raw = (
            resources.files("bridgelab.emulator")
            .joinpath("fixtures/webhooks.json")
            .read_bytes()
        )
    else:
        raw = Path(path).read_bytes()
    data = orjson.loads(raw)
    kinds = {
        name: WebhookKind(
            name=name,
            family=str(spec["family"]),
            event_type=str(spec["eventType"]),
            documented=bool(spec.get("documented", False)),
            template=spec["template"],
        )
        for name, spec in data["kinds"].items()
    }
    missing = [name for name in WEBHOOK_KINDS if name not in kinds]
    if missing:
        raise ValueError(f"webhook fixtures lack the kinds {missing}")
    for kind in kinds.values():
        if "eventType" not in kind.template or "webhookId" not in kind.template:
            raise ValueError(f"template {kind.name} needs eventType and webhookId")
    return kinds


def iso(instant: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as JavaScript's toISOString."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{instant.microsecond // 1000:03d}Z"
    )


@dataclass(frozen=True, slots=True)
class _Booking:
    delivery_id: str
    batch_id: str
    drop_id: str
    tracking_id: str


@dataclass(frozen=True, slots=True)
class _Tracker:
    tracker_id: str
    name: str
    imei: str


class PayloadFactory:
    """Fills the templates: fresh ids and times, bookings and trackers reused.

    Args:
        kinds: The templates (`load_webhook_kinds`).
        seed: Seeds every random choice, so runs are repeatable.
        bookings: How many bookings the delivery webhooks are about.
        trackers: How many trackers the tracking webhooks are about.
        clock: Wall time in epoch seconds.
    """

    def __init__(
        self,
        kinds: Mapping[str, WebhookKind],
        *,
        seed: int = 1,
        bookings: int = 20,
        trackers: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kinds = dict(kinds)
        self._rng = random.Random(seed)
        self._clock = clock
        self._bookings = [
            _Booking(self._hex(), self._code(), self._hex(), self._code())
            for _ in range(bookings)
        ]
        self._trackers = [
            _Tracker(self._hex(), f"Van {n + 1}", str(864_000_000_000_001 + n))
            for n in range(trackers)
        ]

    def build(self, kind: str) -> dict[str, Any]:
        """A fresh payload of ``kind`` (a new ``webhookId`` every time)."""
        spec = self.kinds[kind]
        booking = self._rng.choice(self._bookings)
        tracker = self._rng.choice(self._trackers)
        now = datetime.fromtimestamp(self._clock(), UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        values = {
            "webhookId": self._hex(),
            "deliveryId": booking.delivery_id,
            "batchId": booking.batch_id,
            "dropId": booking.drop_id,
            "trackingId": booking.tracking_id,
            "trackerId": tracker.tracker_id,
            "trackerName": tracker.name,
            "imei": tracker.imei,
            "now": iso(now),
            "today": iso(today),
            "pickupStart": iso(today + timedelta(hours=7)),
            "pickupEnd": iso(today + timedelta(hours=13)),
            "dropoffStart": iso(today + timedelta(hours=13)),
            "dropoffEnd": iso(today + timedelta(hours=18)),
        }
        filled: dict[str, Any] = self._fill(spec.template, values)
        return filled

    def _fill(self, node: Any, values: Mapping[str, str]) -> Any:
        if isinstance(node, str):
            return _PLACEHOLDER.sub(lambda m: self._value(m.group(1), values), node)
        if isinstance(node, list):
            return [self._fill(item, values) for item in node]
        if isinstance(node, dict):
            return {key: self._fill(item, values) for key, item in node.items()}
        return node

    def _value(self, name: str, values: Mapping[str, str]) -> str:
        if name == "objectId":
            return self._hex()
        return values.get(name, "{" + name + "}")

    def _hex(self) -> str:
        return "".join(self._rng.choice(_HEX) for _ in range(24))

    def _code(self) -> str:
        return "".join(self._rng.choice(_CODE) for _ in range(6))


# -- encoding and signing -------------------------------------------------------


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body as Node's ``JSON.stringify`` writes it: compact, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(
    secret: str, payload: Mapping[str, Any], body: bytes, scheme: SignScheme
) -> str | None:
    """The ``x-sendstack-signature`` value, or None for ``none`` (§8).

    ``webhook_id``: HMAC-SHA256 hex of ``JSON.stringify(webhookId)``;
    ``payload``: of the body bytes, which are ``JSON.stringify(payload)``.
    """
    if scheme == "none":
        return None
    if scheme == "webhook_id":
        message = json.dumps(payload["webhookId"], ensure_ascii=False).encode()
    else:
        message = body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def tampered(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload altered after signing: another webhookId and an extra field."""
    changed = dict(payload)
    webhook_id = str(changed.get("webhookId", ""))
    last = webhook_id[-1:] or "0"
    changed["webhookId"] = webhook_id[:-1] + ("1" if last != "1" else "2")
    changed["tampered"] = True
    return changed


@dataclass(frozen=True, slots=True)
class PreparedWebhook:
    """One webhook ready to POST: the same bytes on every attempt."""

    kind: str
    family: str
    event_type: str
    webhook_id: str
    payload: Mapping[str, Any]
    body: bytes
    headers: Mapping[str, str]
    scheme: SignScheme
    tampered: bool


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How deliveries are retried (assumed; Sendstack documents none)."""

    max_attempts: int = 5
    initial_seconds: float = 0.5
    max_seconds: float = 8.0
    timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_seconds < 0 or self.max_seconds < 0:
            raise ValueError("max_attempts >= 1 and delays >= 0")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_seconds, self.initial_seconds * 2.0 ** (attempt - 1))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST: the status (None if no answer), the error class, the time."""

    status: int | None
    error: str | None
    seconds: float


@dataclass(slots=True)
class WebhookDelivery:
    """A webhook and every attempt made to deliver it."""

    webhook: PreparedWebhook
    url: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        """The last attempt got a 2xx."""
        last = self.attempts[-1].status if self.attempts else None
        return last is not None and 200 <= last < 300

    @property
    def statuses(self) -> list[int | None]:
        """Each attempt's status (None: no answer)."""
        return [a.status for a in self.attempts]

    def info(self) -> dict[str, Any]:
        """JSON-ready summary (for the admin API)."""
        w = self.webhook
        return {
            "webhookId": w.webhook_id,
            "kind": w.kind,
            "family": w.family,
            "eventType": w.event_type,
            "scheme": w.scheme,
            "tampered": w.tampered,
            "delivered": self.delivered,
            "statuses": self.statuses,
            "errors": [a.error for a in self.attempts if a.error],
        }


class WebhookOutbox:
    """Prepares, signs and delivers webhooks; keeps a bounded log of deliveries.

    Args:
        secret: The app secret (the signing key).
        seed: Seeds the payloads.
        fixtures_path: Templates replacing the packaged ones.
        retry: The default retry policy.
        log_limit: Deliveries kept for inspection.
    """

    def __init__(
        self,
        secret: str,
        *,
        seed: int = 1,
        fixtures_path: str | None = None,
        retry: RetryPolicy | None = None,
        log_limit: int = 10_000,
    ) -> None:
        self._secret = secret
        self.factory = PayloadFactory(load_webhook_kinds(fixtures_path), seed=seed)
        self.retry = retry or RetryPolicy()
        self._log: deque[WebhookDelivery] = deque(maxlen=log_limit)
        self._client: httpx.AsyncClient | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[WebhookDelivery]] = set()
        self._counts: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"WebhookOutbox(kinds={len(self.factory.kinds)}, secret=***)"

    # -- building ----------------------------------------------------------------

    def prepare(
        self, kind: str, *, scheme: SignScheme = "webhook_id", tamper: bool = False
    ) -> PreparedWebhook:
        """Build, encode and sign one webhook of ``kind``.

        Raises:
            ValueError: On an unknown kind or scheme.
        """
        if kind not in self.factory.kinds:
            raise ValueError(f"unknown webhook kind {kind!r}")
        if scheme not in SIGN_SCHEMES:
            raise ValueError(f"scheme must be one of {SIGN_SCHEMES}")
        spec = self.factory.kinds[kind]
        payload = self.factory.build(kind)
        signature = sign(self._secret, payload, encode(payload), scheme)
        if tamper:
            payload = tampered(payload)
        body = encode(payload)
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        return PreparedWebhook(
            kind=kind,
            family=spec.family,
            event_type=spec.event_type,
            webhook_id=str(payload["webhookId"]),
            payload=payload,
            body=body,
            headers=headers,
            scheme=scheme,
            tampered=tamper,
        )

    # -- delivering -----------------------------------------------------------------

    async def deliver(
        self, url: str, webhook: PreparedWebhook, *, retry: RetryPolicy | None = None
    ) -> WebhookDelivery:
        """POST ``webhook`` until a 2xx or ``max_attempts``; never raises for HTTP."""
        policy = retry or self.retry
        client = self._http()
        delivery = WebhookDelivery(webhook, url)
        self._log.append(delivery)
        self._counts["deliveries"] += 1
        for number in range(1, policy.max_attempts + 1):
            started = time.monotonic()
            status: int | None = None
            error: str | None = None
            try:
                response = await client.post(
                    url,
                    content=webhook.body,
                    headers=dict(webhook.headers),
                    timeout=policy.timeout_seconds,
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            delivery.attempts.append(Attempt(status, error, time.monotonic() - started))
            self._counts["attempts"] += 1
            self._statuses[str(status) if status is not None else "error"] += 1
            if delivery.delivered:
                self._counts["delivered"] += 1
                return delivery
            if number < policy.max_attempts:
                await asyncio.sleep(policy.delay(number))
        self._counts["failed"] += 1
        return delivery

    async def send(
        self,
        url: str,
        kind: str = "new_delivery",
        count: int = 1,
        *,
        scheme: SignScheme = "webhook_id",
        tamper: bool = False,
        duplicate: bool = False,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> list[WebhookDelivery]:
        """Prepare and deliver ``count`` webhooks of ``kind`` (``all``: each kind).

        Args:
            url: Where to POST.
            kind: One of `WEBHOOK_KINDS`, or ``all`` for ``count`` of each.
            count: How many (per kind for ``all``).
            scheme: ``webhook_id``, ``payload`` or ``none``.
            tamper: Alter each body after signing.
            duplicate: Deliver each webhook again once its first delivery
                ended (same body, id and signature).
            retry: Overrides the default retry policy.
            concurrency: Deliveries in flight at once.

        Returns:
            Every delivery, in order (a duplicate right after its original).

        Raises:
            ValueError: On an unknown kind or scheme, or a count below 0.
        """
        if count < 0 or concurrency < 1:
            raise ValueError("count >= 0 and concurrency >= 1")
        kinds = WEBHOOK_KINDS if kind == "all" else (kind,)
        prepared = [
            self.prepare(k, scheme=scheme, tamper=tamper)
            for k in kinds
            for _ in range(count)
        ]
        gate = asyncio.Semaphore(concurrency)

        async def one(webhook: PreparedWebhook) -> list[WebhookDelivery]:
            async with gate:
                first = await self.deliver(url, webhook, retry=retry)
                if not duplicate:
                    return [first]
                self._counts["duplicates"] += 1
                return [first, await self.deliver(url, webhook, retry=retry)]

        results = await asyncio.gather(*(one(w) for w in prepared))
        return list(itertools.chain.from_iterable(results))

    def start_ticker(
        self,
        url: str,
        every: float = 1.0,
        *,
        kinds: Iterable[str] = WEBHOOK_KINDS,
        scheme: SignScheme = "webhook_id",
    ) -> None:
        """POST one webhook every ``every`` seconds, cycling through ``kinds``.

        Raises:
            ValueError: If ``every`` is not positive or a ticker already runs.
        """
        if every <= 0:
            raise ValueError("every must be > 0")
        if self._ticker is not None and not self._ticker.done():
            raise ValueError("a webhook ticker is already running")
        cycle = itertools.cycle(tuple(kinds))

        async def tick() -> None:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while True:
                task = loop.create_task(
                    self.deliver(url, self.prepare(next(cycle), scheme=scheme))
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                next_at += every
                await asyncio.sleep(max(0.0, next_at - loop.time()))

        self._ticker = asyncio.create_task(tick(), name="webhook-ticker")

    async def stop_ticker(self) -> None:
        """Stop the ticker and the deliveries it started."""
        ticker, self._ticker = self._ticker, None
        pending = [t for t in (ticker, *self._tasks) if t is not None]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop the ticker and close the HTTP client."""
        await self.stop_ticker()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- observing ----------------------------------------------------------------

    def deliveries(self) -> list[WebhookDelivery]:
        """The deliveries kept, oldest first."""
        return list(self._log)

    def delivered_ids(self) -> set[str]:
        """``webhookId``s that got a 2xx (untampered ones only)."""
        return {
            d.webhook.webhook_id
            for d in self._log
            if d.delivered and not d.webhook.tampered
        }

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the admin API."""
        return {
            "deliveries": self._counts["deliveries"],
            "delivered": self._counts["delivered"],
            "failed": self._counts["failed"],
            "attempts": self._counts["attempts"],
            "duplicates": self._counts["duplicates"],
            "statuses": dict(self._statuses),
            "ticker": self._ticker is not None and not self._ticker.done(),
        }

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.retry.timeout_seconds)
        return self._client


# -- admin API ---------------------------------------------------------------------

AdminRoute = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _BadRequest(ValueError):
    """A bad admin request; becomes a 400."""


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest("body must be JSON") from exc
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


def _url(body: Mapping[str, Any]) -> str:
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _BadRequest("url must be an http:// or https:// URL")
    return url


def _int(body: Mapping[str, Any], name: str, default: int, minimum: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _BadRequest(f"{name} must be an integer >= {minimum}")
    return value


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise _BadRequest(f"{name} must be a boolean")
    return value


def _scheme(body: Mapping[str, Any]) -> SignScheme:
    value = body.get("scheme", "webhook_id")
    for scheme in SIGN_SCHEMES:
        if value == scheme:
            return scheme
    raise _BadRequest(f"scheme must be one of {list(SIGN_SCHEMES)}")


def admin_routes(outbox: WebhookOutbox) -> dict[tuple[str, str], AdminRoute]:
    """The ``/admin/webhooks`` endpoints over ``outbox`` (see ``admin_api.py``)."""

    def guarded(route: AdminRoute) -> AdminRoute:
        async def run(request: HttpRequest) -> HttpResponse:
            try:
                return await route(request)
            except _BadRequest as exc:
                return HttpResponse.json(400, {"ok": False, "error": str(exc)})

        return run

    async def show(request: HttpRequest) -> HttpResponse:
        raw = request.query_one("limit") or "50"
        if not raw.isdigit():
            raise _BadRequest("limit must be an integer >= 0")
        limit = int(raw)
        recent = outbox.deliveries()[-limit:] if limit else []
        return HttpResponse.json(
            200,
            {"ok": True, **outbox.stats(), "recent": [d.info() for d in recent]},
        )

    async def send(request: HttpRequest) -> HttpResponse:
        body = _body(request)
        url = _url(body)
        kind = body.get("kind", "new_delivery")
        if kind != "all" and kind not in outbox.factory.kinds:
            raise _BadRequest(f"kind must be 'all' or one of {list(WEBHOOK_KINDS)}")
        retry = outbox.retry
        if "max_attempts" in body:
            retry = RetryPolicy(
                max_attempts=_int(body, "max_attempts", 1, 1),
                initial_seconds=retry.initial_seconds,
                max_seconds=retry.max_seconds,
                timeout_seconds=retry.timeout_seconds,
            )
        deliveries = await outbox.send(
            url,
            str(kind),
            _int(body, "count", 1, 0),
            scheme=_scheme(body),
            tamper=_flag(body, "tamper"),
            duplicate=_flag(body, "duplicate"),
            retry=retry,
        )
        return HttpResponse.json(
            200,
            {
                "ok": True,
                "delivered": sum(1 for d in deliveries if d.delivered),
                "failed": sum(1 for d in deliveries if not d.delivered),
                "deliveries": [d.info() for d in deliveries],
            },
        )

    async def ticker(request: HttpRequest) -> HttpResponse:
        body = _body(request)
        if body.get("stop") is True:
            await outbox.stop_ticker()
            return HttpResponse.json(200, {"ok": True, "ticker": False})
        every = body.get("every", 1.0)
        if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
            raise _BadRequest("every must be a number > 0")
        try:
            outbox.start_ticker(_url(body), float(every), scheme=_scheme(body))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        return HttpResponse.json(200, {"ok": True, "ticker": True})

    return {
        ("GET", "/admin/webhooks"): guarded(show),
        ("POST", "/admin/webhooks/send"): guarded(send),
        ("POST", "/admin/webhooks/ticker"): guarded(ticker),
    }
