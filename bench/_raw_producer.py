"""The raw baseline: a plain ``AIOKafkaProducer`` loop replaying captured records.

``python -m bench._raw_producer SPEC.json`` where the spec holds the producer
keyword arguments (the bridge's own, see
``bridge.adapters.kafka_client.producer_settings``) and the records (topic,
key, value, headers; bytes in base64) to send in a loop.

Sending is pipelined like the bridge's sink: ``send()`` returns a delivery
future, at most ``max_in_flight`` are pending, and the oldest ``chunk`` are
awaited once the bound is reached. Nothing else happens per record.

The parent drives it over stdin, one command per line, and reads one JSON line
per command from stdout, so it can take CPU times of this process at the same
instants (as it does for the bridge):

* ``mark``  -> ``{"acked": n, "sent": n, "t": monotonic}``
* ``stop``  -> stops sending, awaits every pending future, stops the producer,
  then ``{"acked": n, "sent": n, "failed": n, ...}`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

Record = tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]


def decode_records(raw: list[dict[str, Any]]) -> list[Record]:
    out: list[Record] = []
    for r in raw:
        key = None if r["key"] is None else base64.b64decode(r["key"])
        headers = [(name, base64.b64decode(v)) for name, v in r["headers"]]
        out.append((r["topic"], base64.b64decode(r["value"]), key, headers))
    return out


@dataclass
class State:
    sent: int = 0
    acked: int = 0  # futures awaited successfully
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    pending: deque[asyncio.Future[Any]] = field(default_factory=deque)
    stopping: bool = False

    def settle(self, fut: asyncio.Future[Any]) -> None:
        exc = fut.exception()
        if exc is None:
            self.acked += 1
        else:
            self.failed += 1
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    def acked_now(self) -> int:
        """Awaited acks plus pending futures that are already done."""
        done = sum(1 for f in self.pending if f.done() and f.exception() is None)
        return self.acked + done


async def pump(
    producer: AIOKafkaProducer,
    records: list[Record],
    state: State,
    *,
    max_in_flight: int,
    chunk: int,
) -> None:
    pending = state.pending
    n = len(records)
    i = 0
    while not state.stopping:
        topic, value, key, headers = records[i]
        i = i + 1 if i + 1 < n else 0
        pending.append(await producer.send(topic, value, key=key, headers=headers))
        state.sent += 1
        if len(pending) >= max_in_flight:
            for _ in range(chunk):
                fut = pending.popleft()
                if not fut.done():
                    await asyncio.wait((fut,))
                state.settle(fut)


async def drain(state: State) -> None:
    while state.pending:
        fut = state.pending.popleft()
        if not fut.done():
            await asyncio.wait((fut,))
        state.settle(fut)


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def run(spec: dict[str, Any]) -> int:
    records = decode_records(spec["records"])
    producer = AIOKafkaProducer(**spec["producer"])
    await producer.start()
    state = State()
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), sys.stdin
    )
    task = asyncio.create_task(
        pump(
            producer,
            records,
            state,
            max_in_flight=int(spec["max_in_flight"]),
            chunk=int(spec["chunk"]),
        ),
        name="raw-pump",
    )
    reply({"event": "raw_ready", "records": len(records)})
    while True:
        line = (await commands.readline()).strip()
        if line == b"mark":
            reply(
                {"acked": state.acked_now(), "sent": state.sent, "t": time.monotonic()}
            )
        elif line in (b"stop", b""):
            break
    state.stopping = True
    await task
    await drain(state)
    await producer.stop()
    reply(
        {
            "acked": state.acked,
            "sent": state.sent,
            "failed": state.failed,
            "errors": state.errors,
            "t": time.monotonic(),
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._raw_producer")
    p.add_argument("spec", type=Path)
    args = p.parse_args(argv)
    return asyncio.run(run(orjson.loads(args.spec.read_bytes())))


if __name__ == "__main__":
    sys.exit(main())
