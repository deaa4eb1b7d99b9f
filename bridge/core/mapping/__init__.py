"""Declarative mappings: how a tracking message becomes records, without code.

``docs/mapping.md`` is the user's reference; the schema is
``bridge/schemas/mapping.v1.json``; the shipped mapping
``bridge/mappings/traccar-json.yaml`` expresses the hand-written codec.
"""

from bridge.core.mapping.codec import (
    MAPPING_REJECTION_REASONS,
    MappingCodec,
    compile_mapping,
    load_mapping,
)
from bridge.core.mapping.document import MappingProblem

__all__ = [
    "MAPPING_REJECTION_REASONS",
    "MappingCodec",
    "MappingProblem",
    "compile_mapping",
    "load_mapping",
]
