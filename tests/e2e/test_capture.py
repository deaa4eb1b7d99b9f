"""``sendstack-bridge capture`` as a user runs it, against the emulator."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from bridge.core.capture import frame_bytes
from bridge.core.codec import TraccarJsonCodec
from bridgelab.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.e2e


async def test_capture_records_frames_opens_and_rotations_without_secrets(
    tmp_path: Path,
) -> None:
    """No Kafka configured: frames verbatim, rotations noted, no token or secret."""
    out = tmp_path / "wire.jsonl"
    config = EmulatorConfig(
        devices=5, max_frames_per_second=10.0, session_ttl_seconds=3.0
    )
    async with Emulator(config) as emu:
        env = {
            "BRIDGE_SENDSTACK_BASE_URL": emu.base_url,
            "BRIDGE_SENDSTACK_APP_ID": emu.config.app_id,
            "BRIDGE_SENDSTACK_APP_SECRET": emu.config.app_secret,
            "BRIDGE_STREAM_URL": emu.ws_url,
            "BRIDGE_SESSION_REFRESH_BEFORE_SECONDS": "1.0",
            "BRIDGE_SESSION_REFRESH_JITTER_SECONDS": "0.1",
        }
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "capture",
            "--duration",
            "6",
            "--out",
            str(out),
            env={**clean, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        printed, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        secret = emu.config.app_secret
    assert proc.returncode == 0, printed.decode()
    text = out.read_text()
    header, *events = [orjson.loads(line) for line in text.splitlines()]
    kinds = [e["kind"] for e in events]
    frames = [e for e in events if e["kind"] == "frame"]
    assert header["capture"] == 1
    assert "session=***" in header["url"]
    assert kinds[0] == "open"
    assert kinds.count("rotation") >= 1, kinds
    assert kinds.count("open") >= 2
    assert len(frames) >= 10
    codec = TraccarJsonCodec()
    assert all(codec.decode(frame_bytes(f)).rejection is None for f in frames)
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    assert secret not in text
    assert "eyJ" not in text
    assert f"captured {len(frames)} frames" in printed.decode()
