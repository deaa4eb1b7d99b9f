"""The capture file's lines and their redaction (pure)."""

from __future__ import annotations

import orjson

from bridge.core.capture import event_line, frame_bytes, frame_field, header_line
from bridge.secrets import Secret, TextRedactor

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOnsiYXBwSWQiOiIxIn19.c2lnbmF0dXJl"
SECRET = "ZK4P0QW7TRV2M9XBC81LJ6DHS5NA3EYU"


def test_text_frames_keep_their_bytes_but_lose_every_secret() -> None:
    """The token, the app secret and any JWT are masked; the rest is verbatim."""
    redactor = TextRedactor([SECRET], ["session"])
    redactor.add(Secret(TOKEN))
    other = "eyJhbGciOiJub25lIn0.eyJ4IjoiMTIzNDU2Nzg5MCJ9.YWJjZGVmZ2hpams"
    body = f'{{"positions":[],"echo":"{TOKEN}","k":"{SECRET}","j":"{other}"}}'
    field = frame_field(redactor, body.encode(), text=True)
    shown = str(field["text"])
    assert TOKEN not in shown
    assert SECRET not in shown
    assert "eyJ" not in shown
    assert shown.startswith('{"positions":[]')


def test_binary_frames_are_kept_as_base64_and_masked_too() -> None:
    """Binary payloads survive byte for byte, except a secret inside them."""
    redactor = TextRedactor([SECRET], ["session"])
    data = b"\x00\xff" + SECRET.encode() + b"\x10"
    field = frame_field(redactor, data, text=False)
    back = frame_bytes(field)
    assert back.startswith(b"\x00\xff")
    assert back.endswith(b"\x10")
    assert SECRET.encode() not in back


def test_urls_keep_their_shape_with_the_session_masked() -> None:
    """A URL carrying the session shows the key, never the value."""
    redactor = TextRedactor([], ["session"])
    assert redactor.text(f"wss://h/p?session={TOKEN}") == "wss://h/p?session=***"


def test_lines_are_json_with_time_kind_and_fields() -> None:
    """The header names the capture; events carry t, at and kind."""
    header = orjson.loads(header_line(started_at=0.0, url="u", codec="traccar-json"))
    assert header == {
        "capture": 1,
        "started_at": "1970-01-01T00:00:00.000Z",
        "url": "u",
        "codec": "traccar-json",
    }
    event = orjson.loads(event_line("close", t=1.5, at=0.0, code=1006, reason="x"))
    assert (event["kind"], event["t"], event["code"]) == ("close", 1.5, 1006)
