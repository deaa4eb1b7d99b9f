"""The webhook JSON Schemas: well formed, in step with the code, and met by records."""

from __future__ import annotations

import json

import orjson
import pytest

from bridge.core import webhooks
from bridge.core.codec import FrameRejection
from bridge.core.records import OutboundRecord, Topics, dead_letter_record, iso_ms
from bridgelab.emulator.webhooks import (
    WEBHOOK_KINDS,
    PayloadFactory,
    load_webhook_kinds,
)
from tests.core.test_schemas import errors, load
from tests.schema_check import check_schema

NAMES = ["webhook_headers", "webhook_delivery", "webhook_tracking"]
HEADERS = load("webhook_headers.v1.json")
DLQ_HEADERS = load("dead_letter_headers.v1.json")
BY_URN = {load(f"{n}.v1.json")["$id"]: load(f"{n}.v1.json") for n in NAMES}
FACTORY = PayloadFactory(load_webhook_kinds(), seed=11)
TOPICS = webhooks.WebhookTopics()
RECEIVED_AT = iso_ms(1_749_892_325.5)


def decoded(record: OutboundRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


@pytest.mark.parametrize("name", NAMES)
def test_webhook_schema_files_are_well_formed(name: str) -> None:
    """Each schema is a valid 2020-12 schema with its file's URN as $id."""
    schema = load(f"{name}.v1.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:sendstack-bridge:schema:{name}:v1"
    check_schema(schema)
    for sub in schema["properties"].values():
        assert "description" in sub


def test_schemas_are_in_step_with_the_code() -> None:
    """ce_dataschema and ce_bridgeverifiedby enums list what the code emits."""
    properties = HEADERS["properties"]
    assert set(properties["ce_dataschema"]["enum"]) == set(
        webhooks.DATA_SCHEMAS.values()
    )
    assert set(properties["ce_dataschema"]["enum"]) <= set(BY_URN)
    assert tuple(properties["ce_bridgeverifiedby"]["enum"]) == webhooks.SCHEMES


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
@pytest.mark.parametrize("scheme", webhooks.SCHEMES)
def test_records_of_every_kind_validate(kind: str, scheme: webhooks.Scheme) -> None:
    """Headers and value of each kind's record validate against their schemas."""
    raw = json.dumps(FACTORY.build(kind), separators=(",", ":")).encode()
    parsed = webhooks.parse(raw)
    assert isinstance(parsed, webhooks.Inbound)
    plan = webhooks.plan(parsed, TOPICS, verified_by=scheme, received_at=RECEIVED_AT)
    headers = decoded(plan.record)
    assert errors(HEADERS, headers) == []
    assert set(headers) <= set(HEADERS["properties"])
    assert errors(BY_URN[headers["ce_dataschema"]], orjson.loads(raw)) == []


def test_the_schemas_refuse_what_breaks_the_contract() -> None:
    """A value without webhookId, or a foreign ce_type, does not validate."""
    value_schema = BY_URN["urn:sendstack-bridge:schema:webhook_delivery:v1"]
    assert errors(value_schema, {"eventType": "order.new"}) != []
    assert errors(value_schema, {"eventType": "order.new", "webhookId": ""}) != []
    assert errors(HEADERS, {"ce_type": "com.sendstack.tracking.position.v1"}) != []
    good = {"eventType": "order.new", "webhookId": "w", "anything": {"kept": [1]}}
    assert errors(value_schema, good) == []


@pytest.mark.parametrize("reason", webhooks.DEAD_LETTER_REASONS)
def test_webhook_dead_letters_validate(reason: str) -> None:
    """Every webhook dead-letter reason gives headers that fit the DLQ schema."""
    record = dead_letter_record(
        b'{"eventType":1}',
        FrameRejection(reason, "eventType: missing or not a string"),
        Topics(dead_letter=TOPICS.dead_letter),
        received_at=RECEIVED_AT,
        origin="webhook",
    )
    headers = decoded(record)
    assert errors(DLQ_HEADERS, headers) == []
    assert headers["bridge_dlq_origin"] == "webhook"
