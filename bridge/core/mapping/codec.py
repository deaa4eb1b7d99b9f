"""The mapping codec: a compiled mapping file as a ``FrameCodec``.

:func:`compile_mapping` turns a checked mapping document into a
:class:`MappingCodec`; its ``decode`` has the contract of every codec
(``bridge.core.codec``): never raises, oversize frames are refused unparsed,
``{}`` is a keep-alive, and a message that is not wholly understood comes
back with a :class:`~bridge.core.codec.FrameRejection` (the caller
dead-letters it verbatim) together with the items that were understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bridge.core.codec import (
    REJECTION_REASONS,
    Decoded,
    FrameRejection,
    json_type,
    parse_frame,
)
from bridge.core.mapping.document import MappingProblem, check, parse
from bridge.core.mapping.rules import RuleFunction, compile_rule
from bridge.core.mapping.selectors import Collected, Selector, compile_selector

__all__ = [
    "MAPPING_REJECTION_REASONS",
    "MappingCodec",
    "compile_mapping",
    "load_mapping",
]

#: The hand-written codec's reasons, and two only a mapping gives: a switch
#: value with no case, and a Socket.IO envelope that is not an event array.
MAPPING_REJECTION_REASONS: Final = (
    *REJECTION_REASONS,
    "unknown_type",
    "not_a_socketio_event",
)
_KEEPALIVE: Final = Decoded(items=(), rejection=None, keepalive=True)


def _rejected(reason: str, detail: str) -> Decoded:
    return Decoded(items=(), rejection=FrameRejection(reason, detail), keepalive=False)


class MappingCodec:
    """Decodes frames with a compiled mapping.

    Attributes:
        name: The mapping's ``name`` (``mapping`` when it has none).
        sources: The generated source of each rule, for ``mapping show``.
    """

    __slots__ = (
        "_keepalive",
        "_select",
        "_socketio",
        "max_frame_bytes",
        "name",
        "sources",
    )

    def __init__(
        self,
        *,
        name: str,
        select: Selector,
        socketio: bool,
        keepalive: bool,
        sources: Mapping[str, str],
        max_frame_bytes: int,
    ) -> None:
        if max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
        self.name = name
        self.sources = sources
        self.max_frame_bytes = max_frame_bytes
        self._select = select
        self._socketio = socketio
        self._keepalive = keepalive

    def decode(self, raw: bytes) -> Decoded:
        """Decode one frame; never raises."""
        document = parse_frame(raw, self.max_frame_bytes)
        if type(document) is Decoded:
            return document
        event: str | None = None
        if self._socketio:
            if not (type(document) is list and document and type(document[0]) is str):
                return _rejected(
                    "not_a_socketio_event",
                    f"message is {json_type(document)}, expected a Socket.IO event"
                    ' array ["name", payload]',
                )
            event = document[0]
            document = document[1] if len(document) == 2 else document[1:] or None
        if self._keepalive and type(document) is dict and not document:
            return _KEEPALIVE
        out = Collected()
        self._select(document, "", out, event)
        return Decoded(
            items=tuple(out.items), rejection=out.rejection(), keepalive=False
        )


def compile_mapping(
    document: Mapping[str, Any], *, max_frame_bytes: int
) -> MappingCodec:
    """Compile a document that :func:`load_mapping`'s checks accepted."""
    rules: dict[str, RuleFunction] = {}
    sources: dict[str, str] = {}
    for name, rule in document["rules"].items():
        rules[name], sources[name] = compile_rule(name, rule)
    message = document["message"]
    return MappingCodec(
        name=document.get("name", "mapping"),
        select=compile_selector(message["select"], rules, "$.message.select"),
        socketio=message.get("envelope", "json") == "socketio",
        keepalive=message.get("keepalive_empty_object", True),
        sources=sources,
        max_frame_bytes=max_frame_bytes,
    )


def load_mapping(
    text: str, schema: Mapping[str, Any], *, max_frame_bytes: int
) -> tuple[MappingCodec | None, list[MappingProblem]]:
    """Parse, check and compile mapping text: a codec, or every problem found."""
    parsed, problems = parse(text)
    if parsed is None:
        return None, problems
    problems = check(parsed, schema)
    if problems:
        return None, problems
    document = parsed.document
    if not isinstance(document, dict):  # the schema checked it; this narrows it
        return None, [MappingProblem("$", None, "must be an object")]
    return compile_mapping(document, max_frame_bytes=max_frame_bytes), []
