"""A mapping file's text: parsed, located and checked, every problem listed.

A user edits this file on their first day with the real wire, so a mistake
must come back as a list of every problem, each with its place (line and
JSON path), never as a traceback or as the first error only. Two passes:

1. the JSON Schema shipped in the package (``bridge/schemas/mapping.v1.json``)
   checks the structure;
2. :func:`_semantic_problems` checks what a schema cannot: rules that exist,
   fields the contract knows, the contract's required fields mapped, options
   that fit the field's type, canonical event types, identity fields.

The file is YAML (JSON is YAML too). YAML 1.1 reads ``on``/``off``/``yes``/
``no`` as booleans, which turns an enum table's ``ON: online`` into
``True: online``: any key that is not a string is reported with a hint to
quote it, instead of being silently misread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from bridge.core.codec import CANONICAL_EVENT_TYPES
from bridge.core.mapping.contract import CONTRACT, Target

__all__ = ["MappingProblem", "ParsedMapping", "check", "parse"]

_MAX_PROBLEMS: Final = 100
_TIME_ONLY: Final = ("format",)
_SPEED_ONLY: Final = ("unit",)
_ENUM_TYPES: Final = frozenset({"event_type", "label", "text"})


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """One problem in a mapping file.

    Attributes:
        path: Where, as a JSON path (``$.rules.position.fields.speed.unit``).
        line: The line in the file (1-based), when known.
        message: What is wrong, and what would be right.
    """

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}, {self.path}" if self.line else self.path
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class ParsedMapping:
    """The document and, for each JSON path, the line it starts on."""

    document: object
    lines: Mapping[str, int]


def parse(text: str) -> tuple[ParsedMapping | None, list[MappingProblem]]:
    """Parse YAML (or JSON) text into a document and its line index."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or "not valid YAML"
        return None, [MappingProblem("$", line, f"not valid YAML: {problem}")]
    lines: dict[str, int] = {}
    if node is not None:
        _index_lines(node, "$", lines)
    return ParsedMapping(document, lines), []


def _index_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            child = f"{path}.{name}"
            lines.setdefault(child, key.start_mark.line + 1)
            _index_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            _index_lines(value, f"{path}[{index}]", lines)


def check(parsed: ParsedMapping, schema: Mapping[str, Any]) -> list[MappingProblem]:
    """Every problem of a parsed mapping (empty when it can be compiled)."""
    doc = parsed.document
    problems = list(_non_string_keys(doc, "$"))
    doc = _string_keys(doc)  # check the rest as if the keys had been quoted
    validator = Draft202012Validator(schema)
    errors = [_precise(e) for e in validator.iter_errors(doc)]
    errors.sort(key=lambda e: e.json_path)
    problems.extend(
        MappingProblem(error.json_path, None, _message(error)) for error in errors
    )
    # The checks a schema cannot make, on every part the schema found sound.
    broken = tuple(error.json_path for error in errors)
    if not any(path in ("$", "$.rules") for path in broken):
        problems.extend(_semantic_problems(doc, broken))
    located = [
        MappingProblem(p.path, _line(parsed.lines, p.path), p.message)
        for p in problems[:_MAX_PROBLEMS]
    ]
    if len(problems) > _MAX_PROBLEMS:
        located.append(
            MappingProblem("$", None, f"and {len(problems) - _MAX_PROBLEMS} more")
        )
    return located


def _line(lines: Mapping[str, int], path: str) -> int | None:
    # A problem about a missing key is placed on its nearest existing parent.
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            return lines.get("$")
        path = path[:cut]
    return None


def _precise(error: ValidationError) -> ValidationError:
    """For "matches none of the forms", the error of the form that came closest."""
    while error.validator == "oneOf" and error.context:
        # A form of another JSON type says only "is not of type": skip those.
        fitting = [e for e in error.context if e.validator != "type"]
        closest = best_match(fitting or error.context)
        if closest is None:
            break
        error = closest
    return error


def _message(error: Any) -> str:
    # jsonschema's oneOf message dumps the whole instance; say it shortly.
    if error.validator == "oneOf":
        return "does not match any allowed form (see bridge/schemas/mapping.v1.json)"
    message: str = error.message
    return message if len(message) <= 200 else message[:197] + "..."


def _string_keys(value: object) -> object:
    if isinstance(value, dict):
        return {str(key): _string_keys(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_string_keys(child) for child in value]
    return value


def _non_string_keys(value: object, path: str) -> Iterator[MappingProblem]:
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str):
                yield MappingProblem(
                    f"{path}.{key}",
                    None,
                    f"key {key!r} is not a string: YAML reads on/off/yes/no and"
                    " numbers as such; quote it, e.g. 'ON'",
                )
            else:
                yield from _non_string_keys(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _non_string_keys(child, f"{path}[{index}]")


def _semantic_problems(doc: Any, broken: tuple[str, ...]) -> Iterator[MappingProblem]:
    def sound(path: str) -> bool:
        return not any(
            b == path or b.startswith((path + ".", path + "[")) for b in broken
        )

    rules: dict[str, Any] = doc["rules"]
    if sound("$.message"):
        used: set[str] = set()
        yield from _selector_problems(
            doc["message"]["select"], "$.message.select", rules, used
        )
        for name in rules:
            if name not in used:
                yield MappingProblem(
                    f"$.rules.{name}", None, "rule is never used by message.select"
                )
    for name, rule in rules.items():
        # A rule with a schema error is still checked, as far as its shape
        # allows, so that one mistake does not hide the others.
        try:
            found = list(_rule_problems(rule, f"$.rules.{name}"))
        except (KeyError, TypeError, AttributeError):
            continue
        yield from (p for p in found if p.path not in broken)


def _selector_problems(
    selector: Any, path: str, rules: Mapping[str, Any], used: set[str]
) -> Iterator[MappingProblem]:
    if selector == "ignore":
        return
    if "rule" in selector:
        name = selector["rule"]
        used.add(name)
        if name not in rules:
            known = ", ".join(sorted(rules))
            yield MappingProblem(
                f"{path}.rule", None, f"no rule named {name!r} (rules: {known})"
            )
    if "each" in selector:
        yield from _selector_problems(selector["each"], f"{path}.each", rules, used)
    for key, case in selector.get("sections", {}).items():
        yield from _selector_problems(case, f"{path}.sections.{key}", rules, used)
    switch = selector.get("switch")
    if switch is not None:
        for key, case in switch["cases"].items():
            yield from _selector_problems(
                case, f"{path}.switch.cases.{key}", rules, used
            )


def _rule_problems(rule: Any, path: str) -> Iterator[MappingProblem]:
    targets = {t.name: t for t in CONTRACT[rule["kind"]]}
    fields: dict[str, Any] = rule["fields"]
    for name, spec in fields.items():
        where = f"{path}.fields.{name}"
        target = targets.get(name)
        if target is None:
            known = ", ".join(targets)
            yield MappingProblem(
                where, None, f"{rule['kind']} records have no field {name!r} ({known})"
            )
            continue
        if isinstance(spec, dict):
            yield from _field_problems(target, spec, where)
    for target in targets.values():
        if target.required and target.name not in fields:
            yield MappingProblem(
                f"{path}.fields",
                None,
                f"{target.name} is required in {rule['kind']} records: map it",
            )
    for index, name in enumerate(rule.get("identity", ())):
        if name not in targets:
            yield MappingProblem(
                f"{path}.identity[{index}]", None, f"{name!r} is not a field"
            )
        elif name == "speed" or targets[name].type == "object":
            yield MappingProblem(
                f"{path}.identity[{index}]",
                None,
                f"{name!r} cannot be part of an identity (use ids, times or labels)",
            )


def _field_problems(
    target: Target, spec: Mapping[str, Any], where: str
) -> Iterator[MappingProblem]:
    kind = target.type
    if "format" in spec and kind != "time":
        yield MappingProblem(
            f"{where}.format", None, "format applies to time fields only"
        )
    if "unit" in spec and kind != "speed":
        yield MappingProblem(f"{where}.unit", None, "unit applies to speed only")
    if "enum" in spec and kind not in _ENUM_TYPES:
        yield MappingProblem(
            f"{where}.enum", None, f"enum does not apply to a {kind} field"
        )
    if "others" in spec and ("enum" not in spec or kind == "event_type"):
        yield MappingProblem(
            f"{where}.others",
            None,
            "others applies to an enum of a text field (eventType always rejects)",
        )
    if kind == "event_type":
        if "enum" not in spec:
            yield MappingProblem(where, None, "eventType needs an enum table")
        else:
            yield from _event_enum_problems(spec["enum"], f"{where}.enum")
    elif "enum" in spec:
        for key, value in spec["enum"].items():
            if not isinstance(value, str):
                yield MappingProblem(
                    f"{where}.enum.{key}", None, "a nested lookup is for eventType only"
                )
    if "default" in spec:
        yield from _default_problems(target, spec["default"], f"{where}.default")


def _event_enum_problems(
    table: Mapping[str, Any], where: str
) -> Iterator[MappingProblem]:
    canonical = ", ".join(sorted(CANONICAL_EVENT_TYPES))
    for key, value in table.items():
        values = value["enum"].items() if isinstance(value, dict) else [(key, value)]
        for sub_key, name in values:
            if name not in CANONICAL_EVENT_TYPES:
                place = (
                    f"{where}.{key}"
                    if sub_key == key
                    else f"{where}.{key}.enum.{sub_key}"
                )
                yield MappingProblem(
                    place, None, f"{name!r} is not an event type ({canonical})"
                )


_DEFAULT_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "id": (int, str),
    "ref": (int, str),
    "time": (int, float, str),
    "text": (str,),
    "label": (str,),
    "latitude": (int, float),
    "longitude": (int, float),
    "number": (int, float),
    "speed": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "event_type": (str,),
}


def _default_problems(
    target: Target, default: object, where: str
) -> Iterator[MappingProblem]:
    allowed = _DEFAULT_TYPES[target.type]
    if isinstance(default, bool) and bool not in allowed:
        allowed = ()
    if default is not None and not isinstance(default, allowed):
        names = " or ".join(t.__name__ for t in allowed) or "no boolean"
        yield MappingProblem(
            where, None, f"a {target.type} field's default must be {names}"
        )
