"""Sendstack webhooks: signature, parsing, classification and the Kafka record.

Theory of operation
-------------------
Sendstack POSTs one JSON object per webhook to a URL we configure and signs it
in the ``x-sendstack-signature`` header (``sendstack-api.md`` §8): the
lower-case hex HMAC-SHA256, keyed with the app secret, of

* **current scheme** (``webhook_id``): ``JSON.stringify(payload.webhookId)``,
  the JSON text of the ``webhookId`` string *with its double quotes*;
* **legacy scheme** (``payload``): ``JSON.stringify(payload)``, the whole body.

For the legacy scheme we verify the HMAC over the **raw body bytes as
received**, never over a re-serialisation: Sendstack (Node) sends the very
string it signed, while re-serialising in Python differs from JavaScript's
``JSON.stringify`` (spacing, escaping of non-ASCII, number formatting, key
order after a dict round trip), so recomputing would refuse genuine webhooks.
Every candidate digest is computed and compared with
:func:`hmac.compare_digest`, so timing tells nothing about which scheme or
which byte failed.

The current scheme authenticates the ``webhookId`` only, not the rest of the
body: anyone who sees one signed request can pair that id with another body.
De-duplication on ``webhookId`` (the receiver's job) limits that to ids not
seen yet; TLS on the webhook URL, or the legacy whole-body scheme where it is
available, closes it (see ``docs/webhooks.md``).

A verified body then becomes exactly one Kafka record (:func:`plan`):

* Its **family** comes from :class:`FamilyRules`: ``delivery`` (the eight
  Delivery Management webhooks; only ``order.new`` is documented, §9, and the
  others are assumed to be ``order.*``) or ``tracking`` (the six live-tracking
  webhooks, undocumented, §15.4; assumed to carry the tracker event type
  strings of §15.3 such as ``OVER_SPEEDING_WARNING``). The rules are data,
  not a list of the fourteen names: an unknown ``eventType`` is still
  published when a prefix or the body's shape says which family it belongs
  to.
* The **value** is the body verbatim, so every field that arrives is kept,
  byte for byte (and a legacy signature can be re-checked downstream).
* The record follows the stream's contract (``bridge.core.records``):
  CloudEvents 1.0, Kafka binding, binary mode; ``ce_id`` is the
  ``webhookId`` and ``ce_type`` is ``com.sendstack.webhook.<eventType>.v1``.
  The key is the booking (``batchId``), else the drop (``trackingId``), for
  deliveries; the tracker or device id for tracking events; the
  ``webhookId`` when the body names none of these.
* A verified body that cannot be published that way (no ``webhookId``, no or
  an unusable ``eventType``, no recognisable family, or too large for a Kafka
  record) goes **verbatim** to the webhook dead-letter topic with a reason
  (:func:`bridge.core.records.dead_letter_record`, ``origin="webhook"``).
  Nothing verified is ever dropped.

Everything here is pure: the caller passes the receive instant.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final, Literal

import orjson

from bridge.core.codec import FrameRejection
from bridge.core.records import OutboundRecord, Topics, dead_letter_record

__all__ = [
    "DATA_SCHEMAS",
    "DEAD_LETTER_REASONS",
    "DEFAULT_RULES",
    "DEFAULT_SOURCE",
    "FAMILIES",
    "SCHEMES",
    "SIGNATURE_HEADER",
    "Family",
    "FamilyRules",
    "Inbound",
    "Malformed",
    "Plan",
    "Scheme",
    "SignatureVerifier",
    "WebhookOutcome",
    "WebhookReply",
    "WebhookRequest",
    "WebhookTopics",
    "ce_type",
    "dedupe_key",
    "event_time",
    "family_of",
    "js_json_string",
    "parse",
    "plan",
    "record_key",
    "sign",
    "signed_message",
]

#: The request header that carries the signature (§8).
SIGNATURE_HEADER: Final = "x-sendstack-signature"

#: Default ``ce_source`` of webhook records.
DEFAULT_SOURCE: Final = "/sendstack/webhooks"

Scheme = Literal["webhook_id", "payload"]
#: The two signature schemes, current first.
SCHEMES: Final[tuple[Scheme, ...]] = ("webhook_id", "payload")

Family = Literal["delivery", "tracking"]
FAMILIES: Final[tuple[Family, ...]] = ("delivery", "tracking")

#: ``ce_dataschema`` per family; each is the ``$id`` of a schema in
#: ``bridge/schemas/`` (``webhook_<family>.v1.json``).
DATA_SCHEMAS: Final[Mapping[Family, str]] = MappingProxyType(
    {
        "delivery": "urn:sendstack-bridge:schema:webhook_delivery:v1",
        "tracking": "urn:sendstack-bridge:schema:webhook_tracking:v1",
    }
)

#: Every dead-letter reason :func:`plan` gives (``bridge_dlq_reason``).
DEAD_LETTER_REASONS: Final[tuple[str, ...]] = (
    "missing_webhook_id",
    "missing_event_type",
    "invalid_event_type",
    "unknown_event_type",
    "oversize",
)

_TYPE_PREFIX: Final = "com.sendstack.webhook."
_JSON: Final = b"application/json"
# What may go into ce_type unchanged: Sendstack's known names ("order.new",
# "OVER_SPEEDING_WARNING") and anything shaped like them.
_EVENT_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,99}")
_MAX_ID: Final = 256
_MAX_TIME: Final = 64
# Under Kafka's default 1 MB max.message.bytes with room for the headers;
# aiokafka refuses larger records, and the sink would retry them forever.
_DEFAULT_MAX_VALUE_BYTES: Final = 900_000


# -- signatures ----------------------------------------------------------------


def js_json_string(value: str) -> str:
    """Return what JavaScript's ``JSON.stringify(value)`` gives for a string.

    That is Python's ``json.dumps(value, ensure_ascii=False)`` (same escapes
    for ``"``, ``\\``, and control characters, lower-case ``\\u00XX``,
    non-ASCII left as is) except for lone surrogates, which ES2019's
    well-formed ``JSON.stringify`` writes as ``\\u`` escapes. For the hex
    ``webhookId`` values Sendstack sends, it is simply the id in quotes.
    """
    return '"' + _escape(value) + '"'


_ESCAPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        '"': '\\"',
        "\\": "\\\\",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }
)
_NEEDS_ESCAPE: Final = re.compile('["\\\\\x00-\x1f\ud800-\udfff]')


def _escape(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = match.group()
        return _ESCAPES.get(char) or f"\\u{ord(char):04x}"

    return _NEEDS_ESCAPE.sub(one, value)


def signed_message(scheme: Scheme, raw: bytes, webhook_id: str | None) -> bytes | None:
    """The bytes Sendstack signs under ``scheme``, or None if it cannot apply.

    Args:
        scheme: ``webhook_id`` (current) or ``payload`` (legacy).
        raw: The request body exactly as received.
        webhook_id: The body's ``webhookId`` when it is a string, else None.

    Returns:
        ``JSON.stringify(webhookId)`` as UTF-8 for the current scheme (None
        without a string ``webhookId``); ``raw`` itself for the legacy one.
    """
    if scheme == "payload":
        return raw
    if webhook_id is None:
        return None
    # Lone surrogates are escaped by now, so the text always encodes.
    return js_json_string(webhook_id).encode("utf-8")


def sign(key: bytes, message: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``message`` keyed with ``key``."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class SignatureVerifier:
    """Checks ``x-sendstack-signature`` under the accepted schemes.

    The key never appears in ``repr`` or in any message.

    Args:
        key: The app secret as UTF-8 bytes (Node's ``createHmac`` with a
            string key uses its UTF-8 encoding).
        accept: The schemes to accept, for example both while Sendstack
            migrates from one to the other.

    Raises:
        ValueError: If ``accept`` is empty or names an unknown scheme.
    """

    __slots__ = ("_key", "accept")

    def __init__(self, key: bytes, accept: tuple[Scheme, ...]) -> None:
        if not accept or not set(accept) <= set(SCHEMES):
            raise ValueError(f"accept must be a non-empty subset of {SCHEMES}")
        self._key = key
        self.accept = accept

    def __repr__(self) -> str:
        return f"SignatureVerifier(accept={self.accept!r}, key=***)"

    def verify(self, raw: bytes, webhook_id: str | None, header: str) -> Scheme | None:
        """Return the scheme whose signature ``header`` is, or None.

        Every accepted scheme's digest is computed and compared in constant
        time, whatever the outcome of the others. Surrounding whitespace and
        upper-case hex digits in the header are tolerated.
        """
        presented = header.strip().lower().encode("latin-1", "replace")
        matched: Scheme | None = None
        for scheme in self.accept:
            message = signed_message(scheme, raw, webhook_id)
            if message is None:
                continue
            expected = sign(self._key, message).encode("ascii")
            if hmac.compare_digest(expected, presented) and matched is None:
                matched = scheme
        return matched


# -- requests and replies --------------------------------------------------------
# The plain values the receiver worker and its HTTP adapter exchange, so that
# neither depends on the other (nor the worker on an HTTP library).

WebhookOutcome = Literal[
    "accepted",
    "dead_lettered",
    "duplicate",
    "bad_signature",
    "missing_signature",
    "malformed",
    "too_large",
    "unavailable",
    "not_found",
]


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One HTTP request, already read; header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    peer: str = ""


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """What to answer: status, outcome (for the body and metrics), extras."""

    status: int
    outcome: WebhookOutcome
    webhook_id: str | None = None
    detail: str = ""
    retry_after: int | None = None
    allow: str | None = None

    def body(self) -> dict[str, object]:
        """The JSON body: ``ok``, ``outcome``, and the id or detail if any."""
        out: dict[str, object] = {
            "ok": 200 <= self.status < 300,
            "outcome": self.outcome,
        }
        if self.webhook_id is not None:
            out["webhookId"] = self.webhook_id
        if self.detail:
            out["detail"] = self.detail
        return out


# -- the HTTP answers ---------------------------------------------------------------
# Every status the receiver gives is decided here; the worker only does the
# waiting (Kafka's ack) and the adapter only speaks HTTP.


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed every check before publishing: verified, parsed."""

    inbound: Inbound
    scheme: Scheme


def admit(
    request: WebhookRequest,
    *,
    path: str,
    max_body_bytes: int,
    verifier: SignatureVerifier,
) -> Admitted | WebhookReply:
    """Answer a request that must not be published, or admit it.

    In this order: wrong path 404; wrong method 405; over ``max_body_bytes``
    413 (the HTTP adapter refuses such bodies before reading them; this is a
    backstop); no signature 401 ``missing_signature``; not a JSON object 400
    ``malformed``; a signature no accepted scheme matches 401
    ``bad_signature``.
    """
    if request.path != path:
        return WebhookReply(404, "not_found", detail="no such path")
    if request.method != "POST":
        return WebhookReply(405, "not_found", detail="use POST", allow="POST")
    if len(request.body) > max_body_bytes:
        return WebhookReply(413, "too_large", detail="body too large")
    signature = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not signature:
        return WebhookReply(
            401, "missing_signature", detail="x-sendstack-signature is missing"
        )
    inbound = parse(request.body)
    if isinstance(inbound, Malformed):
        return WebhookReply(400, "malformed", detail=inbound.detail)
    scheme = verifier.verify(inbound.raw, inbound.webhook_id, signature)
    if scheme is None:
        return WebhookReply(
            401, "bad_signature", detail="x-sendstack-signature does not match"
        )
    return Admitted(inbound, scheme)


Published = Literal["accepted", "dead_lettered", "duplicate"]


def published_reply(outcome: Published, webhook_id: str | None) -> WebhookReply:
    """200: Kafka holds the record (or held it already, for a duplicate)."""
    return WebhookReply(200, outcome, webhook_id)


def unavailable_reply(webhook_id: str | None, retry_after: int) -> WebhookReply:
    """503 with Retry-After: Kafka has not acknowledged it; Sendstack retries."""
    return WebhookReply(
        503,
        "unavailable",
        webhook_id,
        detail="Kafka has not acknowledged it; retry later",
        retry_after=retry_after,
    )


# -- parsing --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inbound:
    """A webhook body that parsed as a JSON object (not yet verified).

    Attributes:
        raw: The body exactly as received.
        body: The parsed object.
        webhook_id: ``body["webhookId"]`` if it is a non-empty string of at
            most 256 characters, else None.
    """

    raw: bytes
    body: Mapping[str, object]
    webhook_id: str | None


@dataclass(frozen=True, slots=True)
class Malformed:
    """Why a body is not a webhook at all (answered 400, never published)."""

    detail: str


def parse(raw: bytes) -> Inbound | Malformed:
    """Parse a request body; never raises.

    Returns:
        :class:`Inbound` for a JSON object, :class:`Malformed` for anything
        else (invalid UTF-8 or JSON, or JSON that is not an object).
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Malformed("body is not valid JSON")
    if not isinstance(body, dict):
        return Malformed(f"body is JSON {_json_kind(body)}, expected an object")
    webhook_id = body.get("webhookId")
    if not isinstance(webhook_id, str) or not 0 < len(webhook_id) <= _MAX_ID:
        webhook_id = None
    return Inbound(raw=raw, body=body, webhook_id=webhook_id)


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


# -- classification -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FamilyRules:
    """How an ``eventType`` (or, failing that, a body's shape) picks a family.

    Checked in order: exact tracking names, delivery prefixes, tracking
    prefixes, then the shape (a tracker or device id means tracking; a
    ``batchId``, ``trackingId`` or ``drops`` means delivery). The defaults
    are assumptions (``docs/webhooks.md``); pass other rules to change them.
    """

    tracking_types: frozenset[str] = frozenset(
        {
            "OVER_SPEEDING_WARNING",
            "LOW_BATTERY_ALERT",
            "NO_MOVEMENT_ALERT",
            "NO_SIGNAL_ALERT",
            "GEOFENCE_IN",
            "GEOFENCE_OUT",
        }
    )
    delivery_prefixes: tuple[str, ...] = ("order.", "delivery.", "drop.", "booking.")
    tracking_prefixes: tuple[str, ...] = (
        "tracker.",
        "tracking.",
        "device.",
        "geofence.",
    )
    tracking_fields: tuple[str, ...] = ("trackerId", "deviceId", "tracker", "device")
    delivery_fields: tuple[str, ...] = ("batchId", "trackingId", "drops", "drop")


DEFAULT_RULES: Final = FamilyRules()


def family_of(
    event_type: str, body: Mapping[str, object], rules: FamilyRules = DEFAULT_RULES
) -> Family | None:
    """The family of a webhook, or None when neither name nor shape says."""
    if event_type in rules.tracking_types:
        return "tracking"
    lowered = event_type.lower()
    if lowered.startswith(rules.delivery_prefixes):
        return "delivery"
    if lowered.startswith(rules.tracking_prefixes):
        return "tracking"
    if any(name in body for name in rules.tracking_fields):
        return "tracking"
    if any(name in body for name in rules.delivery_fields):
        return "delivery"
    return None


# Where each family's key is looked for, in order: (path, what it names).
_KEY_PATHS: Final[Mapping[Family, tuple[tuple[str | int, ...], ...]]] = {
    "delivery": (
        ("batchId",),
        ("drop", "batchId"),
        ("drops", 0, "batchId"),
        ("trackingId",),
        ("drop", "trackingId"),
        ("drops", 0, "trackingId"),
    ),
    "tracking": (
        ("trackerId",),
        ("deviceId",),
        ("tracker", "id"),
        ("device", "id"),
    ),
}


def record_key(family: Family, body: Mapping[str, object], webhook_id: str) -> str:
    """The Kafka key: booking, else drop, else tracker/device, else webhook id.

    Deliveries are keyed by ``batchId`` (so every event of one booking, drops
    included, stays in order on one partition), else by the drop's
    ``trackingId``; tracking events by ``trackerId``, else ``deviceId``.
    String or integer ids are accepted; anything else is skipped.
    """
    for path in _KEY_PATHS[family]:
        value = _at(body, path)
        if isinstance(value, str) and 0 < len(value) <= _MAX_ID:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return webhook_id


def _at(obj: object, path: tuple[str | int, ...]) -> object:
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or len(obj) <= step:
                return None
            obj = obj[step]
        else:
            if not isinstance(obj, dict):
                return None
            obj = obj.get(step)
    return obj


def ce_type(event_type: str) -> str:
    """``com.sendstack.webhook.<eventType>.v1``, the event type as sent.

    Raises:
        ValueError: If ``event_type`` is not 1 to 100 of ``A-Z a-z 0-9 . _ -``
            starting with a letter or digit.
    """
    if _EVENT_TYPE.fullmatch(event_type) is None:
        raise ValueError("not a usable event type")
    return f"{_TYPE_PREFIX}{event_type}.v1"


# Fields that may say when the webhook's event happened, best first.
_TIME_FIELDS: Final = ("eventTime", "timestamp", "updatedAt", "createdAt")


def event_time(body: Mapping[str, object]) -> str | None:
    """The event's time as ISO-8601 UTC with ms and ``Z``, if the body says.

    The first of ``eventTime``, ``timestamp``, ``updatedAt``, ``createdAt``
    that is an ISO-8601 string with a UTC offset; sub-millisecond digits are
    truncated. None when there is none.
    """
    for name in _TIME_FIELDS:
        value = body.get(name)
        if not isinstance(value, str) or len(value) > _MAX_TIME:
            continue
        # Fast path for what JavaScript's toISOString writes (Sendstack is
        # Node): "YYYY-MM-DDTHH:MM:SS.sssZ" is already canonical once its
        # digits parse as a date and time.
        if len(value) == 24 and value[23] == "Z" and value[4:20:3] == "--T::.":
            try:
                datetime.fromisoformat(value[:23])
            except ValueError:
                continue
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            continue
        if parsed.utcoffset() is None:
            continue
        try:
            utc = parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            continue
        return (
            f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
            f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}."
            f"{utc.microsecond // 1000:03d}Z"
        )
    return None


# -- the record -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookTopics:
    """The Kafka topics webhooks are written to."""

    deliveries: str = "sendstack.webhooks.deliveries"
    tracking: str = "sendstack.webhooks.tracking-events"
    dead_letter: str = "sendstack.webhooks.dlq"

    def of(self, family: Family) -> str:
        """The topic of a family."""
        return self.deliveries if family == "delivery" else self.tracking


@dataclass(frozen=True, slots=True)
class Plan:
    """What to publish for one verified webhook.

    Attributes:
        record: The Kafka record (data or dead letter).
        family: ``delivery``, ``tracking`` or ``dead_letter``.
        dedupe_key: The ``webhookId``, or ``sha256:<hex of the body>`` when
            the body has none, so Sendstack's retries are recognised either
            way.
        event_type: The ``eventType`` when it is a string, else None.
        rejection: Why the body is dead-lettered, for dead letters only.
    """

    record: OutboundRecord
    family: Literal["delivery", "tracking", "dead_letter"]
    dedupe_key: str
    event_type: str | None
    rejection: FrameRejection | None = None


def dedupe_key(inbound: Inbound) -> str:
    """The ``webhookId``, else a digest of the body (see :class:`Plan`)."""
    if inbound.webhook_id is not None:
        return inbound.webhook_id
    return "sha256:" + hashlib.sha256(inbound.raw).hexdigest()


def plan(
    inbound: Inbound,
    topics: WebhookTopics,
    *,
    verified_by: Scheme,
    received_at: str,
    source: str = DEFAULT_SOURCE,
    rules: FamilyRules = DEFAULT_RULES,
    max_value_bytes: int = _DEFAULT_MAX_VALUE_BYTES,
) -> Plan:
    """Decide the one record a verified webhook becomes.

    Args:
        inbound: The parsed body; the caller has verified its signature.
        topics: Where each family (and dead letters) go.
        verified_by: The scheme that verified it (``ce_bridgeverifiedby``).
        received_at: When it was received, ISO-8601 UTC with ms and ``Z``
            (see :func:`bridge.core.records.iso_ms`).
        source: The ``ce_source`` attribute.
        rules: How families are recognised.
        max_value_bytes: Larger bodies are dead-lettered (``oversize``,
            truncated with their SHA-256) instead of breaking the producer.

    Returns:
        A data record, or a dead letter with the reason.
    """
    body = inbound.body
    raw_type = body.get("eventType")
    event_type = raw_type if isinstance(raw_type, str) else None
    key = dedupe_key(inbound)
    verdict = _judge(inbound, event_type, rules, max_value_bytes)
    if isinstance(verdict, FrameRejection):
        rejection = verdict
        return Plan(
            record=dead_letter_record(
                inbound.raw,
                rejection,
                Topics(dead_letter=topics.dead_letter),
                received_at=received_at,
                origin="webhook",
                max_value_bytes=max_value_bytes,
                # A redrive publishes it later with the scheme that verified it.
                extra_headers=(("bridge_dlq_verified_by", verified_by.encode()),),
            ),
            family="dead_letter",
            dedupe_key=key,
            event_type=event_type,
            rejection=rejection,
        )
    family, webhook_id, event_type = verdict
    partition_key = record_key(family, body, webhook_id).encode()
    record = OutboundRecord(
        topics.of(family),
        partition_key,
        inbound.raw,
        (
            ("ce_specversion", b"1.0"),
            ("ce_id", webhook_id.encode()),
            ("ce_source", source.encode()),
            ("ce_type", ce_type(event_type).encode()),
            ("ce_time", (event_time(body) or received_at).encode()),
            ("ce_subject", partition_key),
            ("ce_dataschema", DATA_SCHEMAS[family].encode()),
            ("content-type", _JSON),
            ("ce_partitionkey", partition_key),
            ("ce_bridgereceivedat", received_at.encode()),
            ("ce_bridgeverifiedby", verified_by.encode()),
        ),
        webhook_id,
        None,
    )
    return Plan(record=record, family=family, dedupe_key=key, event_type=event_type)


def _judge(
    inbound: Inbound,
    event_type: str | None,
    rules: FamilyRules,
    max_value_bytes: int,
) -> tuple[Family, str, str] | FrameRejection:
    """Family, webhook id and event type of a verified body, or why it is not.

    A body that fails any check is dead-lettered whole with the reason.
    """
    webhook_id = inbound.webhook_id
    if webhook_id is None:
        return FrameRejection(
            "missing_webhook_id", "webhookId: missing, empty, too long or not a string"
        )
    if event_type is None:
        return FrameRejection(
            "missing_event_type", "eventType: missing or not a string"
        )
    if _EVENT_TYPE.fullmatch(event_type) is None:
        return FrameRejection(
            "invalid_event_type", "eventType: expected 1 to 100 of A-Z a-z 0-9 . _ -"
        )
    family = family_of(event_type, inbound.body, rules)
    if family is None:
        return FrameRejection(
            "unknown_event_type",
            "eventType: no family rule matches it and the body names no booking, "
            "drop, tracker or device",
        )
    if len(inbound.raw) > max_value_bytes:
        return FrameRejection(
            "oversize",
            f"body is {len(inbound.raw)} bytes, over the {max_value_bytes} bytes "
            "a record may hold",
        )
    return family, webhook_id, event_type
