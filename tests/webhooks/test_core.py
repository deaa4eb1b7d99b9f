"""Unit and property tests of the pure webhook core (bridge/core/webhooks.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, strategies as st

from bridge.core import webhooks
from bridge.core.records import OutboundRecord, iso_ms
from bridgelab.emulator.webhooks import (
    WEBHOOK_KINDS,
    PayloadFactory,
    load_webhook_kinds,
)

SECRET = "s3cr3t-ключ"  # non-ASCII on purpose: Node keys HMAC with its UTF-8
KEY = SECRET.encode()
TOPICS = webhooks.WebhookTopics(deliveries="d", tracking="t", dead_letter="q")
RECEIVED_AT = iso_ms(1_749_892_325.5)
BOTH = webhooks.SignatureVerifier(KEY, webhooks.SCHEMES)
KINDS = load_webhook_kinds()
FACTORY = PayloadFactory(KINDS, seed=7, clock=lambda: 1_749_892_325.5)


def hmac_hex(message: bytes) -> str:
    return hmac.new(KEY, message, hashlib.sha256).hexdigest()


def inbound(payload: dict[str, object] | bytes) -> webhooks.Inbound:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    parsed = webhooks.parse(raw)
    assert isinstance(parsed, webhooks.Inbound)
    return parsed


def headers_of(record: object) -> dict[str, str]:
    assert isinstance(record, OutboundRecord)
    return {name: value.decode() for name, value in record.headers}


# -- signatures ---------------------------------------------------------------


def test_current_scheme_signs_the_quoted_webhook_id() -> None:
    """The current scheme is the HMAC of the 26 bytes "<24 hex>" (quotes included)."""
    webhook_id = "6650c0ffee11aa22bb33cc44"
    message = webhooks.signed_message("webhook_id", b"{}", webhook_id)
    assert message == b'"6650c0ffee11aa22bb33cc44"'
    assert message is not None
    assert len(message) == 26
    raw = orjson.dumps({"webhookId": webhook_id, "eventType": "order.new"})
    assert BOTH.verify(raw, webhook_id, hmac_hex(message)) == "webhook_id"


def test_legacy_scheme_signs_the_raw_body_not_a_reserialisation() -> None:
    """The legacy HMAC is over the body bytes as received; a re-spaced body fails."""
    compact = '{"eventType":"order.new","webhookId":"ab","note":"café"}'.encode()
    signature = hmac_hex(compact)
    assert BOTH.verify(compact, "ab", signature) == "payload"
    spaced = json.dumps(json.loads(compact)).encode()  # Python's default spacing
    assert spaced != compact
    assert BOTH.verify(spaced, "ab", signature) is None


def test_each_scheme_setting_accepts_only_its_scheme() -> None:
    """A verifier for one scheme refuses the other scheme's valid signature."""
    raw = b'{"webhookId":"abc","eventType":"order.new"}'
    current = hmac_hex(b'"abc"')
    legacy = hmac_hex(raw)
    only_current = webhooks.SignatureVerifier(KEY, ("webhook_id",))
    only_legacy = webhooks.SignatureVerifier(KEY, ("payload",))
    assert only_current.verify(raw, "abc", current) == "webhook_id"
    assert only_current.verify(raw, "abc", legacy) is None
    assert only_legacy.verify(raw, "abc", legacy) == "payload"
    assert only_legacy.verify(raw, "abc", current) is None
    assert BOTH.verify(raw, "abc", current) == "webhook_id"
    assert BOTH.verify(raw, "abc", legacy) == "payload"


def test_current_scheme_needs_a_webhook_id() -> None:
    """Without a string webhookId only the legacy scheme can verify a body."""
    raw = b'{"eventType":"order.new"}'
    assert webhooks.signed_message("webhook_id", raw, None) is None
    assert BOTH.verify(raw, None, hmac_hex(b'""')) is None
    assert BOTH.verify(raw, None, hmac_hex(raw)) == "payload"


@pytest.mark.parametrize(
    "header",
    ["", "0" * 64, "zz", "é" * 64, "sha256=" + "0" * 64, "\x00" * 64],
)
def test_wrong_signatures_are_refused_without_raising(header: str) -> None:
    """Empty, wrong, odd-length and non-ASCII headers are refused, never raise."""
    raw = b'{"webhookId":"abc"}'
    assert BOTH.verify(raw, "abc", header) is None


def test_signature_header_tolerates_case_and_whitespace() -> None:
    """Upper-case hex digits and surrounding spaces still verify."""
    raw = b'{"webhookId":"abc"}'
    signature = hmac_hex(b'"abc"')
    assert BOTH.verify(raw, "abc", f"  {signature.upper()}\t") == "webhook_id"


def test_a_tampered_id_or_body_fails_its_scheme() -> None:
    """Changing one byte of the id (current) or of the body (legacy) fails."""
    raw = b'{"webhookId":"abc","eventType":"order.new"}'
    assert BOTH.verify(raw, "abd", hmac_hex(b'"abc"')) is None
    tampered = raw.replace(b"order.new", b"order.nex")
    assert BOTH.verify(tampered, "abc", hmac_hex(raw)) is None


def test_the_key_never_shows() -> None:
    """The verifier's repr names the schemes, never the key."""
    assert SECRET not in repr(BOTH)
    assert "***" in repr(BOTH)


def test_verifier_needs_known_schemes() -> None:
    """An empty or unknown scheme list is a programming error."""
    with pytest.raises(ValueError, match="subset"):
        webhooks.SignatureVerifier(KEY, ())
    with pytest.raises(ValueError, match="subset"):
        webhooks.SignatureVerifier(KEY, ("md5",))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "javascript"),
    [
        ("6650aa11bc12de34f0a1b2d9", '"6650aa11bc12de34f0a1b2d9"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\b\f\n\r\t\x01\x1f\x7f", '"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f"'),
        ("café €😀 \u2028", '"café €😀 \u2028"'),
        ("/", '"/"'),
        ("\ud800x\udfff", '"\\ud800x\\udfff"'),
    ],
)
def test_js_json_string_matches_javascript(value: str, javascript: str) -> None:
    """Known JSON.stringify outputs (ES2019: lone surrogates escaped, rest as is)."""
    assert webhooks.js_json_string(value) == javascript


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_js_json_string_is_json_dumps_without_ascii_escapes(value: str) -> None:
    """For text without surrogates it equals json.dumps(ensure_ascii=False)."""
    assert webhooks.js_json_string(value) == json.dumps(value, ensure_ascii=False)
    assert json.loads(webhooks.js_json_string(value)) == value


@given(st.text())
def test_js_json_string_always_encodes_and_round_trips(value: str) -> None:
    """Any string, lone surrogates included, gives UTF-8-encodable JSON of itself."""
    text = webhooks.js_json_string(value)
    text.encode("utf-8")
    assert json.loads(text) == value


# -- parsing and classification ------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"nope", b"[]", b'"x"', b"1", b"null", b"true", b"\xff\xfe", b'{"a":'],
)
def test_bodies_that_are_not_json_objects_are_malformed(raw: bytes) -> None:
    """Anything but a JSON object is Malformed, with a detail."""
    parsed = webhooks.parse(raw)
    assert isinstance(parsed, webhooks.Malformed)
    assert parsed.detail


@given(st.binary(max_size=300))
def test_parse_never_raises(raw: bytes) -> None:
    """parse returns Inbound or Malformed for any bytes."""
    assert isinstance(webhooks.parse(raw), webhooks.Inbound | webhooks.Malformed)


@pytest.mark.parametrize(
    "webhook_id", [None, 12, "", "x" * 257, ["a"], {"id": "a"}, True]
)
def test_unusable_webhook_ids_are_none(webhook_id: object) -> None:
    """A webhookId that is not a 1 to 256 character string is treated as absent."""
    assert inbound({"webhookId": webhook_id}).webhook_id is None


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_every_kind_of_the_emulator_is_classified(kind: str) -> None:
    """Each of the 14 kinds lands in the family its fixture names."""
    payload = FACTORY.build(kind)
    family = webhooks.family_of(str(payload["eventType"]), payload)
    assert family == KINDS[kind].family


@pytest.mark.parametrize(
    ("event_type", "body", "family"),
    [
        ("order.refunded", {}, "delivery"),
        ("Order.Cancelled", {}, "delivery"),
        ("delivery.rescheduled", {}, "delivery"),
        ("tracker.offline", {}, "tracking"),
        ("geofence.created", {}, "tracking"),
        ("SOS_ALERT", {"trackerId": "t1"}, "tracking"),
        ("SOS_ALERT", {"deviceId": 4}, "tracking"),
        ("rider.rated", {"batchId": "B1"}, "delivery"),
        ("rider.rated", {"drops": []}, "delivery"),
        ("GEOFENCE_IN", {"batchId": "B1"}, "tracking"),
        ("wallet.funded", {"amount": 5}, None),
    ],
)
def test_unknown_event_types_are_classified_by_prefix_or_shape(
    event_type: str, body: dict[str, object], family: str | None
) -> None:
    """Names are not hard-coded: prefixes, then the body's ids, decide the family."""
    assert webhooks.family_of(event_type, body) == family


def test_family_rules_are_injectable() -> None:
    """Other rules change the classification without code changes."""
    rules = webhooks.FamilyRules(delivery_prefixes=("wallet.",))
    assert webhooks.family_of("wallet.funded", {}, rules) == "delivery"
    assert webhooks.family_of("order.new", {}, rules) is None


@pytest.mark.parametrize(
    ("family", "body", "key"),
    [
        ("delivery", {"batchId": "B1", "trackingId": "T1"}, "B1"),
        ("delivery", {"drops": [{"batchId": "B2", "trackingId": "T2"}]}, "B2"),
        ("delivery", {"drop": {"batchId": "B3"}}, "B3"),
        ("delivery", {"trackingId": "T4", "batchId": ""}, "T4"),
        ("delivery", {"drops": [{"trackingId": "T5"}]}, "T5"),
        ("delivery", {"id": "x"}, "W"),
        ("tracking", {"trackerId": "TR", "deviceId": 9}, "TR"),
        ("tracking", {"deviceId": 9}, "9"),
        ("tracking", {"tracker": {"id": "TR2"}}, "TR2"),
        ("tracking", {"device": {"id": 3}}, "3"),
        ("tracking", {"trackerId": True, "deviceId": None}, "W"),
        ("tracking", {"trackerId": "x" * 257}, "W"),
    ],
)
def test_record_key_prefers_booking_then_drop_then_device(
    family: webhooks.Family, body: dict[str, object], key: str
) -> None:
    """batchId, then trackingId (deliveries); trackerId, then deviceId; else the id."""
    assert webhooks.record_key(family, body, "W") == key


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"eventTime": "2025-06-14T09:12:03.123456Z"}, "2025-06-14T09:12:03.123Z"),
        ({"eventTime": "2025-06-14T10:12:03+01:00"}, "2025-06-14T09:12:03.000Z"),
        (
            {"timestamp": "2025-06-14T09:12:03Z", "createdAt": "x"},
            "2025-06-14T09:12:03.000Z",
        ),
        ({"updatedAt": "2025-06-14T09:12:03.5Z"}, "2025-06-14T09:12:03.500Z"),
        ({"createdAt": "2025-06-15T18:22:09.544Z"}, "2025-06-15T18:22:09.544Z"),
        ({"eventTime": "2025-06-14T09:12:03", "createdAt": "nope"}, None),
        ({"eventTime": 1749892323}, None),
        ({"eventTime": "0001-01-01T00:00:00+01:00"}, None),
        ({}, None),
    ],
)
def test_event_time_takes_the_first_usable_timestamp(
    body: dict[str, object], expected: str | None
) -> None:
    """Times with an offset are normalised to UTC ms; naive or odd ones are skipped."""
    assert webhooks.event_time(body) == expected


# -- the record --------------------------------------------------------------------


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_every_kind_becomes_one_record_with_the_body_verbatim(kind: str) -> None:
    """The value is the body byte for byte; headers follow the CloudEvents contract."""
    payload = FACTORY.build(kind)
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    plan = webhooks.plan(
        inbound(raw), TOPICS, verified_by="webhook_id", received_at=RECEIVED_AT
    )
    spec = KINDS[kind]
    assert plan.family == spec.family
    assert plan.rejection is None
    assert plan.dedupe_key == payload["webhookId"]
    record = plan.record
    assert record.value == raw
    assert record.topic == ("d" if spec.family == "delivery" else "t")
    headers = headers_of(record)
    assert headers["ce_id"] == payload["webhookId"]
    assert headers["ce_type"] == f"com.sendstack.webhook.{spec.event_type}.v1"
    assert headers["ce_source"] == "/sendstack/webhooks"
    assert headers["ce_bridgereceivedat"] == RECEIVED_AT
    assert headers["ce_bridgeverifiedby"] == "webhook_id"
    assert headers["ce_time"] == "2025-06-14T09:12:05.500Z"
    expected_key = payload.get("batchId") or payload.get("trackerId")
    assert record.key == str(expected_key).encode()
    assert headers["ce_subject"] == headers["ce_partitionkey"] == expected_key
    assert record.dedupe_id == payload["webhookId"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"eventType": "order.new"}, "missing_webhook_id"),
        ({"eventType": "order.new", "webhookId": 7}, "missing_webhook_id"),
        ({"webhookId": "w1"}, "missing_event_type"),
        ({"webhookId": "w1", "eventType": ["order.new"]}, "missing_event_type"),
        ({"webhookId": "w1", "eventType": "order new"}, "invalid_event_type"),
        ({"webhookId": "w1", "eventType": ""}, "invalid_event_type"),
        ({"webhookId": "w1", "eventType": "x" * 101}, "invalid_event_type"),
        ({"webhookId": "w1", "eventType": "wallet.funded"}, "unknown_event_type"),
    ],
)
def test_verified_but_unusable_bodies_are_dead_lettered_whole(
    body: dict[str, object], reason: str
) -> None:
    """Each unusable body goes verbatim to the dead-letter topic with its reason."""
    parsed = inbound(body)
    plan = webhooks.plan(parsed, TOPICS, verified_by="payload", received_at=RECEIVED_AT)
    assert plan.family == "dead_letter"
    assert plan.rejection is not None
    assert plan.rejection.reason == reason
    assert reason in webhooks.DEAD_LETTER_REASONS
    assert plan.record.topic == "q"
    assert plan.record.key is None
    assert plan.record.value == parsed.raw
    headers = headers_of(plan.record)
    assert headers["bridge_dlq_reason"] == reason
    assert headers["bridge_dlq_origin"] == "webhook"
    assert headers["content-type"] == "application/json"
    assert "w1" not in headers["bridge_dlq_detail"]


def test_a_body_without_webhook_id_is_deduplicated_by_its_digest() -> None:
    """Retries of a body without webhookId share a sha256 dedupe key."""
    raw = b'{"eventType":"order.new"}'
    plan = webhooks.plan(
        inbound(raw), TOPICS, verified_by="payload", received_at=RECEIVED_AT
    )
    assert plan.dedupe_key == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_an_oversize_body_is_dead_lettered_truncated_with_its_digest() -> None:
    """A verified body over the record limit goes to the DLQ cut, with its SHA-256."""
    payload = {"eventType": "order.new", "webhookId": "w1", "blob": "x" * 2_000}
    parsed = inbound(payload)
    plan = webhooks.plan(
        parsed,
        TOPICS,
        verified_by="webhook_id",
        received_at=RECEIVED_AT,
        max_value_bytes=1_000,
    )
    assert plan.rejection is not None
    assert plan.rejection.reason == "oversize"
    assert plan.record.value == parsed.raw[:1_000]
    headers = headers_of(plan.record)
    assert headers["bridge_dlq_truncated"] == "true"
    assert headers["bridge_dlq_sha256"] == hashlib.sha256(parsed.raw).hexdigest()
    assert plan.dedupe_key == "w1"


def test_ce_type_refuses_unusable_names() -> None:
    """ce_type keeps the name as sent and refuses what a header should not hold."""
    assert webhooks.ce_type("order.new") == "com.sendstack.webhook.order.new.v1"
    for bad in ("", "a b", ".x", "ü", "x" * 101):
        with pytest.raises(ValueError, match="usable"):
            webhooks.ce_type(bad)


def test_topics_per_family() -> None:
    """Each family has its own topic."""
    assert TOPICS.of("delivery") == "d"
    assert TOPICS.of("tracking") == "t"


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(9998, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_event_time_is_the_same_instant_whatever_the_spelling(
    instant: datetime, offset_minutes: int
) -> None:
    """toISOString's form passes as is; other offsets give the same UTC instant."""
    instant = instant.replace(microsecond=instant.microsecond // 1000 * 1000)
    js = instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"
    assert webhooks.event_time({"eventTime": js}) == js
    shifted = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert webhooks.event_time({"eventTime": shifted.isoformat()}) == js


# -- the HTTP answers -----------------------------------------------------------


def _request(
    body: bytes, *, path: str = "/hook", method: str = "POST", signature: str = ""
) -> webhooks.WebhookRequest:
    headers = {webhooks.SIGNATURE_HEADER: signature} if signature else {}
    return webhooks.WebhookRequest(method, path, headers, body)


@pytest.mark.parametrize(
    ("request_", "status", "outcome"),
    [
        (_request(b"{}", path="/other"), 404, "not_found"),
        (_request(b"{}", method="GET"), 405, "not_found"),
        (_request(b"x" * 65), 413, "too_large"),
        (_request(b"{}"), 401, "missing_signature"),
        (_request(b"[1]", signature="ab"), 400, "malformed"),
        (_request(b'{"webhookId":"w1"}', signature="00" * 32), 401, "bad_signature"),
    ],
)
def test_admit_answers_what_must_not_be_published(
    request_: webhooks.WebhookRequest, status: int, outcome: str
) -> None:
    """Path, method, size, signature and shape checks decide the status, in order."""
    reply = webhooks.admit(request_, path="/hook", max_body_bytes=64, verifier=BOTH)
    assert isinstance(reply, webhooks.WebhookReply)
    assert (reply.status, reply.outcome) == (status, outcome)


def test_admit_lets_a_verified_webhook_through_with_its_scheme() -> None:
    """A body signed with the current scheme is admitted, parsed, not answered."""
    raw = orjson.dumps({"webhookId": "w1", "eventType": "order.new"})
    signature = hmac_hex(b'"w1"')
    admitted = webhooks.admit(
        _request(raw, signature=signature),
        path="/hook",
        max_body_bytes=1024,
        verifier=BOTH,
    )
    assert isinstance(admitted, webhooks.Admitted)
    assert (admitted.scheme, admitted.inbound.webhook_id) == ("webhook_id", "w1")


def test_published_and_unavailable_replies_carry_the_documented_statuses() -> None:
    """200 once Kafka holds it; 503 with Retry-After while it does not."""
    assert webhooks.published_reply("accepted", "w1").status == 200
    busy = webhooks.unavailable_reply("w1", 5)
    assert (busy.status, busy.retry_after, busy.body()["ok"]) == (503, 5, False)
