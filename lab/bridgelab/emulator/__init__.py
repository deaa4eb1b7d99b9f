"""A local, faithful-as-documented Sendstack for tests and the demo.

REST (``/auth/session`` and live-tracking reads), the tracking websocket and a
loopback-only admin API for fault injection. Other wire shapes, Socket.IO,
capture replay and session policies: docs/emulator-wires.md. Start it with::

    async with Emulator(EmulatorConfig()) as emu: ...
"""

from bridgelab.emulator.config import EmulatorConfig
from bridgelab.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig"]
