"""Our Kafka record contract: items and rejected frames become records.

Theory of operation
-------------------
The codec (``bridge/core/codec.py``) owns the upstream wire format; this
module owns what we publish, which must not change when the wire format does.
It is documented in ``docs/record-contract.md`` and pinned by the JSON Schemas
in ``bridge/schemas/``.

* :func:`to_record` turns one :class:`~bridge.core.codec.Item` into a
  CloudEvents 1.0 record in the Kafka protocol binding's *binary* content
  mode: the value is the JSON data alone and the CloudEvents attributes are
  ``ce_*`` headers (``datacontenttype`` travels as ``content-type``), so
  consumers that know nothing of CloudEvents still read plain JSON, and those
  that do get a standard envelope. The key and the
  ``ce_partitionkey`` extension are the device id, so each device's records
  stay in order on one partition.
* :func:`dead_letter_record` wraps a frame (or, later, a webhook body) that was
  not fully understood: the bytes verbatim, the reason in headers. It is
  generic on purpose; the webhook receiver reuses it with ``origin="webhook"``.

Everything here is a pure function of its arguments: the caller passes the
receive instant as an ISO string (see :func:`iso_ms`), so tests need no clock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

import orjson

from bridge.core.codec import (
    CANONICAL_EVENT_TYPES,
    UNPARSED_REASONS,
    FrameRejection,
    Item,
    Kind,
)

__all__ = [
    "ACCOUNT_HEADER",
    "DATA_SCHEMAS",
    "DEFAULT_SOURCE",
    "OutboundRecord",
    "Topics",
    "account_source",
    "ce_type",
    "dead_letter_record",
    "iso_ms",
    "to_record",
]

#: The header naming the Sendstack account a record came from, when one
#: deployment streams several (its value is the account's name).
ACCOUNT_HEADER: Final = "bridge_account"


def account_source(account: str) -> str:
    """The ``ce_source`` of an account's records, when a deployment streams
    several."""
    return f"/sendstack/accounts/{account}/tracking"


#: Default ``ce_source``: where the bridge got the items from.
DEFAULT_SOURCE: Final = "/sendstack/tracking"

#: ``ce_dataschema`` per kind; each is the ``$id`` of a schema in
#: ``bridge/schemas/`` (``<name>.v1.json``).
DATA_SCHEMAS: Final[Mapping[Kind, str]] = MappingProxyType(
    {
        "position": "urn:sendstack-bridge:schema:position:v1",
        "device_status": "urn:sendstack-bridge:schema:device_status:v1",
        "event": "urn:sendstack-bridge:schema:event:v1",
    }
)

_TYPE_PREFIX: Final = "com.sendstack.tracking."
_JSON: Final = b"application/json"
_OCTETS: Final = b"application/octet-stream"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def ce_type(kind: Kind, event_type: str | None = None) -> str:
    """Return the CloudEvents ``type`` for a kind (and canonical event type).

    Args:
        kind: The item kind.
        event_type: The canonical event type; required for ``event``.

    Returns:
        For example ``com.sendstack.tracking.event.overspeed.v1``.

    Raises:
        ValueError: If ``kind`` is ``event`` and ``event_type`` is not one of
            the six canonical event types.
    """
    if kind != "event":
        return f"{_TYPE_PREFIX}{kind}.v1"
    if event_type not in CANONICAL_EVENT_TYPES:
        raise ValueError(f"not a canonical event type: {event_type!r}")
    return f"{_TYPE_PREFIX}event.{event_type}.v1"


def _encoded_types() -> dict[tuple[Kind, str | None], bytes]:
    """Encode every ``ce_type`` once, keyed by ``(kind, event_type)``."""
    encoded: dict[tuple[Kind, str | None], bytes] = {
        ("position", None): ce_type("position").encode(),
        ("device_status", None): ce_type("device_status").encode(),
    }
    for name in CANONICAL_EVENT_TYPES:
        encoded["event", name] = ce_type("event", name).encode()
    return encoded


# Header pairs that depend only on the kind (or on nothing) are built once:
# per record that saves the encoding, the tuples and their garbage collection.
_SPECVERSION: Final = ("ce_specversion", b"1.0")
_CONTENT_TYPE_JSON: Final = ("content-type", _JSON)
_TYPE_PAIRS: Final[Mapping[tuple[Kind, str | None], tuple[str, bytes]]] = (
    MappingProxyType({k: ("ce_type", v) for k, v in _encoded_types().items()})
)
_SCHEMA_PAIRS: Final[Mapping[Kind, tuple[str, bytes]]] = MappingProxyType(
    {kind: ("ce_dataschema", urn.encode()) for kind, urn in DATA_SCHEMAS.items()}
)
# ce_source takes few values; ce_bridgereceivedat is the same for a frame's
# items, so the last one is kept (a cache: results never depend on it).
_source_pairs: dict[str, tuple[str, bytes]] = {}
_received_pair: tuple[str, tuple[str, bytes]] = ("", ("ce_bridgereceivedat", b""))
# The header names of every record to_record builds, in order (with the
# account's last when it has one).
_HEADER_NAMES: Final = (
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "ce_dataschema",
    "content-type",
    "ce_partitionkey",
    "ce_bridgereceivedat",
)
_HEADER_NAMES_ACCOUNT: Final = (*_HEADER_NAMES, ACCOUNT_HEADER)
# Header names, ce_specversion's and content-type's values: the same in every
# record to_record builds.
_FIXED_SIZE: Final = (
    sum(map(len, _HEADER_NAMES)) + len(_SPECVERSION[1]) + len(_CONTENT_TYPE_JSON[1])
)


@dataclass(frozen=True, slots=True)
class Topics:
    """The Kafka topics the bridge writes tracking records to."""

    positions: str = "sendstack.tracking.positions"
    device_status: str = "sendstack.tracking.device-status"
    events: str = "sendstack.tracking.events"
    dead_letter: str = "sendstack.tracking.dlq"


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One Kafka record, fully encoded, ready for a producer.

    Attributes:
        topic: Destination topic.
        key: Record key (the device id), or ``None`` for dead letters.
        value: Record value bytes.
        headers: Header names and byte values, in order.
        dedupe_id: The item's ``event_id`` (``None`` for dead letters), for
            de-duplication across reconnects and session rotations.
        event_time_ms: When the item happened, epoch ms, for latency metrics.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    dedupe_id: str | None
    event_time_ms: int | None
    # The size, once known (-1: not yet): to_record knows it for free.
    _size: int = field(default=-1, init=False, repr=False, compare=False)
    # Its header names when the maker knows them as one constant tuple
    # (to_record): the journal sizes an entry from it without walking the
    # headers.
    _names: tuple[str, ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def known_header_names(self) -> tuple[str, ...] | None:
        """The header names as one shared tuple, if its maker gave them."""
        return self._names

    @property
    def size(self) -> int:
        """Approximate size in bytes (key, value, header names and values).

        Used for buffer accounting; it ignores Kafka's per-record framing.
        """
        total = self._size
        if total < 0:
            total = len(self.value) + (0 if self.key is None else len(self.key))
            for name, value in self.headers:
                total += len(name) + len(value)
            object.__setattr__(self, "_size", total)
        return total


# A frozen dataclass's __init__ sets each field through object.__setattr__;
# per record that is a third of to_record. fast_record writes the slots directly.
# The field list is checked at import, so a new field cannot be forgotten.
_RECORD_FIELDS: Final = (
    "topic",
    "key",
    "value",
    "headers",
    "dedupe_id",
    "event_time_ms",
    "_size",
    "_names",
)
if tuple(f.name for f in fields(OutboundRecord)) != _RECORD_FIELDS:
    raise TypeError(
        f"OutboundRecord fields changed: update fast_record ({_RECORD_FIELDS})"
    )
(
    _set_topic,
    _set_key,
    _set_value,
    _set_headers,
    _set_dedupe_id,
    _set_event_time_ms,
    _set_size,
    _set_names,
) = (vars(OutboundRecord)[name].__set__ for name in _RECORD_FIELDS)
_new_object = object.__new__


def fast_record(
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: tuple[tuple[str, bytes], ...],
    dedupe_id: str | None,
    event_time_ms: int | None,
    size: int,
    names: tuple[str, ...] | None = None,
) -> OutboundRecord:
    """``OutboundRecord(...)`` with its size, without the frozen ``__init__``
    (for the hot paths: the codec's records, the journal's reads). *names*:
    the header names as a shared constant tuple, if known."""
    record: OutboundRecord = _new_object(OutboundRecord)
    _set_topic(record, topic)
    _set_key(record, key)
    _set_value(record, value)
    _set_headers(record, headers)
    _set_dedupe_id(record, dedupe_id)
    _set_event_time_ms(record, event_time_ms)
    _set_size(record, size)
    _set_names(record, names)
    return record


def to_record(
    item: Item,
    topics: Topics,
    *,
    received_at: str,
    source: str = DEFAULT_SOURCE,
    account: bytes | None = None,
) -> OutboundRecord:
    """Build the CloudEvents (binary mode) record for one item.

    Args:
        item: An item the codec understood.
        topics: Where each kind goes.
        received_at: When the bridge received the frame, ISO-8601 UTC with ms
            and ``Z`` (see :func:`iso_ms`); the ``ce_bridgereceivedat`` header.
        source: The ``ce_source`` attribute.
        account: The Sendstack account the item came from, as the
            ``bridge_account`` header (:data:`ACCOUNT_HEADER`), when a
            deployment streams several; None adds no header.

    Returns:
        The record; its value is ``item.data`` as JSON.

    Raises:
        ValueError: If the item is an event without a canonical event type
            (the codec never produces one).
    """
    global _received_pair  # a one-entry cache, see above
    kind = item.kind
    type_pair = _TYPE_PAIRS.get((kind, item.event_type))
    if type_pair is None:
        raise ValueError(
            f"no CloudEvents type for kind {kind!r} and event type {item.event_type!r}"
        )
    if kind == "position":
        topic = topics.positions
    elif kind == "device_status":
        topic = topics.device_status
    else:
        topic = topics.events
    source_pair = _source_pairs.get(source)
    if source_pair is None:
        if len(_source_pairs) >= 64:
            _source_pairs.clear()
        source_pair = _source_pairs[source] = ("ce_source", source.encode())
    received = _received_pair  # read once: consistent even if replaced meanwhile
    if received[0] != received_at:
        received = _received_pair = (
            received_at,
            ("ce_bridgereceivedat", received_at.encode()),
        )
    received_pair = received[1]
    key = item.device_id.encode()
    event_id = item.event_id.encode()
    event_time = item.event_time.encode()
    schema_pair = _SCHEMA_PAIRS[kind]
    # orjson's bytes keep its 4 KiB output buffer; an exact copy keeps the
    # sink's buffer (up to 10,000 records) at the size it accounts for.
    value = bytes(memoryview(orjson.dumps(item.data)))
    headers: tuple[tuple[str, bytes], ...] = (
        _SPECVERSION,
        ("ce_id", event_id),
        source_pair,
        type_pair,
        ("ce_time", event_time),
        ("ce_subject", key),
        schema_pair,
        _CONTENT_TYPE_JSON,
        ("ce_partitionkey", key),
        received_pair,
    )
    # OutboundRecord.size, without walking the headers.
    size = (
        _FIXED_SIZE
        + len(value)
        + 3 * len(key)
        + len(event_id)
        + len(event_time)
        + len(source_pair[1])
        + len(type_pair[1])
        + len(schema_pair[1])
        + len(received_pair[1])
    )
    names: tuple[str, ...] = _HEADER_NAMES
    if account is not None:
        headers += ((ACCOUNT_HEADER, account),)
        size += len(ACCOUNT_HEADER) + len(account)
        names = _HEADER_NAMES_ACCOUNT
    return fast_record(
        topic, key, value, headers, item.event_id, item.event_time_ms, size, names
    )


def dead_letter_record(
    raw: bytes,
    rejection: FrameRejection,
    topics: Topics,
    *,
    received_at: str,
    origin: str = "stream",
    max_value_bytes: int = 900_000,
    content_type: str | None = None,
    published_ids: Sequence[str] = (),
    extra_headers: Sequence[tuple[str, bytes]] = (),
) -> OutboundRecord:
    """Build the dead-letter record for input that was not fully understood.

    The value is ``raw`` verbatim so the input can be inspected and replayed.
    Inputs longer than ``max_value_bytes`` are cut to that length (the default
    leaves headroom under Kafka's default 1 MB ``max.message.bytes``) and the
    headers then carry the original length and its SHA-256, so the truncation
    is never silent.

    Args:
        raw: The input exactly as received.
        rejection: Why it was not understood.
        topics: ``topics.dead_letter`` is the destination.
        received_at: When it was received, ISO-8601 UTC with ms and ``Z``.
        origin: Where it came from: ``stream`` (websocket) or ``webhook``.
        max_value_bytes: Largest value to write.
        content_type: The ``content-type`` header. By default
            ``application/json`` if the input parsed as JSON (judged from
            ``rejection.reason``) and was not truncated, else
            ``application/octet-stream``.
        published_ids: The ce_ids of the items of this input that were
            published all the same (a partly understood frame), as the
            ``bridge_dlq_published_ids`` header (a JSON array), so a redrive
            does not publish them a second time.
        extra_headers: More headers, appended as given.

    Returns:
        The record: no key, no dedupe id.

    Raises:
        ValueError: If ``max_value_bytes`` is negative.
    """
    if max_value_bytes < 0:
        raise ValueError(f"max_value_bytes must be >= 0, got {max_value_bytes}")
    truncated = len(raw) > max_value_bytes
    if content_type is not None:
        content_type_bytes = content_type.encode()
    elif truncated or rejection.reason in UNPARSED_REASONS:
        # A cut-off JSON document is no longer JSON.
        content_type_bytes = _OCTETS
    else:
        content_type_bytes = _JSON
    headers: list[tuple[str, bytes]] = [
        ("bridge_dlq_reason", rejection.reason.encode()),
        ("bridge_dlq_detail", rejection.detail.encode()),
        ("bridge_dlq_origin", origin.encode()),
        ("bridge_dlq_received_at", received_at.encode()),
        ("content-type", content_type_bytes),
    ]
    value = raw
    if truncated:
        value = raw[:max_value_bytes]
        headers += [
            ("bridge_dlq_truncated", b"true"),
            ("bridge_dlq_original_bytes", str(len(raw)).encode()),
            ("bridge_dlq_sha256", hashlib.sha256(raw).hexdigest().encode()),
        ]
    if published_ids:
        headers.append(("bridge_dlq_published_ids", orjson.dumps(list(published_ids))))
    headers += extra_headers
    return OutboundRecord(
        topic=topics.dead_letter,
        key=None,
        value=value,
        headers=tuple(headers),
        dedupe_id=None,
        event_time_ms=None,
    )


def iso_ms(epoch_seconds: float) -> str:
    """Format an epoch instant as ISO-8601 UTC with milliseconds and ``Z``.

    Args:
        epoch_seconds: Seconds since the Unix epoch, for example
            ``time.time()``; rounded to the nearest millisecond.

    Returns:
        For example ``"2025-06-14T09:12:03.000Z"``.

    Raises:
        ValueError: If ``epoch_seconds`` is not finite or falls outside the
            years 1 to 9999.
    """
    if not math.isfinite(epoch_seconds):
        raise ValueError(f"not a finite instant: {epoch_seconds!r}")
    millis = round(epoch_seconds * 1000)
    try:
        # Epoch arithmetic rather than fromtimestamp(): no platform limits on
        # negative or far-future instants.
        when = _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise ValueError(f"instant out of range: {epoch_seconds!r}") from None
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T"
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}."
        f"{when.microsecond // 1000:03d}Z"
    )


def received_epoch(record: OutboundRecord) -> float | None:
    """When the bridge received the record's frame (its ``ce_bridgereceivedat``
    header, :func:`iso_ms`'s form), in epoch seconds; None without one."""
    for name, value in record.headers:
        if name == "ce_bridgereceivedat":
            try:
                return datetime.fromisoformat(value.decode("ascii")).timestamp()
            except ValueError:
                return None
    return None
