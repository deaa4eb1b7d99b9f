"""The shape of the command catalogue, and everything derived from an entry.

One :class:`CommandType` describes one command type completely: its payload
spec, the Sendstack call it becomes, the ordering key, whether it may be
repeated, how an earlier attempt can be looked up, and an example. A
:class:`Catalogue` is the ordered set of entries; the real one is
``bridge.core.command_types.CATALOGUE``. Validation, request building,
ordering, the JSON Schemas in ``bridge/schemas/commands/`` and the type
table in ``docs/commands.md`` all read the entries: adding a type is adding
one entry (``docs/adding-a-command-type.md``).

This module is generic: it names no command type.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

from bridge.core.command_specs import SCHEMA_DIALECT, Arr, Obj

__all__ = [
    "PAYLOAD_SCHEMA_ID",
    "RECONCILE_SUFFIX",
    "Catalogue",
    "CommandType",
    "MethodOption",
    "Reconcile",
    "RestRequest",
]

PAYLOAD_SCHEMA_ID: Final = "urn:sendstack-bridge:schema:command:{}:v1"
RECONCILE_SUFFIX: Final = "#reconcile"  # '#' cannot occur in a command id

_TYPE_NAME: Final = r"[a-z][a-z0-9_]*"
_PATH_PARAM: Final = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_DOCS_SCHEMA_DIR: Final = "../bridge/schemas/commands"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestRequest:
    """One Sendstack REST call.

    Attributes:
        method: HTTP method.
        path: Relative to the base URL (which ends in ``/api/v1``), e.g.
            ``/deliveries``; path parameters are percent-encoded.
        query: Query parameters, in order.
        body: JSON body, or None.
        idempotency_key: Sent as ``Idempotency-Key``: the command id (with
            ``#reconcile`` appended for the reconcile read). Sendstack does not
            document the header; nothing relies on it.
        reconcile: A read whose reply tells whether an earlier attempt
            already took effect (see ``bridge.core.commands.reconciled``), or
            None.
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None
    idempotency_key: str
    reconcile: RestRequest | None = None


@dataclass(frozen=True, slots=True)
class Reconcile:
    """How to find out whether an earlier attempt already took effect.

    The read is ``GET <path>?<by>=<payload[by]>``, a Fetch Deliveries read
    (api doc §14.8) filtered by a payload field that the call also sends to
    Sendstack; ``bridge.core.commands.reconciled`` reads its reply (and
    matches items that echo ``by``).

    Attributes:
        path: The read's path, e.g. ``/deliveries``.
        by: The payload field to filter by; required by the payload spec.
    """

    path: str
    by: str


@dataclass(frozen=True, slots=True)
class MethodOption:
    """A deployment option choosing the HTTP method among ``choices``.

    Attributes:
        keyword: The keyword of ``to_request`` that carries the choice, e.g.
            ``assign_method``.
        setting: The configuration variable it comes from (for the docs).
        choices: The allowed methods; the entry's ``method`` is the default.
    """

    keyword: str
    setting: str
    choices: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandType:
    """One command type: everything the bridge knows about it.

    Attributes:
        name: The envelope's ``type``, lower snake case.
        title: The Sendstack operation's name, e.g. ``New Booking``.
        section: Where the api doc describes it, e.g. ``§14.6``.
        spec: The payload spec (without a description: it is rendered from
            ``title``, ``method``, ``path``, ``section`` and ``note``).
        method: HTTP method of the call.
        path: Path of the call; ``{field}`` is replaced by the payload field,
            percent-encoded, which is then left out of the body.
        params: Payload fields sent as query parameters (those given, in this
            order, as strings).
        body: True: the payload (less path fields) is the JSON body.
        ordering: Payload fields that make the ordering key, first given
            wins (for an array, its first item); none given: the command id.
        query: Read-only: repeating it changes nothing at Sendstack.
        repeatable: A repetition ends in the same state as one execution,
            so a call in doubt is simply sent again. Every query is.
        reconcile: How an earlier attempt in doubt is looked up, or None (a
            non-repeatable write in doubt then ends ``ambiguous``).
        method_option: A deployment option choosing another method, or None.
        note: A sentence added to the schema's description.
        example: One valid payload (invented values, documented field names).
    """

    name: str
    title: str
    section: str
    spec: Obj
    method: str
    path: str
    params: tuple[str, ...] = ()
    body: bool = True
    ordering: tuple[str, ...] = ()
    query: bool = False
    repeatable: bool = False
    reconcile: Reconcile | None = None
    method_option: MethodOption | None = None
    note: str = ""
    example: dict[str, Any]

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(f"command type {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        """What makes this entry inconsistent, or None."""
        fields = self.spec.properties
        if re.fullmatch(_TYPE_NAME, self.name) is None:
            return "the name must be lower snake case"
        if self.spec.description:
            return "the spec must not carry a description (it is rendered)"
        if self.method not in _METHODS:
            return f"unknown method {self.method!r}"
        if self.method_option is not None and (
            self.method not in self.method_option.choices
            or not set(self.method_option.choices) <= _METHODS
        ):
            return "the method option must offer the method and known methods"
        for name in self.path_fields:
            if name not in self.spec.required:
                return f"path field {name!r} must be a required payload field"
        if self.reconcile is not None and self.reconcile.by not in self.spec.required:
            return f"reconcile field {self.reconcile.by!r} must be required"
        for name in (*self.params, *self.ordering):
            if name not in fields:
                return f"{name!r} is not a payload field"
        if self.query and not self.repeatable:
            return "a query is repeatable"
        if self.repeatable and self.reconcile is not None:
            return "a repeatable type is sent again, never reconciled"
        problem = self.spec.check(self.example, "payload")
        if problem is not None:
            return f"the example is invalid: {problem}"
        return None

    # -- validation ---------------------------------------------------------

    @property
    def path_fields(self) -> tuple[str, ...]:
        """Payload fields that go into the path (and not into the body)."""
        return tuple(_PATH_PARAM.findall(self.path))

    @property
    def needs_payload(self) -> bool:
        """True when ``{}`` is not a valid payload (the envelope needs one)."""
        return self.spec.check({}, "payload") is not None

    def check(self, payload: object) -> str | None:
        """The first problem of ``payload`` (details start ``payload``), or None."""
        return self.spec.check(payload, "payload")

    # -- requests -----------------------------------------------------------

    def request(
        self,
        payload: Mapping[str, Any],
        command_id: str,
        options: Mapping[str, str],
    ) -> RestRequest:
        """The call that carries out a valid payload of this type.

        Args:
            payload: A payload valid for this type.
            command_id: The ``Idempotency-Key``.
            options: Deployment choices by keyword (see :class:`MethodOption`);
                keywords this type does not use are ignored.

        Raises:
            ValueError: If ``options`` chooses a method this type does not
                offer.
        """
        method = self.method
        if self.method_option is not None:
            chosen = options.get(self.method_option.keyword, self.method)
            if chosen not in self.method_option.choices:
                raise ValueError(
                    f"{self.method_option.keyword} must be "
                    f"{' or '.join(self.method_option.choices)}, not {chosen!r}"
                )
            method = chosen
        path_fields = self.path_fields
        path = _PATH_PARAM.sub(
            lambda match: quote(str(payload[match[1]]), safe=""), self.path
        )
        reconcile = None
        if self.reconcile is not None:
            reconcile = RestRequest(
                method="GET",
                path=self.reconcile.path,
                query=((self.reconcile.by, str(payload[self.reconcile.by])),),
                idempotency_key=command_id + RECONCILE_SUFFIX,
            )
        return RestRequest(
            method=method,
            path=path,
            query=tuple(
                (name, str(payload[name])) for name in self.params if name in payload
            ),
            body=(
                {k: v for k, v in payload.items() if k not in path_fields}
                if self.body
                else None
            ),
            idempotency_key=command_id,
            reconcile=reconcile,
        )

    # -- ordering -----------------------------------------------------------

    def ordering_key(self, payload: Mapping[str, Any], command_id: str) -> str:
        """The first ordering field given (an array's first item), else the id."""
        for name in self.ordering:
            value = payload.get(name)
            if isinstance(value, list) and value and isinstance(value[0], str):
                return value[0]
            if isinstance(value, str) and value:
                return value
        return command_id

    def _always_keyed(self) -> bool:
        """True when every valid payload gives an ordering field."""
        if any(name in self.spec.required for name in self.ordering):
            return True
        return any(
            groups and all(any(n in self.ordering for n in g) for g in groups)
            for groups in (self.spec.any_of, self.spec.one_of)
        )

    # -- rendering ----------------------------------------------------------

    @property
    def methods_text(self) -> str:
        """The method, with the alternatives a deployment may choose."""
        others = () if self.method_option is None else self.method_option.choices
        return self.method + "".join(f" (or {m})" for m in others if m != self.method)

    @property
    def description(self) -> str:
        """The payload schema's description: the operation and its call."""
        note = f"; {self.note}" if self.note else ""
        return f"{self.title}: {self.methods_text} {self.path} ({self.section}){note}."

    def payload_schema(self) -> dict[str, Any]:
        """The JSON Schema of this type's payload (``<name>.v1.json``)."""
        return {
            "$schema": SCHEMA_DIALECT,
            "$id": PAYLOAD_SCHEMA_ID.format(self.name),
            "title": f"Payload of a {self.name} command, v1",
            "description": self.description,
            **self.spec.schema(),
            "examples": [self.example],
        }

    def docs_row(self) -> str:
        """This type's row of the table in ``docs/commands.md``."""
        call = f"`{self.methods_text} {self.path}` ({self.section})"
        if self.method_option is not None:
            call += f", chosen by `{self.method_option.setting}`"
        sends = []
        if self.body:
            left_out = ", ".join(f"`{name}`" for name in self.path_fields)
            sends.append("body: payload" + (f" less {left_out}" if left_out else ""))
        if self.params:
            given = ", ".join(f"`{name}`" for name in self.params)
            sends.append(f"query: {given} (those given)")
        keys = [
            f"`{name}[0]`"
            if isinstance(self.spec.properties[name], Arr)
            else f"`{name}`"
            for name in self.ordering
        ]
        if not self._always_keyed():
            keys.append("`commandId`")
        if self.query:
            kind, doubt = "query", "sent again"
        elif self.repeatable:
            kind, doubt = "repeatable write", "sent again"
        else:
            kind, doubt = "write", "`ambiguous`"
        if self.reconcile is not None:
            doubt = (
                f"looked up: `GET {self.reconcile.path}?{self.reconcile.by}=…`, "
                "else `ambiguous`"
            )
        schema = f"[{self.name}.v1.json]({_DOCS_SCHEMA_DIR}/{self.name}.v1.json)"
        cells = (
            f"`{self.name}`",
            call,
            "; ".join(sends) or "nothing",
            ", else ".join(keys),
            kind,
            doubt,
            schema,
        )
        return "| " + " | ".join(cells) + " |"


_DOCS_HEADER: Final = (
    "| Type | Sendstack call | Sends | Ordering key "
    "| Kind | Call in doubt | Payload schema |\n"
    "|---|---|---|---|---|---|---|\n"
)


class Catalogue(Mapping[str, CommandType]):
    """The command types, by name, in the order of ``docs/commands.md``."""

    __slots__ = ("_entries",)

    def __init__(self, *entries: CommandType) -> None:
        by_name = {entry.name: entry for entry in entries}
        if len(by_name) != len(entries):
            raise ValueError("command type names must be unique")
        self._entries: Mapping[str, CommandType] = MappingProxyType(by_name)

    def __getitem__(self, name: str) -> CommandType:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def extended(self, *entries: CommandType) -> Catalogue:
        """This catalogue with ``entries`` added at the end."""
        return Catalogue(*self.values(), *entries)

    @property
    def types(self) -> tuple[str, ...]:
        """Every type name, in order."""
        return tuple(self._entries)

    @property
    def query_types(self) -> frozenset[str]:
        """Types flagged ``query``."""
        return frozenset(e.name for e in self.values() if e.query)

    @property
    def repeatable_types(self) -> frozenset[str]:
        """Types flagged ``repeatable`` (every query is)."""
        return frozenset(e.name for e in self.values() if e.repeatable)

    @property
    def examples(self) -> Mapping[str, dict[str, Any]]:
        """One valid payload per type."""
        return MappingProxyType({e.name: e.example for e in self.values()})

    def docs_table(self) -> str:
        """The Markdown table of every type, as in ``docs/commands.md``."""
        return _DOCS_HEADER + "".join(e.docs_row() + "\n" for e in self.values())
