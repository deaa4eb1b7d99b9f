"""The capture file: what ``sendstack-bridge capture`` writes, redacted.

One JSON object per line. The first line describes the capture; each later
line is an event with ``t`` (seconds since the start) and ``at`` (UTC):
``open`` (the URL, session masked), ``frame`` (verbatim: ``text`` or
``base64``), ``close`` (code, reason), ``rotation`` (a newer session),
``connect_failed`` (the kind of failure). Frames are kept byte for byte
except where the session token, the app secret or anything JWT-shaped
appears: those are masked wherever they are (URL, headers, bodies), because
a capture is made to be shared.
"""

from __future__ import annotations

import base64
from typing import Any, Final

import orjson

from bridge.core.records import iso_ms
from bridge.secrets import TextRedactor

CAPTURE_VERSION: Final = 1


def frame_field(redactor: TextRedactor, data: bytes, *, text: bool) -> dict[str, Any]:
    """A frame's payload field, masked: ``text`` when it is text, else ``base64``."""
    if text:
        return {"text": redactor.text(data.decode("utf-8", "replace"))}
    # Binary frames are masked as Latin-1 text so every byte survives.
    masked = redactor.text(data.decode("latin-1")).encode("latin-1", "replace")
    return {"base64": base64.b64encode(masked).decode("ascii")}


def header_line(*, started_at: float, url: str, codec: str) -> bytes:
    return orjson.dumps(
        {
            "capture": CAPTURE_VERSION,
            "started_at": iso_ms(started_at),
            "url": url,
            "codec": codec,
        }
    )


def event_line(kind: str, *, t: float, at: float, **fields: Any) -> bytes:
    return orjson.dumps({"t": round(t, 6), "at": iso_ms(at), "kind": kind, **fields})


def frame_bytes(event: dict[str, Any]) -> bytes:
    """The verbatim (redacted) bytes of a ``frame`` event."""
    if "text" in event:
        return str(event["text"]).encode()
    return base64.b64decode(str(event["base64"]))
