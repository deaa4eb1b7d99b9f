"""Reads mapping files: the user's (``BRIDGE_STREAM_MAPPING_FILE``) or the shipped one.

The only place that touches the file system for mappings; parsing, checking
and compiling are pure (``bridge.core.mapping``). The JSON Schema and the
shipped mapping are package data, so they travel with the wheel and the image.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from bridge.core.codec import FrameCodec, TraccarJsonCodec
from bridge.core.mapping import MappingCodec, MappingProblem, load_mapping
from bridge.errors import ConfigError

__all__ = [
    "SHIPPED_MAPPING",
    "mapping_schema",
    "read_mapping",
    "shipped_mapping_text",
    "stream_codec",
]

#: The shipped mapping's name, used when no file is configured.
SHIPPED_MAPPING: Final = "traccar-json"


@cache
def mapping_schema() -> dict[str, Any]:
    """The mapping language's JSON Schema (``bridge/schemas/mapping.v1.json``)."""
    text = files("bridge").joinpath("schemas", "mapping.v1.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def shipped_mapping_text() -> str:
    """The text of the shipped mapping (``bridge/mappings/traccar-json.yaml``)."""
    return (
        files("bridge")
        .joinpath("mappings", f"{SHIPPED_MAPPING}.yaml")
        .read_text("utf-8")
    )


def read_mapping(
    path: str | None, *, max_frame_bytes: int
) -> tuple[MappingCodec | None, list[MappingProblem]]:
    """Load, check and compile a mapping file (``None``: the shipped one)."""
    if path is None:
        text = shipped_mapping_text()
    else:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            return None, [MappingProblem("$", None, f"cannot read {path}: {reason}")]
    return load_mapping(text, mapping_schema(), max_frame_bytes=max_frame_bytes)


def stream_codec(
    codec: str, mapping_file: str | None, *, max_frame_bytes: int
) -> FrameCodec:
    """The codec the stream decodes frames with, as configured.

    Raises:
        ConfigError: The mapping has problems (all listed). ``load_settings``
            checks the same, so a process that started never sees this.
    """
    if codec == "traccar-json":
        return TraccarJsonCodec(max_frame_bytes=max_frame_bytes)
    compiled, problems = read_mapping(mapping_file, max_frame_bytes=max_frame_bytes)
    if compiled is None:
        raise ConfigError([f"BRIDGE_STREAM_MAPPING_FILE: {p}" for p in problems])
    return compiled
