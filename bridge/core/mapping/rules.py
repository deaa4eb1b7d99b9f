"""Compiles a mapping rule (item → record) into one plain Python function.

Theory of operation
-------------------
A mapping is read once, at start-up, and then applied to tens of thousands of
items per second. Interpreting it per item (a closure or a lookup per field)
costs several times what the hand-written codec does, so each rule is turned
into the source of one function that reads like that codec, straight-line
``get``\\ s, inline type tests, one dict literal, then compiled with
``compile``/``exec``.

Nothing a user wrote becomes code: field names, paths and labels enter the
source only through ``repr`` of a ``str`` (always a valid string literal), and
every other value (defaults, enum tables, key sets) is passed as a constant
in the function's namespace (``_c0``, ``_c1``, ...). Names in the source are
ours (``v0``, ``ms3``).

A rule function takes one item object and returns an
:class:`~bridge.core.codec.Item`, or raises ``Invalid`` whose detail names
the upstream path; the selector adds where the item was and the rule's name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from bridge.core.codec import (
    Invalid,
    Item,
    Kind,
    digest_id,
    make_item,
    name_of,
    parse_id,
    parse_opt_str,
    parse_ref_id,
    parse_time,
)
from bridge.core.mapping.contract import (
    CONTRACT,
    EVENT_TIME,
    ID_PREFIXES,
    SPEED_UNITS,
    Target,
)
from bridge.core.mapping.values import (
    dig,
    extra_of,
    not_a_number,
    parse_object,
    time_epoch_ms,
    time_epoch_s,
    time_epoch_us,
    time_iso_utc_if_no_zone,
)

__all__ = ["RuleFunction", "compile_rule"]

RuleFunction = Callable[[dict[str, object]], Item]

_LABEL_MAX: Final = 128
_KNOTS: Final = 1852
_TIME_FUNCTIONS: Final[Mapping[str, str]] = {
    "iso8601": "_time",
    "iso8601_utc_if_no_zone": "_time_utc",
    "epoch_s": "_epoch_s",
    "epoch_ms": "_epoch_ms",
    "epoch_us": "_epoch_us",
}
_BASE_NAMESPACE: Final[Mapping[str, object]] = {
    "_Invalid": Invalid,
    "_id": parse_id,
    "_ref_id": parse_ref_id,
    "_opt_str": parse_opt_str,
    "_time": parse_time,
    "_time_utc": time_iso_utc_if_no_zone,
    "_epoch_s": time_epoch_s,
    "_epoch_ms": time_epoch_ms,
    "_epoch_us": time_epoch_us,
    "_object": parse_object,
    "_dig": dig,
    "_extra": extra_of,
    "_digest": digest_id,
    "_item": make_item,
    "_name": name_of,
    "_NUM": frozenset({int, float, type(None)}),
    "_not_number": not_a_number,
}


def _segments(path: str) -> tuple[str | int, ...]:
    return tuple(int(s) if s.isdigit() else s for s in path.split("."))


@dataclass
class _Source:
    """The function being written: its lines and its constants."""

    lines: list[str] = field(default_factory=list)
    constants: dict[str, object] = field(default_factory=dict)

    def line(self, text: str, indent: int = 1) -> None:
        self.lines.append("    " * indent + text)

    def const(self, value: object) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name


def _paths(spec: object) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    path = cast("Mapping[str, Any]", spec)["path"]
    return [path] if isinstance(path, str) else list(path)


def _read(src: _Source, var: str, paths: list[str], indent: int = 1) -> None:
    """``var = <first non-null of paths>``, inline for the common one-key case."""
    first, *rest = paths
    segments = _segments(first)
    if len(segments) == 1 and isinstance(segments[0], str):
        src.line(f"{var} = get({segments[0]!r})", indent)
    else:
        src.line(f"{var} = _dig(obj, {src.const(segments)})", indent)
    if rest:
        src.line(f"if {var} is None:", indent)
        _read(src, var, rest, indent + 1)


def _label(target: Target, paths: list[str]) -> str:
    """How a detail names a field: its upstream path, and our name if different."""
    shown = " or ".join(paths)
    return shown if shown == target.name else f"{shown} ({target.name})"


@dataclass
class _Compiled:
    """Where each target's value ended up in the generated code."""

    value: dict[str, str] = field(default_factory=dict)  # target -> expression
    millis: dict[str, str] = field(default_factory=dict)  # time target -> ms var
    extra_keys: list[tuple[str, str]] = field(default_factory=list)  # (key, expr)


def _emit_read(
    src: _Source, target: Target, spec: object, index: int
) -> tuple[Mapping[str, Any], str, str, bool]:
    """Read a target's upstream value into ``r<index>``, default and presence."""
    options: Mapping[str, Any] = spec if isinstance(spec, dict) else {}
    paths = _paths(spec)
    label = _label(target, paths)
    raw = f"r{index}"
    _read(src, raw, paths)
    if "default" in options and options["default"] is not None:
        default = options["default"]
        if isinstance(default, dict | list) and default:
            src.line(f"if {raw} is None:")
            src.line(f"{raw} = _deepcopy({src.const(default)})", 2)
            src.constants["_deepcopy"] = copy.deepcopy
        elif default == {}:
            src.line(f"if {raw} is None:")
            src.line(f"{raw} = {{}}", 2)
        else:
            src.line(f"if {raw} is None:")
            src.line(f"{raw} = {src.const(default)}", 2)
    required = target.required or bool(options.get("required"))
    if required and target.type not in ("id", "latitude", "longitude", "label"):
        src.line(f"if {raw} is None:")
        src.line(f"raise _Invalid('invalid_item', {label + ': missing'!r})", 2)
    return options, raw, label, required


def _emit_target(
    src: _Source, out: _Compiled, target: Target, spec: object, index: int
) -> None:
    options, raw, label, required = _emit_read(src, target, spec, index)
    var = f"v{index}"
    kind = target.type
    if kind == "id":
        if required:
            src.line(f"{var} = _id({raw}, {label!r})")
        else:
            src.line(f"{var} = None if {raw} is None else _id({raw}, {label!r})")
    elif kind == "ref":
        src.line(f"{var} = _ref_id({raw}, {label!r})")
    elif kind == "text":
        _emit_text(src, options, raw, var, label)
    elif kind == "label":
        _emit_label(src, options, raw, var, label, required=required)
    elif kind in ("latitude", "longitude"):
        bound = 90 if kind == "latitude" else 180
        src.line(
            f"if not ((type({raw}) is float or type({raw}) is int)"
            f" and {-bound} <= {raw} <= {bound}):"
        )
        message = f"{label}: must be a number in [{-bound}, {bound}]"
        src.line(f"raise _Invalid('invalid_item', {message!r})", 2)
        var = raw
    elif kind == "boolean":
        src.line(f"if {raw} is not None and type({raw}) is not bool:")
        src.line(
            f"raise _Invalid('invalid_item', {label + ': must be a boolean'!r})", 2
        )
        var = raw
    elif kind == "object":
        src.line(f"if type({raw}) is not dict:")
        src.line(f"{raw} = _object({raw}, {label!r})", 2)
        var = raw
    elif kind == "time":
        _emit_time(src, out, target, options, raw, index, label)
        return
    else:
        _emit_event_type(src, out, options, raw, index, label)
        return
    out.value[target.name] = var


def _emit_text(
    src: _Source, options: Mapping[str, Any], raw: str, var: str, label: str
) -> None:
    src.line(f"{var} = _opt_str({raw}, {label!r})")
    if "enum" in options:
        _emit_enum(src, options, var, var, label, indent=1, guard=True)


def _emit_label(
    src: _Source,
    options: Mapping[str, Any],
    raw: str,
    var: str,
    label: str,
    *,
    required: bool,
) -> None:
    if "enum" in options:
        # An enum may name scalars too: a boolean is looked up as 'true' or
        # 'false', an integer by its digits (an upstream "online": true).
        src.line(f"if type({raw}) is bool:")
        src.line(f"{raw} = 'true' if {raw} else 'false'", 2)
        src.line(f"elif type({raw}) is int:")
        src.line(f"{raw} = str({raw})", 2)
    test = f"type({raw}) is str and 0 < len({raw}) <= {_LABEL_MAX}"
    if not required:
        test = f"{raw} is None or ({test})"
    src.line(f"if not ({test}):")
    message = f"{label}: must be a non-empty string"
    src.line(f"raise _Invalid('invalid_item', {message!r})", 2)
    src.line(f"{var} = {raw}")
    if "enum" in options:
        _emit_enum(src, options, var, var, label, indent=1, guard=not required)


def _emit_enum(
    src: _Source,
    options: Mapping[str, Any],
    source: str,
    var: str,
    label: str,
    *,
    indent: int,
    guard: bool,
) -> None:
    table = src.const(dict(options["enum"]))
    if guard:
        src.line(f"if {source} is not None:", indent)
        indent += 1
    src.line(f"mapped = {table}.get({source})", indent)
    if options.get("others") == "reject":
        src.line("if mapped is None:", indent)
        src.line(
            f"raise _Invalid('invalid_item', {label + ': '!r} + _name({source})"
            " + ' is not in the enum')",
            indent + 1,
        )
        src.line(f"{var} = mapped", indent)
    else:
        src.line(f"{var} = {source} if mapped is None else mapped", indent)


def _emit_time(
    src: _Source,
    out: _Compiled,
    target: Target,
    options: Mapping[str, Any],
    raw: str,
    index: int,
    label: str,
) -> None:
    function = _TIME_FUNCTIONS[options.get("format", "iso8601")]
    iso, millis = f"v{index}", f"ms{index}"
    if target.required or options.get("required"):
        src.line(f"{iso}, {millis} = {function}({raw}, {label!r})")
    else:
        src.line(f"if {raw} is None:")
        src.line(f"{iso} = {millis} = None", 2)
        src.line("else:")
        src.line(f"{iso}, {millis} = {function}({raw}, {label!r})", 2)
    out.value[target.name] = iso
    out.millis[target.name] = millis


def _emit_numbers(
    src: _Source, out: _Compiled, group: list[tuple[int, Target, object]]
) -> None:
    """Numbers and speed: read all, then one combined type test (the codec's way)."""
    checked: list[tuple[str, str]] = []
    speeds: list[tuple[int, Mapping[str, Any], str]] = []
    for index, target, spec in group:
        options, raw, label, _ = _emit_read(src, target, spec, index)
        checked.append((raw, label))
        if target.type == "speed":
            speeds.append((index, options, raw))
        else:
            out.value[target.name] = raw
    if checked:
        test = " and ".join(f"type({raw}) in _NUM" for raw, _ in checked)
        raws = ", ".join(raw for raw, _ in checked)
        labels = src.const(tuple(label for _, label in checked))
        src.line(f"if not ({test}):")
        src.line(f"raise _not_number({labels}, ({raws},))", 2)
    for index, options, raw in speeds:
        _emit_speed(src, out, options, raw, index)


def _emit_speed(
    src: _Source, out: _Compiled, options: Mapping[str, Any], raw: str, index: int
) -> None:
    unit = options.get("unit", "knots")
    metres = SPEED_UNITS[unit]
    knots, kph = f"v{index}", f"kph{index}"
    # An integral factor stays an int literal: the same arithmetic as the codec.
    factor = repr(int(metres)) if metres.is_integer() else repr(metres)
    src.line(f"if {raw} is None:")
    src.line(f"{knots} = {kph} = None", 2)
    src.line("else:")
    # km/h to 3 decimals via an integer round (round(x, 3) is ~4x slower).
    src.line(f"{kph} = round({raw} * {factor}) / 1000", 2)
    if unit == "knots":
        src.line(f"{knots} = {raw}", 2)
    else:
        src.line(f"{knots} = round({raw} * {metres / _KNOTS!r}, 6)", 2)
    out.value["speedKnots"] = knots
    out.value["speedKph"] = kph


def _emit_event_type(
    src: _Source,
    out: _Compiled,
    options: Mapping[str, Any],
    raw: str,
    index: int,
    label: str,
) -> None:
    src.line(f"if not (type({raw}) is str and {raw}):")
    message = f"{label}: must be a non-empty string"
    src.line(f"raise _Invalid('invalid_item', {message!r})", 2)
    plain = {k: v for k, v in options["enum"].items() if isinstance(v, str)}
    nested = {
        k: (_segments(v["path"]), dict(v["enum"]), v["path"])
        for k, v in options["enum"].items()
        if isinstance(v, dict)
    }
    var = f"v{index}"
    src.line(f"{var} = {src.const(plain)}.get({raw})")
    src.line(f"if {var} is None:")
    prefix = repr(label + ": ")
    if nested:
        table = src.const(nested)
        src.line(f"lookup = {table}.get({raw})", 2)
        src.line("if lookup is None:", 2)
        src.line(
            f"raise _Invalid('unknown_event_type', {prefix} + _name({raw})"
            " + ' is not mapped')",
            3,
        )
        src.line("sub = _dig(obj, lookup[0])", 2)
        src.line("if type(sub) is not str:", 2)
        src.line(
            "raise _Invalid('unknown_event_type', lookup[2] + ': missing for ' +"
            f" _name({raw}))",
            3,
        )
        src.line(f"{var} = lookup[1].get(sub)", 2)
        src.line(f"if {var} is None:", 2)
        src.line(
            "raise _Invalid('unknown_event_type', lookup[2] + ': ' + _name(sub)"
            " + ' is not mapped')",
            3,
        )
    else:
        src.line(
            f"raise _Invalid('unknown_event_type', {prefix} + _name({raw})"
            " + ' is not mapped')",
            2,
        )
    out.value["eventType"] = var
    out.value["upstreamType"] = raw


def _consumed(rule: Mapping[str, Any]) -> dict[str, Any]:
    """The tree of upstream keys the rule reads (or drops), for ``extra``."""
    tree: dict[str, Any] = {}
    paths: list[str] = list(rule.get("drop", ()))
    for spec in rule["fields"].values():
        paths += _paths(spec)
        if isinstance(spec, dict):
            for value in spec.get("enum", {}).values():
                if isinstance(value, dict):
                    paths.append(value["path"])
    for path in paths:
        node = tree
        *parents, last = path.split(".")
        for segment in parents:
            child = node.get(segment, {})
            if child is None:  # an ancestor is consumed whole already
                break
            node = node.setdefault(segment, child)
        else:
            node[last] = None
    return tree


def _output_order(kind: Kind) -> list[str]:
    order: list[str] = []
    for target in CONTRACT[kind]:
        if target.only_if_present:
            continue
        if target.type == "speed":
            order += ["speedKnots", "speedKph"]
        elif target.type == "event_type":
            order += ["eventType", "upstreamType"]
        else:
            order.append(target.name)
    return order


def compile_rule(name: str, rule: Mapping[str, Any]) -> tuple[RuleFunction, str]:
    """Compile one validated rule; returns the function and its source."""
    kind: Kind = rule["kind"]
    targets = CONTRACT[kind]
    fields: Mapping[str, object] = rule["fields"]
    src = _Source()
    out = _Compiled()
    src.lines.append("def rule(obj):")
    src.line("get = obj.get")
    # Objects first, then the event type: the hand-written codec checks an
    # event's attributes before it looks its type up, and so do we.
    ordered = sorted(
        enumerate(targets),
        key=lambda it: (it[1].type != "object", it[1].type != "event_type", it[0]),
    )
    numbers: list[tuple[int, Target, object]] = []
    for index, target in ordered:
        spec = fields.get(target.name)
        if spec is None:
            if target.type == "object":
                out.value[target.name] = "{}"
            elif target.type == "speed":
                out.value["speedKnots"] = out.value["speedKph"] = "None"
        elif target.type in ("number", "speed"):
            numbers.append((index, target, spec))
        else:
            _emit_target(src, out, target, spec, index)
    _emit_numbers(src, out, numbers)
    body = ", ".join(
        f"{key!r}: {out.value.get(key, 'None')}" for key in _output_order(kind)
    )
    src.line(f"data = {{{body}}}")
    for target in targets:
        if target.only_if_present and target.name in out.value:
            src.line(f"if {out.value[target.name]} is not None:")
            src.line(f"data[{target.name!r}] = {out.value[target.name]}", 2)
    if rule.get("extra", True):
        _emit_extra(src, _consumed(rule))
    prefix = ID_PREFIXES[kind]
    identity: list[str] = list(rule.get("identity") or _default_identity(kind))
    parts = [out.millis.get(n) or out.value.get(n, "None") for n in identity]
    nullable = " or ".join(f"{p} is None" for p in parts)
    src.line(f"if {nullable}:")
    src.line(f"event_id = _digest({prefix!r}, data)", 2)
    src.line("else:")
    if len(parts) == 1 and _is_text(targets, identity[0]):
        src.line(f"event_id = {prefix + ':'!r} + {parts[0]}", 2)
    else:
        joined = ":".join(f"{{{p}}}" for p in parts)
        src.line(f"event_id = f{prefix + ':' + joined!r}", 2)
    time_target = EVENT_TIME[kind]
    event_type = out.value.get("eventType", "None")
    src.line(
        f"return _item({kind!r}, {event_type}, {out.value['deviceId']}, event_id,"
        f" {out.value[time_target]}, {out.millis[time_target]}, data)"
    )
    text = "\n".join(src.lines) + "\n"
    namespace: dict[str, Any] = {**_BASE_NAMESPACE, **src.constants}
    code = compile(text, f"<mapping rule {name}>", "exec")
    exec(code, namespace)  # noqa: S102 - source built from repr()s only, see above
    return cast("RuleFunction", namespace["rule"]), text


def _is_text(targets: tuple[Target, ...], name: str) -> bool:
    return any(
        t.name == name and t.type in ("id", "ref", "label", "text") for t in targets
    )


def _default_identity(kind: Kind) -> tuple[str, ...]:
    if kind == "position":
        return ("positionId",)
    if kind == "event":
        return ("eventId",)
    return ("deviceId", "lastUpdate", "status")


def _emit_extra(src: _Source, tree: dict[str, Any]) -> None:
    if all(value is None for value in tree.values()):
        keys = src.const(frozenset(tree))
        src.line(f"if not obj.keys() <= {keys}:")
        src.line(
            f"data['extra'] = {{k: x for k, x in obj.items() if k not in {keys}}}", 2
        )
    else:
        src.line(f"rest = _extra(obj, {src.const(tree)})")
        src.line("if rest:")
        src.line("data['extra'] = rest", 2)
