"""Payload specs: one tree both validates a payload and renders its JSON Schema.

A spec is built from the small :class:`Str`, :class:`Num`, :class:`Obj`...
nodes below. :meth:`Spec.check` returns the first problem of a value (a
detail text naming the field, never repeating its value); :meth:`Spec.schema`
renders the equivalent JSON Schema (draft 2020-12) fragment. Because both
come from the same tree, the schemas shipped in ``bridge/schemas/commands/``
and the validator cannot drift apart.

The helpers at the end (:func:`text`, :func:`sendstack_id`, :func:`code`,
:func:`day`, :func:`drop_ids`) are the field shapes that recur across
Sendstack payloads. The command types themselves are in
``bridge/core/command_types.py``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

__all__ = [
    "CODE",
    "DECIMAL",
    "ID",
    "PRINTABLE_128",
    "SCHEMA_DIALECT",
    "Arr",
    "Bool",
    "Coordinate",
    "Num",
    "Obj",
    "Rule",
    "Spec",
    "Str",
    "clip",
    "code",
    "day",
    "drop_ids",
    "field_name",
    "sendstack_id",
    "text",
]

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_DETAIL_LIMIT: Final = 300
_NAME_LIMIT: Final = 40

# Patterns are ECMA-262 compatible (they go into the JSON Schemas verbatim)
# and are applied with re.fullmatch here; [0-9] rather than \d, which in
# Python also matches non-ASCII digits.
PRINTABLE_128: Final = r"^[^\u0000-\u001f\u007f]{1,128}$"
# Sendstack ids are 24 hex characters (api doc §12); we accept a little more,
# but never a character that could change a URL path.
ID: Final = r"^[A-Za-z0-9_-]{1,64}$"
_ID_TEXT: Final = "1 to 64 letters, digits, '_' or '-'"
# batchId / trackingId: 6 upper-case letters and digits in every sample.
CODE: Final = r"^[A-Za-z0-9]{1,32}$"
_CODE_TEXT: Final = "1 to 32 letters or digits"
_DATE: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DECIMAL: Final = r"^-?[0-9]{1,3}(\.[0-9]{1,15})?$"


def clip(text: str, limit: int = _DETAIL_LIMIT) -> str:
    """``text``, cut to ``limit`` characters (ending in ``...`` when cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_name(key: str) -> str:
    """A field name from the input, quoted and bounded for a detail text."""
    return repr(clip(key, _NAME_LIMIT))


# --------------------------------------------------------------------------
# Nodes


class Spec(ABC):
    """A node of a payload spec."""

    __slots__ = ()

    @abstractmethod
    def check(self, value: object, path: str) -> str | None:
        """The first problem of ``value`` (at ``path``), or None."""

    @abstractmethod
    def schema(self) -> dict[str, Any]:
        """The equivalent JSON Schema (draft 2020-12) fragment."""


def _with_description(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, **schema} if description else schema


@dataclass(frozen=True, slots=True)
class Str(Spec):
    description: str = ""
    pattern: str | None = None
    pattern_text: str = ""
    max_length: int = 500
    enum: tuple[str, ...] | None = None
    calendar_date: bool = False  # also a real date (schema: format "date")

    def check(self, value: object, path: str) -> str | None:
        if not isinstance(value, str):
            return f"{path}: must be a string"
        if self.enum is not None:
            if value not in self.enum:
                return f"{path}: must be one of {', '.join(self.enum)}"
            return None
        if not value:
            return f"{path}: must not be empty"
        if len(value) > self.max_length:
            return f"{path}: must be at most {self.max_length} characters"
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            return f"{path}: must be {self.pattern_text}"
        if self.calendar_date:
            try:
                date.fromisoformat(value)
            except ValueError:
                return f"{path}: must be a real date"
        return None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        else:
            out["minLength"] = 1
            out["maxLength"] = self.max_length
            if self.pattern is not None:
                out["pattern"] = self.pattern
            if self.calendar_date:
                out["format"] = "date"
        return _with_description(out, self.description)


@dataclass(frozen=True, slots=True)
class Num(Spec):
    description: str = ""
    integer: bool = False
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None

    def check(self, value: object, path: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{path}: must be {'an integer' if self.integer else 'a number'}"
        if self.integer and not isinstance(value, int):
            return f"{path}: must be an integer"
        if self.minimum is not None and value < self.minimum:
            return f"{path}: must be at least {self.minimum:g}"
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            return f"{path}: must be greater than {self.exclusive_minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"{path}: must be at most {self.maximum:g}"
        return None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.exclusive_minimum is not None:
            out["exclusiveMinimum"] = self.exclusive_minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return _with_description(out, self.description)


@dataclass(frozen=True, slots=True)
class Coordinate(Spec):
    """A number in range, or a decimal string (the legacy samples send strings)."""

    description: str
    limit: float

    def check(self, value: object, path: str) -> str | None:
        if isinstance(value, str):
            if re.fullmatch(DECIMAL, value) is None:
                return f"{path}: must be a number or a decimal string"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{path}: must be a number or a decimal string"
        if not -self.limit <= value <= self.limit:
            return f"{path}: must be within -{self.limit:g}..{self.limit:g}"
        return None

    def schema(self) -> dict[str, Any]:
        return _with_description(
            {
                "anyOf": [
                    {
                        "type": "number",
                        "minimum": -self.limit,
                        "maximum": self.limit,
                    },
                    {"type": "string", "pattern": DECIMAL},
                ]
            },
            self.description,
        )


@dataclass(frozen=True, slots=True)
class Bool(Spec):
    description: str = ""

    def check(self, value: object, path: str) -> str | None:
        return None if isinstance(value, bool) else f"{path}: must be true or false"

    def schema(self) -> dict[str, Any]:
        return _with_description({"type": "boolean"}, self.description)


@dataclass(frozen=True, slots=True)
class Arr(Spec):
    items: Spec
    description: str = ""
    min_items: int = 1
    max_items: int = 100

    def check(self, value: object, path: str) -> str | None:
        if not isinstance(value, list):
            return f"{path}: must be an array"
        if len(value) < self.min_items:
            return f"{path}: must have at least {self.min_items} item(s)"
        if len(value) > self.max_items:
            return f"{path}: must have at most {self.max_items} items"
        for index, item in enumerate(value):
            problem = self.items.check(item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None

    def schema(self) -> dict[str, Any]:
        return _with_description(
            {
                "type": "array",
                "minItems": self.min_items,
                "maxItems": self.max_items,
                "items": self.items.schema(),
            },
            self.description,
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """When ``field`` is one of ``values``, ``then`` applies as well."""

    field: str
    values: tuple[str, ...]
    then: Obj

    def schema(self) -> dict[str, Any]:
        return {
            "if": {
                "properties": {self.field: {"enum": list(self.values)}},
                "required": [self.field],
            },
            "then": self.then.schema(),
        }


@dataclass(frozen=True, slots=True)
class Obj(Spec):
    properties: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    description: str = ""
    extra: bool = False  # True: unknown keys allowed (dashboard custom fields)
    any_of: tuple[tuple[str, ...], ...] = ()  # one of these groups complete
    one_of: tuple[tuple[str, ...], ...] = ()  # exactly one of these groups
    groups_text: str = ""
    rules: tuple[Rule, ...] = ()

    def check(self, value: object, path: str) -> str | None:
        if not isinstance(value, dict):
            return f"{path}: must be an object"
        for name in self.required:
            if name not in value:
                return f"{path}.{name}: is required"
        if not self.extra:
            for key in value:
                if key not in self.properties:
                    return f"{path}: unknown field {field_name(str(key))}"
        for key, spec in self.properties.items():
            if key in value:
                problem = spec.check(value[key], f"{path}.{key}")
                if problem is not None:
                    return problem
        if self.any_of and not any(
            all(name in value for name in group) for group in self.any_of
        ):
            return f"{path}: needs {self.groups_text}"
        if self.one_of:
            complete = sum(all(n in value for n in group) for group in self.one_of)
            if complete != 1:
                return f"{path}: needs exactly one of {self.groups_text}"
        for rule in self.rules:
            if value.get(rule.field) in rule.values:
                problem = rule.then.check(value, path)
                if problem is not None:
                    return problem
        return None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.required:
            out["required"] = list(self.required)
        out["properties"] = {k: s.schema() for k, s in self.properties.items()}
        if not self.extra:
            out["additionalProperties"] = False
        if self.any_of:
            out["anyOf"] = [{"required": list(g)} for g in self.any_of]
        if self.one_of:
            out["oneOf"] = [{"required": list(g)} for g in self.one_of]
        if self.rules:
            out["allOf"] = [rule.schema() for rule in self.rules]
        return _with_description(out, self.description)


# --------------------------------------------------------------------------
# Field shapes that recur across Sendstack payloads


def text(description: str, max_length: int = 500) -> Str:
    """A non-empty string of at most ``max_length`` characters."""
    return Str(description, max_length=max_length)


def sendstack_id(description: str) -> Str:
    """An id Sendstack issues (safe in a URL path)."""
    return Str(description, pattern=ID, pattern_text=_ID_TEXT, max_length=64)


def code(description: str) -> Str:
    """A batch id or tracking id."""
    return Str(description, pattern=CODE, pattern_text=_CODE_TEXT, max_length=32)


def day(description: str) -> Str:
    """A calendar date ``YYYY-MM-DD`` that exists."""
    return Str(
        description,
        pattern=_DATE,
        pattern_text="a date YYYY-MM-DD",
        max_length=10,
        calendar_date=True,
    )


def drop_ids(description: str = "Drop ids (24 hex characters).") -> Arr:
    """1 to 100 drop ids."""
    return Arr(sendstack_id("A drop id."), description)
