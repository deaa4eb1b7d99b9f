"""The seams between workers and the outside world.

Workers depend on these protocols only; ``bridge.app`` plugs in the adapters
(httpx, websockets, aiokafka) and tests plug in fakes. Every method raises
only ``bridge.errors`` types for expected failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bridge.core.records import OutboundRecord
from bridge.errors import UpstreamClosed
from bridge.secrets import Secret

if TYPE_CHECKING:
    from bridge.core.commands import Command, RestRequest
    from bridge.core.session import Session
    from bridge.core.standby import AckedDigests


class Clock(Protocol):
    """Wall time, monotonic time, sleeping and timeouts, injectable for tests.

    Workers take every duration through this port; tests run them on a
    virtual event-loop clock (looptime), where ``monotonic``, ``sleep`` and
    ``timeout`` all follow the fake time.
    """

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """Cancel the block after ``seconds`` and raise ``TimeoutError``."""
        ...


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


class SessionHolder(Protocol):
    """Who holds the current Sendstack session (the session keeper).

    The stream pump asks it for sessions and reports refusals; it never
    obtains one itself, so only one place counts failures toward the lockout.
    """

    async def wait_for_session(self) -> Session:
        """A valid session, waiting for one if needed."""
        ...

    async def wait_newer(self, generation: int) -> Session:
        """Wait for a valid session newer than ``generation``."""
        ...

    def report_rejected(self, generation: int) -> None:
        """The tracking socket refused session ``generation``."""
        ...

    def report_refused_upgrade(self, generation: int, status: int) -> float:
        """The tracking socket's upgrade was answered ``status`` (a 4xx).

        It counts toward the session failure budget, because Sendstack may
        count it toward its lockout. Returns how long to wait before the next
        upgrade so that the budget holds (0 when it does already).
        """
        ...

    def renewing(self, generation: int, within: float) -> bool:
        """Whether a session newer than ``generation`` is being requested now
        or was obtained less than ``within`` seconds ago (a rotation is under
        way, so a server may just have ended the older session's socket)."""
        ...


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

    async def wait_closed(self) -> UpstreamClosed:
        """Return once the connection has ended, with how it ended.

        It may end while frames are still queued for ``recv`` (and while the
        pump is not reading, e.g. waiting on a full sink): this is how the
        pump learns of it at once rather than at its next read.
        """
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


# -- commands ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """One command message as consumed from Kafka."""

    topic: str
    partition: int
    offset: int
    value: bytes


class RebalanceHandler(Protocol):
    """What the command worker does when partitions move."""

    async def on_revoked(self, partitions: set[int]) -> None: ...

    async def on_assigned(self, partitions: set[int]) -> None: ...


class CommandSource(Protocol):
    """The command topic, consumed in a group with manual commits."""

    async def fetch(self, max_records: int, wait: float) -> list[SourceMessage]: ...

    async def commit(self, offsets: dict[int, int]) -> None:
        """Commit ``{partition: next offset to read}``."""
        ...

    def assignment(self) -> set[int]: ...

    def lag(self) -> dict[int, int]: ...


class RecordSubmitter(Protocol):
    """Hands records to Kafka and tells when each one is acknowledged (webhooks)."""

    def is_connected(self) -> bool:
        """False while the producer is not started or its last send failed."""
        ...

    def submit(self, record: OutboundRecord) -> asyncio.Future[None]:
        """Start publishing; the future resolves on Kafka's ack.

        It fails (with ``PublishError``) only if the record could not be
        handed over at all.
        """
        ...


class AckingPublisher(Protocol):
    """Publishes one record and returns only once Kafka acknowledged it.

    Raises ``PublishError`` if Kafka did not acknowledge within its deadline.
    """

    async def publish(self, record: OutboundRecord) -> None: ...


class CallPermit(Protocol):
    """The worker's say on whether a write call for one command may go now."""

    async def before_call(self, deadline: float) -> bool:
        """Wait until this worker may call; False if ``deadline`` passed first.

        The first time, it writes the command's ``started`` marker and waits
        for Kafka's ack. Raises ``CommandReleased`` once the worker may no
        longer call for this command (partition revoked or lease lost).
        """
        ...


@dataclass(slots=True)
class Execution:
    """How a command ended at Sendstack (what the runner tells the worker)."""

    outcome: str  # succeeded | failed | rejected | ambiguous
    response: object | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    first_attempt_at: float | None = None
    reconciled: bool = False


class CommandRunner(Protocol):
    """Carries out one command against Sendstack (the executor)."""

    async def execute(
        self,
        command: Command,
        request: RestRequest,
        *,
        deadline: float,
        permit: CallPermit,
        ambiguous_since: float | None = None,
    ) -> Execution:
        """Run ``request`` politely until it ends; see ``CommandExecutor``."""
        ...


class StateLog(Protocol):
    """Reads the command state and result topics, to know what was done."""

    async def catch_up(self) -> list[tuple[str, str, bytes]]:
        """Every (topic, key, value) written since the last call, up to the end."""
        ...


class RestGateway(Protocol):
    """Sends one request to Sendstack's REST API.

    Returns (status, body, headers); raises ``RestUnavailable`` (with
    ``ambiguous`` set when the request may have reached Sendstack).
    """

    async def execute(
        self, request: RestRequest
    ) -> tuple[int, bytes, Mapping[str, str]]: ...


class RoleHandler(Protocol):
    """What the stream does when the coordination group moves accounts."""

    async def on_leading(self, accounts: frozenset[str]) -> None:
        """This replica now leads these accounts: take over, then publish."""
        ...

    async def on_deposed(self, accounts: frozenset[str]) -> None:
        """This replica no longer leads these: stop publishing before returning."""
        ...

    async def on_fenced(self, accounts: frozenset[str]) -> None:
        """This replica lost the group coordinator for a session while leading
        these: another replica may lead them now, or (Kafka down for all) no
        one. Keep journaling what arrives: duplicates with their ``ce_id`` if
        another took over, and no gap if none could. The next assignment says
        which (``on_leading`` again, or ``on_deposed``)."""
        ...


class Election(Protocol):
    """Kafka's group protocol on the coordination topic: one partition per
    account; the member holding an account's partition leads it."""

    async def start(self, handler: RoleHandler) -> None:
        """Join the group (raises the client's error if Kafka is unreachable)."""
        ...

    async def run(self) -> None:
        """Keep the membership alive until cancelled (handler calls happen here)."""
        ...

    async def stop(self) -> None:
        """Leave the group, so that the others take over at once."""
        ...

    def leading(self) -> frozenset[str]:
        """The accounts this replica leads now."""
        ...

    def in_contact(self) -> bool:
        """Whether the group coordinator answered recently enough that
        ``leading`` is the group's word, not a paused member's memory."""
        ...


class Fencing(Protocol):
    """Kafka transactions per account (``BRIDGE_HA_TRANSACTIONAL_ID``): a new
    leader's producer fences the old leader's, so a deposed leader that has
    not heard of it yet cannot publish beside its successor."""

    async def claim(self, account: str, within: float) -> bool:
        """Take the account's transactional id (fencing its other holder);
        False if that did not happen within ``within`` seconds (it goes on
        trying; nothing is published unfenced meanwhile)."""
        ...

    def disown(self, account: str) -> None:
        """Another replica leads the account: let go of what waits for it."""
        ...


class ProgressLog(Protocol):
    """The leaders' progress messages (digests of acknowledged records)."""

    async def start(self) -> None: ...

    async def run(self) -> None:
        """Read every account's progress into its acked window until cancelled."""
        ...

    async def stop(self) -> None: ...

    def acked(self, account: str) -> AckedDigests:
        """The account's window of digests its leader reported acknowledged."""
        ...

    async def caught_up(self, account: str, within: float) -> bool:
        """Wait until every progress message written so far for ``account`` is
        read (False if that takes longer than ``within`` seconds)."""
        ...

    async def publish(self, account: str, digests: Sequence[int]) -> None:
        """Write one progress message; returns once Kafka acknowledged it."""
        ...
