"""The emulator's command line, run as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import orjson

from bridgelab.emulator.cli import build_parser, config_from_args


def test_config_from_flags_and_environment() -> None:
    """Flags win over EMULATOR_APP_* env vars; rate 0 means load mode."""
    args = build_parser().parse_args(
        ["--rate", "0", "--ttl", "5", "--single-session", "--app-id", "flag-id"]
    )
    config = config_from_args(
        args, {"EMULATOR_APP_ID": "env-id", "EMULATOR_APP_SECRET": "env-secret"}
    )
    assert config.app_id == "flag-id"
    assert config.app_secret == "env-secret"
    assert config.max_frames_per_second is None
    assert config.session_ttl_seconds == 5
    assert config.single_session is True


async def test_cli_announces_ready_serves_and_stops_on_sigterm() -> None:
    """The process prints emulator_ready as JSON, serves, and exits 0 on SIGTERM."""
    env = {**os.environ, "EMULATOR_APP_ID": "cli-app", "EMULATOR_APP_SECRET": "cli-s3"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridgelab.emulator",
        "--devices",
        "3",
        "--ttl",
        "60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        ready = orjson.loads(line)
        assert set(ready) == {"event", "base_url", "ws_url", "admin_url"}
        assert ready["event"] == "emulator_ready"
        async with httpx.AsyncClient(timeout=5) as http:
            resp = await http.post(
                f"{ready['base_url']}/auth/session",
                headers={"app_id": "cli-app", "app_secret": "cli-s3"},
            )
            stats = await http.get(f"{ready['admin_url']}/stats")
        assert resp.status_code == 200
        assert stats.json()["fleet"]["devices"] == 3
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
