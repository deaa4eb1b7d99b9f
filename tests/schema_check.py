"""Validate instances against our JSON Schemas (draft 2020-12) with jsonschema.

One validator for every schema test: the record, webhook and command schemas
are checked as JSON Schema itself defines them, not by a hand-written subset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise if ``schema`` is not a valid draft 2020-12 schema."""
    Draft202012Validator.check_schema(schema)


def schema_errors(
    schema: Mapping[str, Any],
    instance: object,
    refs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Every problem of ``instance``, as ``path: keyword: message`` lines.

    ``refs`` maps ``$id`` URNs to the schemas a ``$ref`` may name.
    """
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(dict(s), default_specification=DRAFT202012))
        for uri, s in (refs or {}).items()
    )
    validator = Draft202012Validator(dict(schema), registry=registry)
    return [
        "$"
        + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        + f": {e.validator}: {e.message}"
        for e in validator.iter_errors(instance)
    ]
