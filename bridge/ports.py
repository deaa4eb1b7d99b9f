"""The seams between workers and the outside world.

Workers depend on these protocols only; ``bridge.app`` plugs in the adapters
(httpx, websockets, aiokafka) and tests plug in fakes. Every method raises
only ``bridge.errors`` types for expected failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bridge.core.records import OutboundRecord
from bridge.secrets import Secret


class Clock(Protocol):
    """Wall time, monotonic time and sleeping, injectable for tests."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """What the session endpoint returned: the token and its expiry (epoch s)."""

    token: Secret
    expires_at: float


class SessionSource(Protocol):
    """Obtains a fresh Sendstack session (``POST {base}/auth/session``).

    Raises ``SessionRejected`` (bad credentials), ``AuthLockedOut`` (429),
    ``UpstreamUnavailable`` (network/5xx) or ``UpstreamProtocolError``.
    """

    async def obtain(self) -> SessionGrant: ...


class UpstreamConnection(Protocol):
    """One open tracking socket."""

    @property
    def connection_id(self) -> int: ...

    async def recv(self) -> bytes:
        """The next frame's bytes; raises ``UpstreamClosed`` once closed."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        ...


class UpstreamConnector(Protocol):
    """Opens tracking sockets with a given session token.

    Raises ``SessionRejected`` when the upgrade is refused for the session,
    and ``UpstreamUnavailable`` for every other failure to connect.
    """

    async def open(self, token: Secret) -> UpstreamConnection: ...


@dataclass(frozen=True, slots=True)
class SinkStatistics:
    """What the record sink holds and has done."""

    in_flight_records: int
    in_flight_bytes: int
    acked: int
    retried: int
    connected: bool


class RecordSink(Protocol):
    """Delivers records to Kafka, at least once, with bounded memory.

    ``send`` returns once the record is accepted into the bounded buffer and
    blocks while the buffer is full (that is the backpressure). Accepted
    records are retried until Kafka acknowledges them; none is dropped.
    """

    async def send(self, record: OutboundRecord) -> None: ...

    async def flush(self, grace: float) -> bool:
        """Wait until every accepted record is acknowledged; False on timeout."""
        ...

    def statistics(self) -> SinkStatistics: ...
