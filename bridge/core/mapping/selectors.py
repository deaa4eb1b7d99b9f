"""Compiles ``message.select`` (message → items) into nested closures.

A selector receives a JSON value, where it sits in the message (for details)
and the Socket.IO event name, and adds items or problems to a
:class:`Collected`. Five forms, which nest:

* ``rule``: the value is one item object;
* ``each``: the value is an array; every element goes to the inner selector;
* ``sections``: the value is an object whose named keys hold inner selectors
  (today's ``{"positions": [...], "events": [...]}``);
* ``switch``: a discriminator (a path, or ``$event``) picks the inner selector;
* ``at``: descend to a path first (a nested payload).

Per item the cost is one call of the compiled rule; ``each`` over a ``rule``
is specialised, because that is the hot loop of batch-shaped wires. Where a
message is not understood, the problem names the place in the message and
the mapping rule or selector that refused it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from bridge.core.codec import FrameRejection, Invalid, Item, json_type, name_of
from bridge.core.mapping.rules import RuleFunction
from bridge.core.mapping.values import dig

__all__ = ["EVENT_DISCRIMINATOR", "Collected", "Selector", "compile_selector"]

EVENT_DISCRIMINATOR: Final = "$event"
_DETAIL_MAX: Final = 300


class Collected:
    """Items and problems of one message, in message order."""

    __slots__ = ("first", "items", "problems")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.first: FrameRejection | None = None
        self.problems = 0

    def problem(self, reason: str, detail: str) -> None:
        self.problems += 1
        if self.first is None:
            self.first = FrameRejection(reason, detail[:_DETAIL_MAX])

    def rejection(self) -> FrameRejection | None:
        first = self.first
        if first is not None and self.problems > 1:
            more = f"; and {self.problems - 1} more problem(s)"
            return FrameRejection(first.reason, (first.detail + more)[-_DETAIL_MAX:])
        return first


Selector = Callable[[object, str, Collected, str | None], None]


def _where(loc: str) -> str:
    return loc or "message"


def _child(loc: str, key: str) -> str:
    return f"{loc}.{key}" if loc else key


def _not_object(value: object, loc: str, out: Collected) -> None:
    reason = "invalid_item" if loc else "not_an_object"
    out.problem(reason, f"{_where(loc)}: {json_type(value)}, expected an object")


def compile_selector(
    spec: Mapping[str, Any], rules: Mapping[str, RuleFunction], place: str
) -> Selector:
    """Compile one validated selector; ``place`` is its JSON path, for details."""
    inner = _compile_form(spec, rules, place)
    if "at" not in spec:
        return inner
    path: str = spec["at"]
    segments = tuple(int(s) if s.isdigit() else s for s in path.split("."))

    def at(value: object, loc: str, out: Collected, event: str | None) -> None:
        inner(dig(value, segments), _child(loc, path), out, event)

    return at


def _compile_form(
    spec: Mapping[str, Any], rules: Mapping[str, RuleFunction], place: str
) -> Selector:
    if "rule" in spec:
        return _one(spec["rule"], rules[spec["rule"]])
    if "each" in spec:
        inner_spec = spec["each"]
        if set(inner_spec) == {"rule"}:
            return _each_rule(inner_spec["rule"], rules[inner_spec["rule"]])
        return _each(compile_selector(inner_spec, rules, place + ".each"))
    if "sections" in spec:
        table = _cases(spec["sections"], rules, place + ".sections")
        return _sections(table, reject=spec.get("others", "reject") == "reject")
    switch = spec["switch"]
    table = _cases(switch["cases"], rules, place + ".switch.cases")
    return _switch(switch["by"], table, reject=spec.get("others", "reject") == "reject")


def _cases(
    cases: Mapping[str, Any], rules: Mapping[str, RuleFunction], place: str
) -> dict[str, Selector | None]:
    """Compiled cases; ``None`` marks a case the mapping ignores on purpose."""
    return {
        key: None
        if case == "ignore"
        else compile_selector(case, rules, f"{place}.{key}")
        for key, case in cases.items()
    }


def _one(name: str, rule: RuleFunction) -> Selector:
    suffix = f" (rule {name})"

    def one(value: object, loc: str, out: Collected, event: str | None) -> None:
        if type(value) is not dict:
            _not_object(value, loc, out)
            return
        try:
            out.items.append(rule(value))
        except Invalid as exc:
            out.problem(exc.reason, f"{_where(loc)}.{exc.detail}{suffix}")

    return one


def _each_rule(name: str, rule: RuleFunction) -> Selector:
    suffix = f" (rule {name})"

    def each_rule(value: object, loc: str, out: Collected, event: str | None) -> None:
        if type(value) is not list:
            out.problem(
                "not_an_array", f"{_where(loc)}: {json_type(value)}, expected an array"
            )
            return
        append = out.items.append
        for index, obj in enumerate(value):
            if type(obj) is dict:
                try:
                    append(rule(obj))
                except Invalid as exc:
                    out.problem(exc.reason, f"{loc}[{index}].{exc.detail}{suffix}")
            else:
                out.problem(
                    "invalid_item",
                    f"{loc}[{index}]: {json_type(obj)}, expected an object",
                )

    return each_rule


def _each(inner: Selector) -> Selector:
    def each(value: object, loc: str, out: Collected, event: str | None) -> None:
        if type(value) is not list:
            out.problem(
                "not_an_array", f"{_where(loc)}: {json_type(value)}, expected an array"
            )
            return
        for index, element in enumerate(value):
            inner(element, f"{loc}[{index}]", out, event)

    return each


def _sections(table: Mapping[str, Selector | None], *, reject: bool) -> Selector:
    def sections(value: object, loc: str, out: Collected, event: str | None) -> None:
        if type(value) is not dict:
            _not_object(value, loc, out)
            return
        for key, section in value.items():
            if key not in table:
                if reject:
                    where = "top-level key" if not loc else f"key in {loc}:"
                    out.problem("unknown_field", f"unknown {where} {name_of(key)}")
                continue
            selector = table[key]
            if selector is not None:
                selector(section, _child(loc, key), out, event)

    return sections


def _switch(by: str, table: Mapping[str, Selector | None], *, reject: bool) -> Selector:
    segments = (
        None
        if by == EVENT_DISCRIMINATOR
        else tuple(int(s) if s.isdigit() else s for s in by.split("."))
    )

    def switch(value: object, loc: str, out: Collected, event: str | None) -> None:
        found: object = event if segments is None else dig(value, segments)
        if type(found) is int:
            found = str(found)
        if type(found) is not str or found not in table:
            if reject:
                shown = json_type(found) if type(found) is not str else name_of(found)
                out.problem("unknown_type", f"{_where(loc)}: {by} {shown} has no case")
            return
        selector = table[found]
        if selector is not None:
            selector(value, loc, out, event)

    return switch
