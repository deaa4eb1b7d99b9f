"""``python -m bridge stream``, with ``StreamApp`` built inside the event loop.

A fallback for the benchmark only: ``bridge.cli._stream`` builds ``StreamApp``
(hence an ``AIOKafkaProducer``) before ``asyncio.run``, which aiokafka refuses
("The object should be created within an async function"). The benchmark
tries the real CLI first and uses this only when the CLI fails that way. It
does what the CLI does otherwise: the same settings loader, logging setup and
``bridge.cli._serve`` (signals, shutdown).
"""

from __future__ import annotations

import asyncio
import os
import sys

from bridge.cli import _serve
from bridge.config import REQUIREMENTS, load_settings
from bridge.errors import ConfigError
from bridge.logs import configure_logging


async def _main() -> int:
    from bridge.app import StreamApp

    settings = load_settings(os.environ, require=REQUIREMENTS["stream"])
    configure_logging(settings.log.level, settings.log.format)
    return await _serve(StreamApp(settings))


def main() -> int:
    try:
        return asyncio.run(_main())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
