"""Value helpers that compiled rules call: paths, times in every format, extra.

The hot checks (types, ranges) are written inline by the rule compiler; what
is here is shared by all rules and too long to inline. Ids and ISO-8601 times
use the very functions of the hand-written codec (``bridge.core.codec``), so
a mapping normalises them exactly as it does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from bridge.core.codec import Invalid, iso_of_utc, parse_time

__all__ = [
    "dig",
    "extra_of",
    "not_a_number",
    "parse_object",
    "time_epoch_ms",
    "time_epoch_s",
    "time_epoch_us",
    "time_iso_utc_if_no_zone",
]

_TIME_MAX: Final = 64
# Naive on purpose: only ever combined with naive UTC datetimes.
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)  # noqa: DTZ001
_fromiso = datetime.fromisoformat

#: A tree of consumed upstream keys: ``None`` marks a key consumed whole.
ConsumedTree = Mapping[str, "ConsumedTree | None"]


def dig(value: object, segments: tuple[str | int, ...]) -> object:
    """Follow a path; ``None`` as soon as a step is missing or not a container."""
    for segment in segments:
        if type(value) is dict:
            value = value.get(segment)
        elif type(value) is list and type(segment) is int:
            value = value[segment] if segment < len(value) else None
        else:
            return None
        if value is None:
            return None
    return value


def not_a_number(labels: tuple[str, ...], values: tuple[object, ...]) -> Invalid:
    """The problem of the first of ``values`` that is neither a number nor null."""
    for label, value in zip(labels, values, strict=True):
        if type(value) not in (int, float, type(None)):
            return Invalid("invalid_item", f"{label}: must be a number")
    return Invalid("invalid_item", f"{labels[-1]}: must be a number")


def parse_object(value: object, label: str) -> dict[str, object]:
    """Accept a JSON object (kept whole, not copied); null becomes ``{}``."""
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise Invalid("invalid_item", f"{label}: must be an object")


def extra_of(obj: dict[str, object], tree: ConsumedTree) -> dict[str, object]:
    """What ``obj`` holds beyond ``tree``: nested objects keep their unmapped keys."""
    extra: dict[str, object] = {}
    for key, value in obj.items():
        if key not in tree:
            extra[key] = value
            continue
        sub = tree[key]
        if sub is not None and type(value) is dict:
            rest = extra_of(value, sub)
            if rest:
                extra[key] = rest
    return extra


def time_iso_utc_if_no_zone(value: object, label: str) -> tuple[str, int]:
    """ISO-8601; a time without an offset is read as UTC (the mapping says so)."""
    if type(value) is not str:
        raise Invalid("invalid_item", f"{label}: must be an ISO-8601 string")
    if value.endswith("Z") or (value[-6:-5] in ("+", "-") and value[-3:-2] == ":"):
        return parse_time(value, label)
    if len(value) > _TIME_MAX:
        raise Invalid("invalid_item", f"{label}: not an ISO-8601 timestamp")
    try:
        parsed = _fromiso(value)
    except ValueError:
        raise Invalid("invalid_item", f"{label}: not an ISO-8601 timestamp") from None
    offset = parsed.utcoffset()
    naive = parsed.replace(tzinfo=None)
    try:
        return iso_of_utc(naive if offset is None else naive - offset)
    except OverflowError:
        raise Invalid("invalid_item", f"{label}: timestamp out of range") from None


def _from_ms(millis: int, label: str) -> tuple[str, int]:
    try:
        return iso_of_utc(_EPOCH_NAIVE + timedelta(milliseconds=millis))
    except OverflowError:
        raise Invalid("invalid_item", f"{label}: timestamp out of range") from None


def _epoch_number(value: object, label: str) -> float | int:
    if type(value) is int or type(value) is float:
        if type(value) is float and not math.isfinite(value):
            raise Invalid("invalid_item", f"{label}: must be a finite number")
        return value
    raise Invalid("invalid_item", f"{label}: must be an epoch number")


def time_epoch_s(value: object, label: str) -> tuple[str, int]:
    """Epoch seconds; a fraction is rounded to the millisecond (float noise)."""
    number = _epoch_number(value, label)
    return _from_ms(
        number * 1000 if type(number) is int else round(number * 1000), label
    )


def time_epoch_ms(value: object, label: str) -> tuple[str, int]:
    """Epoch milliseconds; sub-millisecond fractions are truncated."""
    number = _epoch_number(value, label)
    return _from_ms(number if type(number) is int else math.floor(number), label)


def time_epoch_us(value: object, label: str) -> tuple[str, int]:
    """Epoch microseconds, truncated to the millisecond."""
    number = _epoch_number(value, label)
    return _from_ms(int(number // 1000), label)
