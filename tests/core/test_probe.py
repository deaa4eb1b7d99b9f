"""The probe's judgement of what each step saw (pure)."""

from __future__ import annotations

import orjson
import pytest

from bridge.core.codec import TraccarJsonCodec
from bridge.core.probe import (
    Closed,
    FrameSeen,
    ProbeRun,
    SessionStep,
    UpgradeStep,
    framing_of,
    judge,
    shape_of,
)

CODEC = TraccarJsonCodec()
OK_SESSION = SessionStep(200, "Session successfully generated", got_session=True)
OPEN = UpgradeStep(101, "Switching Protocols", (("upgrade", "websocket"),))
POSITION = orjson.dumps(
    {
        "positions": [
            {
                "id": 1,
                "deviceId": 41,
                "fixTime": "2025-06-14T09:12:03.000Z",
                "latitude": 6.4,
                "longitude": 3.3,
            }
        ]
    }
)


def text(data: bytes, at: float = 0.1) -> FrameSeen:
    return FrameSeen(at, data, text=True)


def test_frames_the_codec_understands_make_a_usable_stream() -> None:
    """Assumed-shape frames decode: usable, nothing to change."""
    report = judge(
        ProbeRun("wss://x/s?session=***", OK_SESSION, OPEN, (text(POSITION),), None, 5),
        CODEC,
    )
    assert report.usable
    assert report.suggestions == []
    assert "1 item(s) decoded" in report.text()
    assert "JSON object {positions: array}" in report.text()


@pytest.mark.parametrize(
    ("frame", "framing"),
    [
        (b'0{"sid":"a1","upgrades":[],"pingInterval":25000}', "engine.io"),
        (b'42["position",{"lat":6.4}]', "socket.io"),
        (b"40", "socket.io"),
        (b"CONNECTED\nversion:1.2\n\n\x00", "stomp"),
        (b'{"positions":[]}', "none"),
    ],
)
def test_known_framings_are_recognised(frame: bytes, framing: str) -> None:
    """Engine.IO open, Socket.IO packets and STOMP frames are named as such."""
    assert framing_of(text(frame)) == framing


def test_a_socket_io_server_is_not_usable_and_says_what_is_needed() -> None:
    """An Engine.IO open packet: not usable, and the suggestion names Socket.IO."""
    run = ProbeRun(
        "ws://x", OK_SESSION, OPEN, (text(b'0{"sid":"a","upgrades":[]}'),), None, 1
    )
    report = judge(run, CODEC)
    assert not report.usable
    assert any("Socket.IO" in s for s in report.suggestions)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (404, "the path is wrong"),
        (401, "BRIDGE_STREAM_SESSION_QUERY_KEY"),
        (403, "BRIDGE_STREAM_SESSION_QUERY_KEY"),
        (400, "another protocol"),
        (409, "BRIDGE_STREAM_SINGLE_SESSION"),
    ],
)
def test_a_refused_upgrade_names_the_setting_to_change(status: int, hint: str) -> None:
    """Each upgrade status maps to the setting most likely wrong."""
    run = ProbeRun("ws://x", OK_SESSION, UpgradeStep(status, "No"))
    report = judge(run, CODEC)
    assert not report.usable
    assert any(hint in s for s in report.suggestions), report.suggestions


@pytest.mark.parametrize(
    ("error", "said"), [("dns", "DNS"), ("tls", "TLS"), ("refused", "nothing accepts")]
)
def test_network_errors_are_named_as_such(error: str, said: str) -> None:
    """DNS, TLS and refused connections are told apart, at either step."""
    report = judge(ProbeRun("ws://x", SessionStep(None, error=error)), CODEC)
    assert said in report.text()
    report = judge(
        ProbeRun("ws://x", OK_SESSION, UpgradeStep(None, error=error)), CODEC
    )
    assert said in report.text()


def test_refused_credentials_name_the_credential_settings() -> None:
    """A 401 session call stops the probe and names the app id and secret."""
    report = judge(
        ProbeRun("ws://x", SessionStep(401, "Invalid app_id or app_secret")), CODEC
    )
    assert "HTTP 401" in report.text()
    assert any("BRIDGE_SENDSTACK_APP_SECRET" in s for s in report.suggestions)


def test_frames_of_another_shape_and_a_session_close_are_explained() -> None:
    """Unknown JSON is described by its keys; a 4001 close is called a session close."""
    frame = text(orjson.dumps({"type": "location", "payload": {"lat": 1}}))
    run = ProbeRun("ws://x", OK_SESSION, OPEN, (frame,), Closed(4001, "expired"), 2)
    report = judge(run, CODEC)
    assert "JSON object {type: string, payload: object}" in report.text()
    assert "(session)" in report.text()
    assert not report.usable
    assert any("mapping" in s for s in report.suggestions)


def test_shapes_are_described_briefly() -> None:
    """Arrays, scalars and non-JSON get a one-phrase description."""
    assert shape_of(b"[1, 2]") == "JSON array of 2, first item: number"
    assert shape_of(b"hello") == "not JSON"
    assert shape_of(b"3") == "JSON number"
