"""Delivery Management (api doc §14) and tracker events (§15.3), emulated.

Every documented endpoint, relative to ``rest_prefix`` (``/api/v1``)::

    GET  /wallet/balance                 GET  /wallet/transactions
    GET  /locations?country=NG           POST /deliveries/offers
    POST /deliveries                     GET  /deliveries[?batchId|trackingId|
    PUT  /deliveries/drops/{dropId}           externalOrderId|customer|page|limit]
    POST /deliveries/{deliveryId}/reschedule
    POST /drops/payOnDelivery            POST /drops/cancel
    POST /drops/updateDeliveryWindow     GET|POST /drops/assign
    GET  /deliveries/track?batchId=|trackingId=
    POST /drops/internalNotes            POST /tracker/event

Replies use the documented envelope, messages and error shapes: the short
form ``{status:false, message}`` for validation errors, the long form with
``data.statusCode`` for 401 (with ``isOperational``, via ``RestApi``) and for
the estimate's 400 (without). Where the docs are silent the choice is ours
and marked [ASSUMED] below; the emulator is meant to be as strict as the docs
and no stricter. It is deliberately independent of ``bridge.core.commands``,
so that a mistake in our command contract shows up against it.

Every request is recorded (method, path, ``Idempotency-Key``, body hash,
whether it took effect, the status) so tests can count how many times a
command really ran (:meth:`DeliveryApi.executions`). Sendstack documents no
idempotency key, so by default the emulator does not dedupe on it
(``EmulatorConfig.honour_idempotency_key``).

Faults, each also on the admin API: latency for every endpoint; the next N
requests fail with a status (optionally after executing); a status always
for one endpoint kind or path; execute then drop the connection with no
reply; refuse the credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from bridge.adapters.http_server import HttpRequest, HttpResponse
from bridgelab.emulator.config import EmulatorConfig
from bridgelab.emulator.fleet import iso_ms
from bridgelab.emulator.rest_api import BAD_CREDENTIALS, fail_long, fail_short, ok
from bridgelab.emulator.sessions import FailureLimiter

__all__ = [
    "KINDS",
    "DeliveryApi",
    "DeliveryStore",
    "RequestRecord",
    "admin_routes",
]

Authenticate = Callable[[HttpRequest], HttpResponse | None]
AdminHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]

IDEMPOTENCY_HEADER: Final = "idempotency-key"
_ALNUM: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TRACKING_URL: Final = "https://app.sendstack.africa/tracking"
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WINDOW_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_MAX_LIMIT: Final = 1_000
_POD_ACCOUNT_SECONDS: Final = 8 * 3600  # [DOC] §13: valid for 8 hours

# (method, path template, kind); {id} matches one path segment.
_ROUTES: Final[tuple[tuple[str, str, str], ...]] = (
    ("GET", "/wallet/balance", "wallet_balance"),
    ("GET", "/wallet/transactions", "wallet_transactions"),
    ("GET", "/locations", "locations"),
    ("POST", "/deliveries/offers", "price_estimate"),
    ("GET", "/deliveries/track", "track_delivery"),
    ("POST", "/deliveries", "book_delivery"),
    ("GET", "/deliveries", "fetch_deliveries"),
    ("PUT", "/deliveries/drops/{id}", "update_delivery"),
    ("POST", "/deliveries/{id}/reschedule", "reschedule_delivery"),
    ("POST", "/drops/payOnDelivery", "generate_pod_account"),
    ("POST", "/drops/cancel", "cancel_drops"),
    ("POST", "/drops/updateDeliveryWindow", "update_delivery_window"),
    ("POST", "/drops/assign", "assign_drop"),
    ("GET", "/drops/assign", "assign_drop"),  # [DOC] heading GET, sample POST
    ("POST", "/drops/internalNotes", "add_private_note"),
    ("POST", "/tracker/event", "create_tracker_event"),
)

#: Endpoint kinds (named after the command types where there is one).
KINDS: Final[tuple[str, ...]] = tuple(dict.fromkeys(kind for _, _, kind in _ROUTES))


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{id\}", "([^/]+)"))


_COMPILED: Final = tuple(
    (method, template, kind, _template_regex(template))
    for method, template, kind in _ROUTES
)

# Mapped locations (§14.2); invented codes in the documented shape.
_LOCATIONS: Final[dict[str, list[dict[str, Any]]]] = {
    "NG": [
        {
            "state": "Lagos",
            "locals": [
                {
                    "name": "Surulere",
                    "locationCode": "K9PZ",
                    "isAvailable": True,
                    "isLockerAvailable": False,
                },
                {
                    "name": "Ikoyi",
                    "locationCode": "R4QN",
                    "isAvailable": True,
                    "isLockerAvailable": True,
                },
            ],
        },
        {
            "state": "Oyo",
            "locals": [
                {
                    "name": "Ibadan North",
                    "locationCode": "P7QD",
                    "isAvailable": True,
                    "isLockerAvailable": True,
                }
            ],
        },
    ]
}

#: Partners that estimates offer and Assign Drop accepts (invented).
PARTNERS: Final[tuple[dict[str, str], ...]] = (
    {
        "id": "6650a0aa77bc12de34f09911",
        "name": "Swift Riders Ltd",
        "rider": "Tunde",
        "phone": "+2348070000011",
    },
    {
        "id": "6650a0aa77bc12de34f09922",
        "name": "Island Express",
        "rider": "Bola",
        "phone": "+2348070000022",
    },
)

_PICKUP_FIELDS: Final = frozenset(
    [
        "long",
        "lat",
        "locationCode",
        "city",
        "state",
        "country",
        "address",
        "address2",
        "pickupName",
        "pickupEmail",
        "pickupNumber",
        "altPickupNumber",
        "postalCode",
        "note",
        "pickupDate",
    ]
)
_DROP_FIELDS: Final = frozenset(
    [
        "recipientName",
        "recipientNumber",
        "altRecipientNumber",
        "address",
        "address2",
        "lat",
        "long",
        "locationCode",
        "city",
        "state",
        "country",
        "note",
        "assignedPartner",
        "podAmount",
        "postalCode",
    ]
)
_UPDATABLE: Final = (
    "address",
    "recipientName",
    "recipientNumber",
    "altRecipientNumber",
    "note",
    "locationCode",
)


class _BadRequest(Exception):
    """A validation failure; becomes the reply it carries."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


def _invalid(message: str, status: int = 400) -> _BadRequest:
    return _BadRequest(fail_short(status, message))


def _required(path: str) -> _BadRequest:
    # Joi style, field name in double quotes (api doc §3).
    return _invalid(f'"{path}" is required')


def _locator_ok(place: dict[str, Any]) -> bool:
    """[DOC] §11: a locationCode, or lat + long, or country + city."""
    return (
        "locationCode" in place
        or ("lat" in place and "long" in place)
        or ("country" in place and "city" in place)
    )


def _string_list(value: object) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


# --------------------------------------------------------------------------
# The store


class DeliveryStore:
    """Bookings, drops, notes, tracker events and the wallet, in memory."""

    def __init__(
        self,
        *,
        wallet_balance: float,
        drop_price: float,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
        echo_external_order_id: bool = False,
    ) -> None:
        self.balance = float(wallet_balance)
        self.echo_external_order_id = echo_external_order_id
        self.drop_price = float(drop_price)
        self._clock = clock
        self._rng = random.Random(seed)
        self._node = f"{self._rng.getrandbits(24):06x}"
        self._counter = 0
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.drops: dict[str, dict[str, Any]] = {}
        self._by_batch: dict[str, str] = {}
        self._by_tracking: dict[str, str] = {}
        self._codes: set[str] = set()
        self.transactions: list[dict[str, Any]] = []
        self.tracker_events: list[dict[str, Any]] = []

    # ids ------------------------------------------------------------------

    def object_id(self) -> str:
        """A new Mongo-style id: 24 lower-case hex characters (§12)."""
        self._counter += 1
        return f"{int(self._clock()) & 0xFFFFFFFF:08x}{self._node}{self._counter:010x}"

    def code(self) -> str:
        """A new batchId/trackingId: 6 upper-case letters and digits."""
        while True:
            candidate = "".join(self._rng.choices(_ALNUM, k=6))
            if candidate not in self._codes:
                self._codes.add(candidate)
                return candidate

    def now_iso(self) -> str:
        """The current instant, ISO-8601 UTC with ms."""
        return iso_ms(int(self._clock() * 1000))

    # lookups ----------------------------------------------------------------

    def delivery_by_batch(self, batch_id: str) -> dict[str, Any] | None:
        """The booking with this batchId."""
        delivery_id = self._by_batch.get(batch_id)
        return None if delivery_id is None else self.deliveries[delivery_id]

    def drop_by_tracking(self, tracking_id: str) -> dict[str, Any] | None:
        """The drop with this trackingId."""
        drop_id = self._by_tracking.get(tracking_id)
        return None if drop_id is None else self.drops[drop_id]

    def drops_of(self, delivery: dict[str, Any]) -> list[dict[str, Any]]:
        """A booking's drops, in booking order."""
        return [self.drops[drop_id] for drop_id in delivery["dropIds"]]

    # changes ------------------------------------------------------------------

    def book(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a booking from a validated New Booking body."""
        now = self.now_iso()
        delivery_id = self.object_id()
        batch = self.code()
        pickup_in: dict[str, Any] = body["pickup"]
        pickup = {k: v for k, v in pickup_in.items() if k in _PICKUP_FIELDS}
        pickup_custom = {k: v for k, v in pickup_in.items() if k not in _PICKUP_FIELDS}
        if "pickupDate" in pickup:
            pickup["pickupDate"] = f"{pickup['pickupDate']}T00:00:00.000Z"
        pickup.setdefault("state", "Lagos")
        pickup.setdefault("lga", pickup.get("city", "Surulere"))
        pickup.setdefault("zone", "zone_1")
        customer = None
        if "bookingName" in body and ("bookingEmail" in body or "bookingPhone" in body):
            # [DOC] a customer is attached with a name plus email or phone.
            customer = {
                "id": self.object_id(),
                "name": body["bookingName"],
                "phone": body.get("bookingPhone"),
            }
        paid_by_wallet = body.get("paymentSource", "self") == "self"
        drop_ids: list[str] = []
        for drop_in in body["drops"]:
            drop_id = self.object_id()
            tracking = self.code()
            partner = drop_in.get("assignedPartner")
            drop = {
                k: v
                for k, v in drop_in.items()
                if k in _DROP_FIELDS and k != "assignedPartner"
            }
            drop.update(
                id=drop_id,
                deliveryId=delivery_id,
                status="ASSIGNED" if partner else "PENDING",
                paymentStatus="PAID" if paid_by_wallet else "PENDING",
                trackingId=tracking,
                trackingUrl=f"{_TRACKING_URL}?trackingId={tracking}",
                batchId=batch,
                externalOrderId=body.get("externalOrderId"),
                amount=self.drop_price,
                pickupOtp=f"{self._rng.randrange(10_000):04d}",
                dropoffOtp=f"{self._rng.randrange(10_000):04d}",
                processed=False,
                trips=[],
                customer=customer,
                fulfillmentPartner=partner,
                assignedTo=_assigned_to(partner) if partner else None,
                customFields={
                    "pickup": pickup_custom,
                    "drop": {k: v for k, v in drop_in.items() if k not in _DROP_FIELDS},
                },
                statusTimestamps=[],
                internalNotes=[],
            )
            if "podAmount" in drop_in:
                drop["podPaymentStatus"] = "PENDING"
            self._stamp(drop, drop["status"], "Delivery created")
            self.drops[drop_id] = drop
            self._by_tracking[tracking] = drop_id
            drop_ids.append(drop_id)
        total = self.drop_price * len(drop_ids)
        if paid_by_wallet:
            self._debit(total, f"Booking {batch}")
        delivery = {
            "id": delivery_id,
            "trackingUrl": f"{_TRACKING_URL}?batchId={batch}",
            "paymentStatus": "PAID" if paid_by_wallet else "PENDING",
            "paymentSource": body.get("paymentSource", "self"),
            "batchId": batch,
            "externalOrderId": body.get("externalOrderId"),
            "orderType": body["orderType"],
            "initiator": "api",
            "messageDropAfterPickup": False,
            "isSameDayDelivery": False,
            "hasLockerBooking": False,
            "totalAmount": total,
            "manager": {
                "id": "6650a0010bc12de34f0000aa",
                "name": "Emulated Business",
                "email": "ops@example.invalid",
            },
            "customer": customer,
            "pickup": pickup,
            "dropIds": drop_ids,
            "createdAt": now,
        }
        self.deliveries[delivery_id] = delivery
        self._by_batch[batch] = delivery_id
        return self.view(delivery)

    def _shown(self, item: dict[str, Any]) -> dict[str, Any]:
        # The docs show no reply carrying externalOrderId (§14.6, §14.8): it
        # is kept to filter Fetch Deliveries by, and echoed only on request.
        if self.echo_external_order_id:
            return dict(item)
        return {k: v for k, v in item.items() if k != "externalOrderId"}

    def view(self, delivery: dict[str, Any]) -> dict[str, Any]:
        """A booking as New Booking and Track Delivery Status return it."""
        out = self._shown({k: v for k, v in delivery.items() if k != "dropIds"})
        out["drops"] = [self._shown(drop) for drop in self.drops_of(delivery)]
        return out

    def list_view(self, drop: dict[str, Any]) -> dict[str, Any]:
        """A drop as Fetch Deliveries lists it: drop and pickup fields (§14.8)."""
        pickup = self.deliveries[drop["deliveryId"]]["pickup"]
        out = self._shown(drop)
        out.update(
            pickupName=pickup.get("pickupName"),
            pickupNumber=pickup.get("pickupNumber"),
            altPickupNumber=pickup.get("altPickupNumber"),
            pickupLga=pickup.get("lga"),
            pickupState=pickup.get("state"),
            recipientLga=drop.get("city"),
        )
        return out

    def set_status(self, drop: dict[str, Any], status: str, note: str) -> None:
        """Move a drop to ``status`` and stamp it."""
        drop["status"] = status
        self._stamp(drop, status, note)

    def _stamp(self, drop: dict[str, Any], status: str, note: str) -> None:
        drop["statusTimestamps"].append(
            {
                "id": self.object_id(),
                "note": note,
                "status": status,
                "timestamp": self.now_iso(),
            }
        )

    def _debit(self, amount: float, narration: str) -> None:
        self.balance -= amount
        self.transactions.append(
            {
                "id": self.object_id(),
                "type": "debit",
                "amount": amount,
                "narration": narration,
                "balanceAfter": self.balance,
                "createdAt": self.now_iso(),
            }
        )


def _assigned_to(partner_id: str) -> dict[str, Any]:
    """``assignedTo`` for a known partner ([CODE] shape, §14.15)."""
    partner = next(p for p in PARTNERS if p["id"] == partner_id)
    return {
        "rider": {"name": partner["rider"], "phone": partner["phone"]},
        "deliveryCompanyId": partner["id"],
        "deliveryCompanyName": partner["name"],
    }


# --------------------------------------------------------------------------
# Recording and faults


@dataclass(slots=True)
class RequestRecord:
    """One request to a delivery endpoint, as the emulator saw it."""

    seq: int
    at: float
    method: str
    path: str
    kind: str
    idempotency_key: str | None
    body_sha256: str
    executed: bool = False
    status: int | None = None  # None: no reply was sent (connection dropped)
    fault: str | None = None

    def info(self) -> dict[str, Any]:
        """JSON-ready form (admin API)."""
        return {
            "seq": self.seq,
            "at": iso_ms(int(self.at * 1000)),
            "method": self.method,
            "path": self.path,
            "kind": self.kind,
            "idempotencyKey": self.idempotency_key,
            "bodySha256": self.body_sha256,
            "executed": self.executed,
            "status": self.status,
            "fault": self.fault,
        }


@dataclass(slots=True)
class _Armed:
    """A fault for the next ``remaining`` matching requests (forever if None)."""

    name: str
    status: int
    remaining: int | None
    kind: str | None = None
    path: str | None = None
    retry_after: float | None = None
    execute: bool = False
    delay: float = 0.0

    def matches(self, kind: str, path: str, template: str) -> bool:
        if self.kind is not None and self.kind != kind:
            return False
        return self.path is None or self.path in (path, template)


def _check_status(status: int) -> None:
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError("status must be an integer")
    if not 400 <= status <= 599:
        raise ValueError("status must be a 4xx or 5xx code")


def _check_target(kind: str | None, path: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if path is not None and not path.startswith("/"):
        raise ValueError("path must start with '/' (relative to the REST prefix)")


@dataclass(slots=True)
class _Faults:
    latency_ms: float = 0.0
    reject_credentials: bool = False
    fail_next: list[_Armed] = field(default_factory=list)
    always: list[_Armed] = field(default_factory=list)
    drop_next: list[_Armed] = field(default_factory=list)
    late_next: list[_Armed] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def _take(
        armed: list[_Armed],
        kind: str,
        path: str,
        template: str,
        *,
        execute: bool | None = None,
    ) -> _Armed | None:
        for rule in armed:
            if execute is not None and rule.execute != execute:
                continue
            if rule.matches(kind, path, template):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        armed.remove(rule)
                return rule
        return None

    def before(self, kind: str, path: str, template: str) -> _Armed | None:
        """A fault that answers instead of executing, if one applies."""
        for rule in self.always:
            if rule.matches(kind, path, template):
                return rule
        return self._take(self.fail_next, kind, path, template, execute=False)

    def after(self, kind: str, path: str, template: str) -> _Armed | None:
        """A fault that answers after executing (fail_next with execute)."""
        return self._take(self.fail_next, kind, path, template, execute=True)

    def drop(self, kind: str, path: str, template: str) -> _Armed | None:
        """An execute-then-drop fault, if one applies."""
        return self._take(self.drop_next, kind, path, template)

    def late(self, kind: str, path: str, template: str) -> _Armed | None:
        """A complete-late fault, if one applies."""
        return self._take(self.late_next, kind, path, template)

    def describe(self) -> dict[str, Any]:
        def rules(armed: list[_Armed]) -> list[dict[str, Any]]:
            return [
                {
                    "status": r.status,
                    "remaining": r.remaining,
                    "kind": r.kind,
                    "path": r.path,
                    "retryAfter": r.retry_after,
                    "execute": r.execute,
                }
                for r in armed
            ]

        return {
            "latency_ms": self.latency_ms,
            "reject_credentials": self.reject_credentials,
            "fail_next": rules(self.fail_next),
            "always": rules(self.always),
            "execute_then_drop": rules(self.drop_next),
            "complete_late": rules(self.late_next),
            "served": dict(self.served),
        }


def _fault_reply(rule: _Armed) -> HttpResponse:
    # [ASSUMED] bodies: Sendstack documents none for 5xx or 429.
    headers: tuple[tuple[str, str], ...] = ()
    if rule.retry_after is not None:
        headers = (("retry-after", str(max(0, math.ceil(rule.retry_after)))),)
    if rule.status == 429:
        message = "Too many requests"
    elif rule.status >= 500:
        message = "Internal server error"
    else:
        message = "Request failed"
    return fail_long(rule.status, message, headers)


# --------------------------------------------------------------------------
# The HTTP handler


class DeliveryApi:
    """The delivery endpoints, their request log and their faults.

    ``RestApi`` hands it every request that none of its own routes takes,
    with its credential check (so 401s count toward the lockout).
    """

    def __init__(
        self,
        config: EmulatorConfig,
        limiter: FailureLimiter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._limiter = limiter
        self._clock = clock
        self._prefix = config.rest_prefix.rstrip("/")
        self.store = DeliveryStore(
            wallet_balance=config.wallet_balance,
            drop_price=config.drop_price,
            seed=config.seed,
            clock=clock,
            echo_external_order_id=config.echo_external_order_id,
        )
        self._faults = _Faults(latency_ms=config.delivery_latency_ms)
        self._log: deque[RequestRecord] = deque(maxlen=config.request_log_limit)
        self._seq = 0
        self._executions: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._replies: dict[str, tuple[str, str, HttpResponse]] = {}
        self._handlers: dict[
            str, Callable[[HttpRequest, tuple[str, ...]], HttpResponse]
        ] = {
            "wallet_balance": self._wallet_balance,
            "wallet_transactions": self._wallet_transactions,
            "locations": self._locations,
            "price_estimate": self._price_estimate,
            "book_delivery": self._book,
            "fetch_deliveries": self._fetch,
            "update_delivery": self._update_drop,
            "reschedule_delivery": self._reschedule,
            "generate_pod_account": self._pay_on_delivery,
            "cancel_drops": self._cancel,
            "update_delivery_window": self._update_window,
            "assign_drop": self._assign,
            "track_delivery": self._track,
            "add_private_note": self._private_note,
            "create_tracker_event": self._tracker_event,
        }

    # -- observation ------------------------------------------------------------

    def executions(self, idempotency_key: str) -> int:
        """How many requests with this ``Idempotency-Key`` took effect."""
        return self._executions[idempotency_key]

    def in_flight(self, kind: str) -> int:
        """How many requests of this kind are being answered right now."""
        return self._in_flight[kind]

    def requests(self, idempotency_key: str | None = None) -> list[RequestRecord]:
        """Recorded requests (the newest ``request_log_limit``), oldest first."""
        if idempotency_key is None:
            return list(self._log)
        return [r for r in self._log if r.idempotency_key == idempotency_key]

    def stats(self) -> dict[str, Any]:
        """Counters for the admin API."""
        return {
            "requests": self._seq,
            "executed": sum(self._executions.values()),
            "deliveries": len(self.store.deliveries),
            "drops": len(self.store.drops),
            "tracker_events": len(self.store.tracker_events),
            "wallet_balance": self.store.balance,
            "honour_idempotency_key": self._cfg.honour_idempotency_key,
            "faults": self._faults.describe(),
        }

    # -- faults -------------------------------------------------------------------

    def set_latency(self, ms: float) -> None:
        """Delay every delivery endpoint's reply by ``ms`` milliseconds."""
        if not math.isfinite(ms) or ms < 0:
            raise ValueError("latency must be a finite number of ms >= 0")
        self._faults.latency_ms = float(ms)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        retry_after: float | None = None,
        *,
        kind: str | None = None,
        path: str | None = None,
        execute: bool = False,
    ) -> None:
        """The next ``n`` matching requests answer ``status``.

        Args:
            n: How many requests.
            status: 4xx or 5xx (503, 500 and 429 are the usual ones).
            retry_after: Seconds for a ``Retry-After`` header, if any.
            kind: Only requests of this endpoint kind (see :data:`KINDS`).
            path: Only this path (concrete or template, e.g.
                ``/deliveries/{id}/reschedule``), relative to the REST prefix.
            execute: Perform the request first (it takes effect), then
                answer ``status`` anyway: "it failed, but did it happen?".
        """
        _check_status(status)
        _check_target(kind, path)
        if n < 0:
            raise ValueError("n must be >= 0")
        if n:
            self._faults.fail_next.append(
                _Armed("fail_next", status, n, kind, path, retry_after, execute)
            )

    def always(
        self,
        status: int | None,
        *,
        kind: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Every matching request answers ``status`` (None lifts the rule).

        At least one of ``kind`` and ``path`` is required; the request is not
        executed.
        """
        _check_target(kind, path)
        if kind is None and path is None:
            raise ValueError("always() needs a kind or a path")
        self._faults.always = [
            r for r in self._faults.always if (r.kind, r.path) != (kind, path)
        ]
        if status is not None:
            _check_status(status)
            self._faults.always.append(
                _Armed("always", status, None, kind, path, retry_after)
            )

    def execute_then_drop(self, n: int = 1, *, kind: str | None = None) -> None:
        """Perform the next ``n`` (matching) requests, then drop the
        connection without replying."""
        _check_target(kind, None)
        if n < 0:
            raise ValueError("n must be >= 0")
        if n:
            self._faults.drop_next.append(_Armed("execute_then_drop", 0, n, kind))

    def complete_late(
        self, n: int = 1, seconds: float = 1.0, *, kind: str | None = None
    ) -> None:
        """Hold the next ``n`` (matching) requests ``seconds``, then perform
        and answer them: a client that gave up meanwhile finds nothing yet
        when it looks, and the request takes effect after all."""
        _check_target(kind, None)
        if n < 0:
            raise ValueError("n must be >= 0")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("seconds must be a finite number >= 0")
        if n:
            self._faults.late_next.append(
                _Armed("complete_late", 0, n, kind, delay=float(seconds))
            )

    def reject_credentials(self, on: bool = True) -> None:
        """Answer 401 to every request (counting toward the lockout)."""
        self._faults.reject_credentials = on

    def clear_faults(self) -> None:
        """Lift every fault, latency included."""
        self._faults = _Faults(served=self._faults.served)

    def set_wallet_balance(self, balance: float) -> None:
        """Set the wallet balance (NGN)."""
        if not math.isfinite(balance):
            raise ValueError("balance must be a finite number")
        self.store.balance = float(balance)

    # -- dispatch -------------------------------------------------------------------

    def _route(self, path: str) -> Iterator[tuple[str, str, str, tuple[str, ...]]]:
        for method, template, kind, regex in _COMPILED:
            match = regex.fullmatch(path)
            if match is not None:
                yield method, template, kind, match.groups()

    async def handle(
        self, request: HttpRequest, authenticate: Authenticate
    ) -> HttpResponse | None:
        """Answer a delivery endpoint request; None when the path is not one."""
        if not request.path.startswith(self._prefix + "/"):
            return None
        path = request.path[len(self._prefix) :].rstrip("/")
        matches = list(self._route(path))
        if not matches:
            return None
        chosen = next((m for m in matches if m[0] == request.method), None)
        record = self._record(request, path, chosen[2] if chosen else matches[0][2])
        if chosen is None:
            record.status = 405
            return fail_short(405, f"Method {request.method} not allowed")
        _, template, kind, params = chosen
        self._in_flight[kind] += 1
        try:
            if self._faults.latency_ms > 0:
                await asyncio.sleep(self._faults.latency_ms / 1000)
            late = self._faults.late(kind, path, template)
            if late is not None:
                record.fault = late.name
                self._faults.served[late.name] += 1
                await asyncio.sleep(late.delay)
            response = self._answer(
                request, record, (kind, path, template), params, authenticate
            )
        finally:
            self._in_flight[kind] -= 1
        if not response.abort_connection:
            record.status = response.status
        return response

    def _answer(
        self,
        request: HttpRequest,
        record: RequestRecord,
        target: tuple[str, str, str],
        params: tuple[str, ...],
        authenticate: Authenticate,
    ) -> HttpResponse:
        """Faults, credentials, replay, the endpoint itself, then late faults."""
        kind, path, template = target
        faults = self._faults
        rule = faults.before(kind, path, template)
        if rule is not None:
            record.fault = rule.name
            faults.served[rule.name] += 1
            return _fault_reply(rule)
        if faults.reject_credentials:
            record.fault = "reject_credentials"
            faults.served["reject_credentials"] += 1
            wait = self._limiter.retry_after(request.client_host)
            if wait is not None:
                self._limiter.rejections_total += 1
                return fail_long(
                    429,
                    "Too many failed attempts, try again later",
                    (("retry-after", str(max(1, math.ceil(wait)))),),
                )
            self._limiter.record_failure(request.client_host)
            return fail_long(401, BAD_CREDENTIALS)
        refused = authenticate(request)
        if refused is not None:
            return refused
        key = record.idempotency_key
        if self._cfg.honour_idempotency_key and key is not None:
            earlier = self._replies.get(key)
            if earlier is not None and earlier[:2] == (request.method, path):
                record.fault = "replayed"
                return earlier[2]
        try:
            response = self._handlers[kind](request, params)
        except _BadRequest as bad:
            response = bad.response
        if 200 <= response.status < 300:
            record.executed = True
            if key is not None:
                self._executions[key] += 1
                if self._cfg.honour_idempotency_key:
                    self._replies[key] = (request.method, path, response)
        after = faults.after(kind, path, template)
        if after is not None:
            record.fault = after.name
            faults.served[after.name] += 1
            return _fault_reply(after)
        if faults.drop(kind, path, template) is not None:
            record.fault = "execute_then_drop"
            faults.served["execute_then_drop"] += 1
            return HttpResponse(200, abort_connection=True)
        return response

    def _record(self, request: HttpRequest, path: str, kind: str) -> RequestRecord:
        self._seq += 1
        record = RequestRecord(
            seq=self._seq,
            at=self._clock(),
            method=request.method,
            path=path,
            kind=kind,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            body_sha256=hashlib.sha256(request.body).hexdigest(),
        )
        self._log.append(record)
        return record

    # -- endpoints ------------------------------------------------------------------

    @staticmethod
    def _body(request: HttpRequest) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise _invalid("Invalid JSON payload") from None
        if not isinstance(body, dict):
            raise _invalid('"value" must be of type object')
        return body

    def _drops_named(
        self, body: dict[str, Any], message: str = "Invalid dropId"
    ) -> list[dict[str, Any]]:
        if "dropIds" not in body:
            raise _required("dropIds")
        ids = _string_list(body["dropIds"])
        if ids is None:
            raise _invalid('"dropIds" must be a non-empty array of strings')
        drops = [self.store.drops.get(drop_id) for drop_id in ids]
        found = [drop for drop in drops if drop is not None]
        if len(found) != len(drops):
            raise _invalid(message)
        return found

    def _wallet_balance(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        # [CODE] data.balance; the message is [ASSUMED].
        return ok(
            "Wallet balance retrieved successfully",
            {"balance": self.store.balance, "currency": "NGN"},
        )

    def _wallet_transactions(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        page, limit = _paging(request)
        items = list(reversed(self.store.transactions))
        start = (page - 1) * limit
        return ok(
            "Wallet transactions retrieved successfully",
            {
                "transactions": items[start : start + limit],
                "page": page,
                "totalPages": max(1, math.ceil(len(items) / limit)),
                "totalCount": len(items),
            },
        )

    def _locations(self, request: HttpRequest, params: tuple[str, ...]) -> HttpResponse:
        country = request.query_one("country")
        if not country:
            raise _required("country")
        return ok("Locations fetched successfully", _LOCATIONS.get(country.upper(), []))

    def _price_estimate(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        body = self._body(request)

        def bad(message: str) -> _BadRequest:
            # [DOC] the estimate's 400 is the long form without isOperational.
            return _BadRequest(
                HttpResponse.json(
                    400,
                    {
                        "status": False,
                        "message": message,
                        "data": {"statusCode": 400, "message": message},
                    },
                )
            )

        for name in ("pickup", "drop"):
            place = body.get(name)
            if place is None:
                raise bad(f'"{name}" is required')
            if not isinstance(place, dict):
                raise bad(f'"{name}" must be of type object')
            if "address" not in place:
                raise bad(f'"{name}.address" is required')
            if not _locator_ok(place):
                raise bad(
                    f'"{name}" must contain locationCode, lat and long, '
                    "or country and city"
                )
        weight = body["drop"].get("weight", 1)
        extra = weight * 100 if isinstance(weight, int | float) else 0
        today = self.store.now_iso()[:10]
        offers = [
            {
                "name": partner["name"],
                "price": self.store.drop_price + extra + 250 * index,
                "id": partner["id"],
                "partnerLogo": f"https://example.invalid/logos/{index}.png",
                "deliveryTimeline": {
                    "estimatedPickupWindow": {
                        "start": f"{today}T07:00:00.000Z",
                        "end": f"{today}T13:00:00.000Z",
                    },
                    "estimatedDropoffWindow": {
                        "start": f"{today}T13:00:00.000Z",
                        "end": f"{today}T18:00:00.000Z",
                    },
                },
                "scope": "intracity_scheduled",
                "createdAt": self.store.now_iso(),
            }
            for index, partner in enumerate(PARTNERS)
        ]
        return ok("Available Delivery Offers Returned", offers)

    def _book(self, request: HttpRequest, params: tuple[str, ...]) -> HttpResponse:
        body = self._body(request)
        if "pickup" not in body:
            raise _required("pickup")
        pickup = body["pickup"]
        if not isinstance(pickup, dict):
            raise _invalid('"pickup" must be of type object')
        for name in ("address", "pickupName", "pickupNumber"):
            if name not in pickup:
                raise _required(f"pickup.{name}")
        if not _locator_ok(pickup):
            raise _invalid(
                '"pickup" must contain locationCode, lat and long, or country and city'
            )
        if "pickupDate" in pickup and not (
            isinstance(pickup["pickupDate"], str)
            and _DATE_RE.fullmatch(pickup["pickupDate"])
        ):
            raise _invalid('"pickup.pickupDate" must be in YYYY-MM-DD format')
        if "drops" not in body:
            raise _required("drops")
        drops = body["drops"]
        if not isinstance(drops, list) or not drops:
            raise _invalid('"drops" must contain at least 1 items')
        for index, drop in enumerate(drops):
            if not isinstance(drop, dict):
                raise _invalid(f'"drops[{index}]" must be of type object')
            if "address" not in drop:
                raise _required(f"drops[{index}].address")
            if not _locator_ok(drop):
                raise _invalid(
                    f'"drops[{index}]" must contain locationCode, lat and long, '
                    "or country and city"
                )
            partner = drop.get("assignedPartner")
            if partner is not None and all(p["id"] != partner for p in PARTNERS):
                raise _invalid("Invalid partnerId")
        if "orderType" not in body:
            raise _required("orderType")
        cost = self.store.drop_price * len(drops)
        if body.get("paymentSource", "self") == "self" and cost > self.store.balance:
            raise _invalid("Low wallet balance", 422)  # [DOC-LEGACY] §13
        # [ASSUMED] 201 and the message: the docs give neither (§14.6).
        return ok("Delivery created successfully", self.store.book(body), 201)

    def _fetch(self, request: HttpRequest, params: tuple[str, ...]) -> HttpResponse:
        page, limit = _paging(request)
        store = self.store
        drops = list(reversed(store.drops.values()))
        filters = {
            name: request.query_one(name)
            for name in ("batchId", "trackingId", "externalOrderId", "customer")
        }
        for name in ("batchId", "trackingId", "externalOrderId"):
            wanted = filters[name]
            if name == "externalOrderId" and self._cfg.ignore_external_order_id_filter:
                continue  # the other plausible real behaviour: an unknown filter
            if wanted:
                drops = [d for d in drops if d.get(name) == wanted]
        customer = filters["customer"]
        if customer:
            drops = [
                d
                for d in drops
                if d["customer"] is not None
                and customer in (d["customer"]["id"], d["customer"]["name"])
            ]
        start = (page - 1) * limit
        return ok(
            "Deliveries successfully retrieved",
            {
                "drops": [store.list_view(d) for d in drops[start : start + limit]],
                # [ASSUMED] paging fields; the current sample is truncated.
                "page": page,
                "limit": limit,
                "totalPages": max(1, math.ceil(len(drops) / limit)),
                "totalCount": len(drops),
            },
        )

    def _update_drop(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        drop = self.store.drops.get(params[0])
        body = self._body(request)
        if drop is None:
            raise _invalid("Invalid dropId")
        for name, value in body.items():
            if name not in _UPDATABLE:
                raise _invalid(f'"{name}" is not allowed')
            if not isinstance(value, str):
                raise _invalid(f'"{name}" must be a string')
        if not body:
            raise _invalid('"value" must have at least 1 key')
        drop.update(body)
        return ok("Delivery updated successfully", drop)

    def _reschedule(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        body = self._body(request)
        if "pickupDate" not in body:
            raise _required("pickupDate")
        day = body["pickupDate"]
        if not isinstance(day, str) or _DATE_RE.fullmatch(day) is None:
            raise _invalid('"pickupDate" must be in YYYY-MM-DD format')
        delivery = self.store.deliveries.get(params[0])
        if delivery is None:
            raise _invalid("Invalid deliveryId")  # [ASSUMED] like "Invalid dropId"
        delivery["pickup"]["pickupDate"] = f"{day}T00:00:00.000Z"
        return ok("Rescheduled delivery", {"pickup": delivery["pickup"]})

    def _pay_on_delivery(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        body = self._body(request)
        if "dropId" not in body:
            raise _required("dropId")
        drop = (
            self.store.drops.get(body["dropId"])
            if isinstance(body["dropId"], str)
            else None
        )
        if drop is None:
            raise _invalid("Invalid dropId")
        drop["podAccount"] = {
            "accountNumber": f"{self.store.object_id()[-10:]}",
            "bank": "Paystack-Titan",
            "expiresAt": iso_ms(int((self._clock() + _POD_ACCOUNT_SECONDS) * 1000)),
        }
        # [DOC] the success body is empty (§14.7).
        return HttpResponse(200)

    def _cancel(self, request: HttpRequest, params: tuple[str, ...]) -> HttpResponse:
        body = self._body(request)
        drops = self._drops_named(body)
        note = body.get("note") if isinstance(body.get("note"), str) else None
        for drop in drops:
            self.store.set_status(drop, "CANCELLED", note or "Cancelled via API")
        return ok("Deliveries cancelled", {})

    def _update_window(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        body = self._body(request)
        windows: dict[str, dict[str, Any]] = {}
        for name in ("estimatedPickupWindow", "estimatedDropoffWindow"):
            if name not in body:
                raise _required(name)
            window = body[name]
            if not isinstance(window, dict):
                raise _invalid(f'"{name}" must be of type object')
            for part in ("date", "start", "end"):
                value = window.get(part)
                if not isinstance(value, str) or _WINDOW_RE.fullmatch(value) is None:
                    raise _invalid(
                        f'"{name}.{part}" must be in YYYY-MM-DD HH:mm:ss format'
                    )
            windows[name] = {part: window[part] for part in ("date", "start", "end")}
        drops = self._drops_named(body)
        for drop in drops:
            drop.update(windows)
        return ok(
            "Delivery window updated",
            [
                {k: d[k] for k in ("id", "status", "paymentStatus", "trackingId")}
                for d in drops
            ],
        )

    def _assign(self, request: HttpRequest, params: tuple[str, ...]) -> HttpResponse:
        body = self._body(request)
        if not body and request.method == "GET":
            # [ASSUMED] a GET may carry the fields in the query instead.
            ids = [i for v in request.query.get("dropIds", []) for i in v.split(",")]
            body = {"partnerId": request.query_one("partnerId"), "dropIds": ids}
            body = {k: v for k, v in body.items() if v}
        if "partnerId" not in body:
            raise _required("partnerId")
        partner_id = body["partnerId"]
        if all(p["id"] != partner_id for p in PARTNERS):
            raise _invalid("Invalid partnerId")
        drops = self._drops_named(body)
        for drop in drops:
            drop["fulfillmentPartner"] = partner_id
            drop["assignedTo"] = _assigned_to(partner_id)
            self.store.set_status(drop, "ASSIGNED", "Assigned via API")
        return ok("Drop assigned successfully", drops)

    def _track(self, request: HttpRequest, params: tuple[str, ...]) -> HttpResponse:
        batch_id = request.query_one("batchId")
        tracking_id = request.query_one("trackingId")
        store = self.store
        if batch_id:
            delivery = store.delivery_by_batch(batch_id)
        elif tracking_id:
            drop = store.drop_by_tracking(tracking_id)
            delivery = None if drop is None else store.deliveries[drop["deliveryId"]]
        else:
            raise _invalid('"batchId" or "trackingId" is required')
        if delivery is None:
            raise _invalid("Delivery not found", 404)  # [ASSUMED] §3's 404
        return ok("Deliveries successfully retrieved", store.view(delivery))

    def _private_note(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        body = self._body(request)
        if "dropIds" not in body:
            raise _required("dropIds")
        if "note" not in body:
            raise _required("note")
        if not isinstance(body["note"], str) or not body["note"]:
            raise _invalid('"note" must be a non-empty string')
        # [DOC] this endpoint's message has a space: "Invalid drop Id".
        for drop in self._drops_named(body, "Invalid drop Id"):
            drop["internalNotes"].append(
                {
                    "id": self.store.object_id(),
                    "note": body["note"],
                    "at": self.store.now_iso(),
                }
            )
        return ok("Note added successfully", {})

    def _tracker_event(
        self, request: HttpRequest, params: tuple[str, ...]
    ) -> HttpResponse:
        body = self._body(request)
        for name in ("trackerId", "eventType"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise _required(name)
        config = body.get("eventConfig")
        if config is not None and not isinstance(config, dict):
            raise _invalid('"eventConfig" must be of type object')
        needs = {
            "OVER_SPEEDING_WARNING": "speedLimit",
            "NO_MOVEMENT_ALERT": "minimumParkingDuration",
        }.get(body["eventType"])
        if needs is not None and (config is None or needs not in config):
            raise _required(f"eventConfig.{needs}")
        if body["eventType"] in ("GEOFENCE_OUT", "GEOFENCE_IN") and (
            _string_list(body.get("geofenceIds")) is None
        ):
            raise _required("geofenceIds")
        self.store.tracker_events.append(
            {"id": self.store.object_id(), **body, "createdAt": self.store.now_iso()}
        )
        return ok("Tracker event successfully created", {})


def _paging(request: HttpRequest) -> tuple[int, int]:
    values = {}
    for name, default in (("page", 1), ("limit", 15)):
        raw = request.query_one(name)
        try:
            values[name] = int(raw) if raw else default
        except ValueError:
            raise _invalid(f'"{name}" must be a number') from None
    page, limit = values["page"], values["limit"]
    if page < 1:
        raise _invalid('"page" must be greater than or equal to 1')
    if not 1 <= limit <= _MAX_LIMIT:
        raise _invalid(f'"limit" must be between 1 and {_MAX_LIMIT}')
    return page, limit


# --------------------------------------------------------------------------
# Admin endpoints


def admin_routes(api: DeliveryApi) -> dict[tuple[str, str], AdminHandler]:
    """The admin API's delivery endpoints (``AdminApi`` merges them in).

    ::

        GET  /admin/requests[?key=K]     recorded requests (for one key) and
                                         {"executions": n} for that key
        GET  /admin/deliveries           store counters and armed faults
        POST /admin/deliveries/wallet    {"balance": N}
        POST /admin/faults/deliveries/latency            {"ms": N}
        POST /admin/faults/deliveries/fail-next          {"count": N, "status": S,
             "retry_after": s, "kind": K, "path": P, "execute": bool}
        POST /admin/faults/deliveries/always             {"status": S|null,
             "kind": K, "path": P, "retry_after": s}
        POST /admin/faults/deliveries/execute-then-drop  {"count": N, "kind": K}
        POST /admin/faults/deliveries/complete-late      {"count": N,
             "seconds": s, "kind": K}
        POST /admin/faults/deliveries/reject-credentials {"on": bool}
        POST /admin/faults/deliveries/clear
    """

    def reply(**data: Any) -> HttpResponse:
        return HttpResponse.json(200, {"ok": True, **data})

    def body_of(request: HttpRequest) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise ValueError("body must be JSON") from None
        if not isinstance(body, dict):
            raise TypeError("body must be a JSON object")
        return body

    def number(body: dict[str, Any], name: str, default: Any = None) -> Any:
        value = body.get(name, default)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise TypeError(f"{name} must be a number")
        return value

    def text(body: dict[str, Any], name: str) -> str | None:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string")
        return value

    def count(body: dict[str, Any]) -> int:
        value = body.get("count", 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("count must be an integer >= 0")
        return value

    async def requests(request: HttpRequest) -> HttpResponse:
        key = request.query_one("key")
        records = api.requests(key)
        return reply(
            key=key,
            executions=None if key is None else api.executions(key),
            count=len(records),
            requests=[r.info() for r in records],
        )

    async def overview(request: HttpRequest) -> HttpResponse:
        return reply(**api.stats())

    async def wallet(request: HttpRequest) -> HttpResponse:
        balance = number(body_of(request), "balance")
        if balance is None:
            raise ValueError("balance is required")
        api.set_wallet_balance(balance)
        return reply(balance=api.store.balance)

    async def latency(request: HttpRequest) -> HttpResponse:
        ms = number(body_of(request), "ms", 0)
        api.set_latency(ms)
        return reply(latency_ms=ms)

    async def fail_next(request: HttpRequest) -> HttpResponse:
        body = body_of(request)
        execute = body.get("execute", False)
        if not isinstance(execute, bool):
            raise TypeError("execute must be a boolean")
        status = number(body, "status", 503)
        api.fail_next(
            count(body),
            status,
            number(body, "retry_after"),
            kind=text(body, "kind"),
            path=text(body, "path"),
            execute=execute,
        )
        return reply(faults=api.stats()["faults"])

    async def always(request: HttpRequest) -> HttpResponse:
        body = body_of(request)
        api.always(
            number(body, "status"),
            kind=text(body, "kind"),
            path=text(body, "path"),
            retry_after=number(body, "retry_after"),
        )
        return reply(faults=api.stats()["faults"])

    async def drop(request: HttpRequest) -> HttpResponse:
        body = body_of(request)
        api.execute_then_drop(count(body), kind=text(body, "kind"))
        return reply(faults=api.stats()["faults"])

    async def late(request: HttpRequest) -> HttpResponse:
        body = body_of(request)
        api.complete_late(
            count(body), number(body, "seconds", 1.0), kind=text(body, "kind")
        )
        return reply(faults=api.stats()["faults"])

    async def reject(request: HttpRequest) -> HttpResponse:
        on = body_of(request).get("on", True)
        if not isinstance(on, bool):
            raise TypeError("on must be a boolean")
        api.reject_credentials(on)
        return reply(reject_credentials=on)

    async def clear(request: HttpRequest) -> HttpResponse:
        api.clear_faults()
        return reply(faults=api.stats()["faults"])

    def guarded(handler: AdminHandler) -> AdminHandler:
        async def run(request: HttpRequest) -> HttpResponse:
            try:
                return await handler(request)
            except (TypeError, ValueError) as exc:
                return HttpResponse.json(400, {"ok": False, "error": str(exc)})

        return run

    routes: dict[tuple[str, str], AdminHandler] = {
        ("GET", "/admin/requests"): requests,
        ("GET", "/admin/deliveries"): overview,
        ("POST", "/admin/deliveries/wallet"): wallet,
        ("POST", "/admin/faults/deliveries/latency"): latency,
        ("POST", "/admin/faults/deliveries/fail-next"): fail_next,
        ("POST", "/admin/faults/deliveries/always"): always,
        ("POST", "/admin/faults/deliveries/execute-then-drop"): drop,
        ("POST", "/admin/faults/deliveries/complete-late"): late,
        ("POST", "/admin/faults/deliveries/reject-credentials"): reject,
        ("POST", "/admin/faults/deliveries/clear"): clear,
    }
    return {route: guarded(handler) for route, handler in routes.items()}
