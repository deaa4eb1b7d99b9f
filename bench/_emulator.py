"""The emulator in load mode, as its own process for benchmarks.

``python -m bench._emulator --devices 1000 --frame-items 50``

Unlike ``sendstack-emulator`` this sets the slow-consumer grace very
high: in load mode the emulator is meant to out-produce the bridge, so its
per-socket queue is full most of the time and the bridge must be back-pressured
(TCP and websockets flow control), not closed with 1013 after 5 s.

Prints one JSON line when ready: ``{"event": "emulator_ready", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import orjson

from bridgelab.emulator import Emulator
from bridgelab.emulator.config import EmulatorConfig


def config(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        devices=args.devices,
        max_frames_per_second=None,  # load mode: as fast as the socket takes it
        frame_items=args.frame_items,
        send_queue_frames=args.queue_frames,
        slow_consumer_grace_seconds=3_600.0,
        seed=args.seed,
    )


async def serve(cfg: EmulatorConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Emulator(cfg) as emu:
        ready = {
            "event": "emulator_ready",
            "base_url": emu.base_url,
            "ws_url": emu.ws_url,
            "admin_url": emu.admin_url,
            "app_id": cfg.app_id,
            "app_secret": cfg.app_secret,
            "devices": cfg.devices,
            "frame_items": cfg.frame_items,
            "send_queue_frames": cfg.send_queue_frames,
        }
        sys.stdout.write(orjson.dumps(ready).decode() + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._emulator")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--frame-items", type=int, default=50)
    p.add_argument("--queue-frames", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(config(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
