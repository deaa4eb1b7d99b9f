"""``sendstack-emulator``: run the emulator until SIGINT/SIGTERM.

Prints one JSON line on stdout when ready::

    {"event":"emulator_ready","base_url":...,"ws_url":...,"admin_url":...}
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

import orjson

from bridge.errors import ConfigError
from bridgelab.emulator.config import DEMO_APP_ID, DEMO_APP_SECRET, EmulatorConfig
from bridgelab.emulator.server import Emulator

ENV_APP_ID = "EMULATOR_APP_ID"
ENV_APP_SECRET = "EMULATOR_APP_SECRET"  # noqa: S105 - a variable name, not a secret


def build_parser() -> argparse.ArgumentParser:
    """The emulator's command-line flags."""
    defaults = EmulatorConfig()
    p = argparse.ArgumentParser(
        prog="sendstack-emulator",
        description="Run a local Sendstack emulator (REST, websocket, admin API).",
    )
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--http-port", type=int, default=defaults.http_port)
    p.add_argument("--ws-port", type=int, default=defaults.ws_port)
    p.add_argument(
        "--admin-port",
        type=int,
        default=defaults.admin_port,
        help="admin API port; it always binds 127.0.0.1",
    )
    p.add_argument("--app-id", help=f"default: ${ENV_APP_ID} or {DEMO_APP_ID!r}")
    p.add_argument("--app-secret", help=f"default: ${ENV_APP_SECRET} or the demo one")
    p.add_argument(
        "--ttl",
        type=float,
        default=defaults.session_ttl_seconds,
        help="session lifetime in seconds",
    )
    p.add_argument("--devices", type=int, default=defaults.devices)
    p.add_argument(
        "--rate",
        type=float,
        default=defaults.max_frames_per_second,
        help="max frames per second; 0 = unthrottled load mode",
    )
    p.add_argument("--frame-items", type=int, default=defaults.frame_items)
    p.add_argument("--single-session", action="store_true")
    p.add_argument("--strict-source-header", action="store_true")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--ws-path", default=defaults.ws_path)
    p.add_argument("--session-query-key", default=defaults.session_query_key)
    p.add_argument(
        "--event-names", choices=("traccar", "sendstack"), default=defaults.event_names
    )
    p.add_argument("--fixtures", help="frame template JSON replacing the packaged one")
    p.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> EmulatorConfig:
    """Flags first, then the environment, then the demo credentials."""
    return EmulatorConfig(
        host=args.host,
        http_port=args.http_port,
        ws_port=args.ws_port,
        admin_port=args.admin_port,
        app_id=args.app_id or environ.get(ENV_APP_ID) or DEMO_APP_ID,
        app_secret=args.app_secret or environ.get(ENV_APP_SECRET) or DEMO_APP_SECRET,
        session_ttl_seconds=args.ttl,
        devices=args.devices,
        max_frames_per_second=args.rate or None,
        frame_items=args.frame_items,
        single_session=args.single_session,
        strict_source_header=args.strict_source_header,
        seed=args.seed,
        ws_path=args.ws_path,
        session_query_key=args.session_query_key,
        event_names=args.event_names,
        fixtures_path=args.fixtures,
    )


async def serve(config: EmulatorConfig) -> None:
    """Run until SIGINT or SIGTERM, announcing readiness on stdout."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(config) as emu:
            ready = {
                "event": "emulator_ready",
                "base_url": emu.base_url,
                "ws_url": emu.ws_url,
                "admin_url": emu.admin_url,
            }
            sys.stdout.write(orjson.dumps(ready).decode() + "\n")
            sys.stdout.flush()
            await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        config = config_from_args(args, os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
