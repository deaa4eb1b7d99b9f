"""The example mappings in docs/examples/ read the emulator's other wires faithfully.

For the same fleet batches, each example mapping applied to the shape's
messages must give the records the shipped mapping gives for today's wire:
the same ce_ids, kinds, keys, instants and event types, and the same speeds
up to the float rounding of a unit conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import orjson
import pytest

from bridge.adapters.mapping_files import read_mapping
from bridge.core.codec import Item
from bridge.core.mapping import MappingCodec
from bridgelab.emulator.fleet import Fleet, load_fixtures
from bridgelab.emulator.wire import Wire

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"


def codec_of(path: Path | None) -> MappingCodec:
    """Compile a mapping file (None: the shipped one)."""
    codec, problems = read_mapping(
        None if path is None else str(path), max_frame_bytes=1 << 20
    )
    assert problems == [], [str(p) for p in problems]
    assert codec is not None
    return codec


def facts(item: Item) -> tuple[object, ...]:
    """What must survive any wire: identity, key, time, kind and type."""
    data = item.data
    status = data.get("status")
    return (
        item.kind,
        item.event_id,
        item.device_id,
        item.event_time,
        item.event_type,
        status,
        data.get("latitude"),
        data.get("positionId"),
    )


@pytest.mark.parametrize(
    ("example", "shape", "transport"),
    [
        ("typed-object-socketio.yaml", "typed-object", "socketio"),
        ("mixed-batch.yaml", "mixed-batch", "websocket"),
    ],
)
@pytest.mark.parametrize("names", ["traccar", "sendstack"])
def test_an_example_mapping_gives_the_records_of_today_s_wire(
    example: str,
    shape: Literal["typed-object", "mixed-batch"],
    transport: Literal["websocket", "socketio"],
    names: Literal["traccar", "sendstack"],
) -> None:
    """500 batches: same facts and ids, speeds within rounding, 0 dead letters."""
    fleet = Fleet(
        load_fixtures(),
        devices=40,
        seed=3,
        events_ratio=0.4,
        status_ratio=0.3,
        event_names=names,
    )
    today, other = Wire(fleet), Wire(fleet, shape, transport)
    shipped, mapping = codec_of(None), codec_of(EXAMPLES / example)
    compared = 0
    for _ in range(500):
        batch = fleet.burst(6)
        expected = [
            i for f in today.batch(batch) for i in shipped.decode(f.payload).items
        ]
        got: list[Item] = []
        for frame in other.batch(batch):
            raw = (
                orjson.dumps([frame.event, frame.data])
                if transport == "socketio"
                else frame.payload
            )
            decoded = mapping.decode(raw)
            assert decoded.rejection is None, decoded.rejection
            got.extend(decoded.items)
        # Today's wire groups a batch by section; the others keep seq order.
        got.sort(key=lambda i: i.event_id)
        expected.sort(key=lambda i: i.event_id)
        assert [facts(i) for i in got] == [facts(i) for i in expected]
        for new, old in zip(got, expected, strict=True):
            for key in ("speedKph", "speedKnots"):
                if old.data.get(key) is not None:
                    assert new.data[key] == pytest.approx(old.data[key], abs=1e-3)
        compared += len(got)
    assert compared > 3000
