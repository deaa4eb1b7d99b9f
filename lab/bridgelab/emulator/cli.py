"""``sendstack-emulator``: run the emulator until SIGINT/SIGTERM.

Prints one JSON line on stdout when ready::

    {"event":"emulator_ready","base_url":...,"ws_url":...,"admin_url":...}

(plus ``"socketio_url"`` with ``--transport socketio``). The wire options
(``--wire-shape``, ``--transport``, ``--replay``, ``--session-policy``) are
described in docs/emulator-wires.md.
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
from bridgelab.emulator.config import (
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    SESSION_IN,
    SESSION_POLICIES,
    TRANSPORTS,
    WIRE_SHAPES,
    EmulatorConfig,
)
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
    p.add_argument(
        "--single-session",
        action="store_true",
        help="same as --session-policy revoke-4001",
    )
    p.add_argument(
        "--session-policy",
        choices=SESSION_POLICIES,
        default=defaults.session_policy,
        help="what a second session or socket does to the first",
    )
    p.add_argument("--strict-source-header", action="store_true")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--ws-path", default=defaults.ws_path)
    p.add_argument("--session-query-key", default=defaults.session_query_key)
    p.add_argument(
        "--event-names", choices=("traccar", "sendstack"), default=defaults.event_names
    )
    p.add_argument("--fixtures", help="frame template JSON replacing the packaged one")
    p.add_argument(
        "--wire-shape",
        choices=WIRE_SHAPES,
        default=defaults.wire_shape,
        help="how items are laid out (see bridgelab/emulator/shapes.py)",
    )
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=defaults.transport,
        help="socketio: python-socketio (Engine.IO v4) on --ws-port",
    )
    p.add_argument("--socketio-path", default=defaults.socketio_path)
    p.add_argument(
        "--socketio-session-in",
        choices=SESSION_IN,
        default=defaults.socketio_session_in,
        help='query: ?<session-query-key>=; auth: CONNECT\'s {"token": ...}',
    )
    p.add_argument(
        "--socketio-ping-interval",
        type=float,
        default=defaults.socketio_ping_interval,
        help="Engine.IO ping interval in seconds",
    )
    p.add_argument(
        "--socketio-ping-timeout",
        type=float,
        default=defaults.socketio_ping_timeout,
        help="Engine.IO ping timeout in seconds",
    )
    p.add_argument(
        "--replay",
        metavar="FILE",
        help="send this `sendstack-bridge capture` file to every socket",
    )
    p.add_argument(
        "--replay-speed",
        type=float,
        default=defaults.replay_speed,
        help="time scale of the replay; 0 = as fast as possible",
    )
    p.add_argument("--replay-loop", action="store_true", help="replay forever")
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
        session_policy=args.session_policy,
        wire_shape=args.wire_shape,
        transport=args.transport,
        socketio_path=args.socketio_path,
        socketio_session_in=args.socketio_session_in,
        socketio_ping_interval=args.socketio_ping_interval,
        socketio_ping_timeout=args.socketio_ping_timeout,
        replay_file=args.replay,
        replay_speed=args.replay_speed,
        replay_loop=args.replay_loop,
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
            if config.transport == "socketio":
                ready["socketio_url"] = emu.socketio_url
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
        asyncio.run(serve(config))
    except ConfigError as exc:  # a bad option, or an unreadable --replay file
        sys.stderr.write(f"{exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
