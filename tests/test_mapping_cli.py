"""``sendstack-bridge mapping check|show|try``, run as a real process."""

from __future__ import annotations

from pathlib import Path

import orjson

from bridge.core.capture import event_line, frame_field, header_line
from bridge.secrets import TextRedactor
from tests.test_cli import run_cli

GOOD = (
    b'{"positions":[{"id":1,"deviceId":4,"fixTime":"2025-06-14T09:12:03.000Z",'
    b'"latitude":1,"longitude":2}]}'
)


def write_capture(path: Path, frames: list[bytes]) -> None:
    """A capture file as ``sendstack-bridge capture`` writes it."""
    redactor = TextRedactor(())
    lines = [header_line(started_at=0.0, url="ws://x/?session=***", codec="mapping")]
    lines.append(event_line("open", t=0.0, at=0.0, url="ws://x/?session=***"))
    lines += [
        event_line("frame", t=i / 10, at=i / 10, **frame_field(redactor, f, text=True))
        for i, f in enumerate(frames)
    ]
    lines.append(event_line("close", t=9.0, at=9.0, code=1000, reason=""))
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_try_prints_records_and_dead_letters_and_exits_1(tmp_path: Path) -> None:
    """A capture with one bad message: records, its reason, a summary, exit 1."""
    capture = tmp_path / "capture.jsonl"
    write_capture(capture, [GOOD, b"{}", b'{"geofences": []}'])
    result = run_cli("mapping", "try", str(capture), env={})
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "#1 1 record(s)" in out
    assert (
        "sendstack.tracking.positions key=4 com.sendstack.tracking.position.v1" in out
    )
    assert "#2 keep-alive" in out
    assert "dead letter: unknown_field: unknown top-level key 'geofences'" in out
    assert out.rstrip().endswith(
        "summary: 3 message(s): 1 record(s) (position 1), 1 keep-alive(s),"
        " 1 dead letter(s) (unknown_field 1)"
    )


def test_try_exits_0_when_every_message_is_understood(tmp_path: Path) -> None:
    """Raw messages one per line, all understood: exit 0; --quiet prints the summary."""
    raw = tmp_path / "messages.txt"
    raw.write_bytes(GOOD + b"\n\n" + GOOD + b"\n")
    result = run_cli("mapping", "try", "--quiet", str(raw), env={})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "summary: 2 message(s): 2 record(s) (position 2), 0 keep-alive(s),"
        " 0 dead letter(s)\n"
    )


def test_try_uses_the_configured_mapping_file(tmp_path: Path) -> None:
    """Without --mapping, BRIDGE_STREAM_MAPPING_FILE is the mapping tried."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mapping: 1\nmessage: {select: {rule: p}}\nrules:\n  p:\n    kind: position\n"
        "    fields: {deviceId: d, fixTime: {path: t, format: epoch_s},"
        " latitude: la, longitude: lo}\n"
    )
    raw = tmp_path / "messages.txt"
    raw.write_bytes(orjson.dumps({"d": "x", "t": 1, "la": 0, "lo": 0}) + b"\n")
    result = run_cli(
        "mapping", "try", str(raw), env={"BRIDGE_STREAM_MAPPING_FILE": str(mapping)}
    )
    assert result.returncode == 0, result.stderr
    assert '"fixTime":"1970-01-01T00:00:01.000Z"' in result.stdout


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    """A broken mapping: each problem with its line on stderr, exit 2, no traceback."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text("mapping: 2\nmessage: {select: {rule: p}}\nrules: {}\n")
    result = run_cli("mapping", "check", "--mapping", str(mapping), env={})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{mapping}: 2 problem(s)" in result.stderr
    assert "line 1, $.mapping: 1 was expected" in result.stderr
    assert "line 3, $.rules: {} should be non-empty" in result.stderr


def test_check_and_show_the_shipped_mapping() -> None:
    """The shipped mapping checks ok and shows the Python of its three rules."""
    checked = run_cli("mapping", "check", env={})
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "the shipped mapping: ok (traccar-json, 3 rule(s))\n"
    shown = run_cli("mapping", "show", env={})
    assert shown.returncode == 0
    assert shown.stdout.count("def rule(obj):") == 3


def test_stream_refuses_a_broken_mapping_with_every_problem(tmp_path: Path) -> None:
    """`stream` with a broken mapping: exit 2 before starting, each problem listed."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mapping: 1\nmessage: {select: {rule: p}}\nrules:\n  p:\n    kind: position\n"
        "    fields: {deviceId: d, speed: {path: v, unit: furlongs}}\n"
    )
    result = run_cli(
        "stream",
        env={
            "BRIDGE_SENDSTACK_APP_ID": "a",
            "BRIDGE_SENDSTACK_APP_SECRET": "b",
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "BRIDGE_STREAM_MAPPING_FILE": str(mapping),
        },
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "line 6, $.rules.p.fields.speed.unit: 'furlongs' is not one of" in (
        result.stderr
    )
    assert "fixTime is required in position records" in result.stderr
    assert "latitude is required in position records" in result.stderr
