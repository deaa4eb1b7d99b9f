"""Fakes behind the ports, for driving each worker loop in virtual time.

Worker tests run under ``looptime`` (``@pytest.mark.looptime``): the event
loop's clock is virtual and jumps to the next timer whenever every task is
waiting, so ``asyncio.sleep``, ``asyncio.timeout`` and `LoopClock` agree on
one fake time, and an hour of backoff takes milliseconds. Nothing here
imports a worker: these are the ports' other side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal

from bridge.core.commands import RestRequest
from bridge.core.records import OutboundRecord
from bridge.core.session import Session
from bridge.core.standby import AckedDigests
from bridge.errors import (
    PublishError,
    RestUnavailable,
    SessionRejected,
    UpstreamClosed,
    UpstreamUnavailable,
)
from bridge.ports import SessionGrant, SinkStatistics, SourceMessage
from bridge.secrets import Secret

EPOCH = 1_800_000_000.0  # the fake wall clock's start (2027-01-15)


class LoopClock:
    """``Clock`` on the event loop's (virtual, under looptime) time."""

    def time(self) -> float:
        return EPOCH + asyncio.get_running_loop().time()

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(None if seconds is None else max(0.0, seconds))


def now() -> float:
    """Virtual seconds since the loop started."""
    return asyncio.get_running_loop().time()


async def until(
    predicate: Callable[[], object], within: float = 60.0, every: float = 0.01
) -> None:
    """Wait (in virtual time) until ``predicate()`` holds; fail after ``within``.

    The fakes record when things happen, so ``every`` only bounds how late
    the test notices; keep it coarse for waits of hours.
    """
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - a condition on the fakes' state
            await asyncio.sleep(every)


# -- the stream ------------------------------------------------------------------


class FakeHolder:
    """``SessionHolder``: hands out sessions the test issues."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self._changed = asyncio.Condition()
        self.rejected: list[int] = []
        # Refused upgrades reported (generation, status), and what the
        # failure budget answers to each (seconds to hold off).
        self.refused_upgrades: list[tuple[int, int]] = []
        self.refusal_wait = 0.0
        self.requesting = False  # a newer session is being requested

    async def issue(self, generation: int, *, ttl: float = 21_600.0) -> None:
        at = EPOCH + now()
        session = Session(
            token=Secret(f"token-{generation}"),
            obtained_at=at,
            expires_at=at + ttl,
            generation=generation,
        )
        async with self._changed:
            self._session = session
            self._changed.notify_all()

    async def wait_for_session(self) -> Session:
        async with self._changed:
            await self._changed.wait_for(lambda: self._session is not None)
        assert self._session is not None
        return self._session

    async def wait_newer(self, generation: int) -> Session:
        def newer() -> bool:
            return self._session is not None and self._session.generation > generation

        async with self._changed:
            await self._changed.wait_for(newer)
        assert self._session is not None
        return self._session

    def report_rejected(self, generation: int) -> None:
        self.rejected.append(generation)

    def report_refused_upgrade(self, generation: int, status: int) -> float:
        self.refused_upgrades.append((generation, status))
        return self.refusal_wait

    def renewing(self, generation: int, within: float) -> bool:
        s = self._session
        if s is None:
            return False
        if s.generation > generation:
            return EPOCH + now() - s.obtained_at < within
        return self.requesting

    def token_generation(self, token: str) -> int:
        """The generation a ``token-<n>`` token was issued for."""
        return int(token.rsplit("-", 1)[1])


class FakeConnection:
    """``UpstreamConnection``: frames the test pushes; close ends ``recv``."""

    def __init__(self, connection_id: int, token: str) -> None:
        self.connection_id = connection_id
        self.token = token
        self.opened_at = now()
        self.closed: tuple[int, str] | None = None
        self._frames: asyncio.Queue[bytes | UpstreamClosed] = asyncio.Queue()
        self._ended: asyncio.Future[UpstreamClosed] = (
            asyncio.get_running_loop().create_future()
        )

    def push(self, frame: bytes) -> None:
        self._frames.put_nowait(frame)

    def drop(self, code: int = 1006, reason: str = "connection lost") -> None:
        """The server side closes (or the connection just vanishes)."""
        ending = UpstreamClosed(code, reason)
        self._frames.put_nowait(ending)
        if not self._ended.done():
            self._ended.set_result(ending)

    async def wait_closed(self) -> UpstreamClosed:
        return await asyncio.shield(self._ended)

    async def recv(self) -> bytes:
        item = await self._frames.get()
        if isinstance(item, UpstreamClosed):
            self._frames.put_nowait(item)  # every later recv fails the same way
            raise item
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.drop(code, reason)

    def abort(self) -> None:
        if self.closed is None:
            self.closed = (1006, "aborted")
            self.drop(1006, "aborted")


class FakeConnector:
    """``UpstreamConnector``: ``open`` succeeds unless a failure is queued."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self.attempts: list[float] = []  # virtual time of every open()
        self.failures: list[Exception] = []
        self.opened = asyncio.Event()

    async def open(self, token: Secret) -> FakeConnection:
        self.attempts.append(now())
        if self.failures:
            raise self.failures.pop(0)
        conn = FakeConnection(len(self.connections) + 1, token.reveal())
        self.connections.append(conn)
        self.opened.set()
        return conn


OneSocketPolicy = Literal["replace-4409", "refuse-409", "revoke-4001"]


class TrackedConnection(FakeConnection):
    """A ``FakeConnection`` that records when it ended, and who ended it."""

    def __init__(self, connection_id: int, token: str) -> None:
        super().__init__(connection_id, token)
        self.ended_at: float | None = None
        self.ended_by: str | None = None  # "client" | "server"
        self.pushed: list[int] = []  # seqs the upstream wrote to this socket

    @property
    def live(self) -> bool:
        return self.ended_at is None

    def drop(self, code: int = 1006, reason: str = "connection lost") -> None:
        if self.ended_at is None:
            self.ended_at, self.ended_by = now(), "server"
        super().drop(code, reason)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ended_at is None:
            self.ended_at, self.ended_by = now(), "client"
        await super().close(code, reason)

    def abort(self) -> None:
        if self.ended_at is None:
            self.ended_at, self.ended_by = now(), "client"
        super().abort()


class OneSocketUpstream:
    """``UpstreamConnector`` of an upstream that allows one socket at a time.

    * ``replace-4409``: a newer socket opens, then the older ones are closed
      with 4409;
    * ``refuse-409``: an upgrade is refused with HTTP 409 while a socket is
      open;
    * ``revoke-4001``: issuing a session (``issue``) closes the sockets of
      older sessions with 4001, and their tokens are refused (401).

    Every upgrade takes ``handshake`` virtual seconds. ``run_fleet`` writes a
    numbered position frame to every live socket every ``interval`` seconds.
    """

    def __init__(
        self,
        policy: OneSocketPolicy,
        holder: FakeHolder,
        *,
        handshake: float = 0.05,
        frame: Callable[[int], bytes],
    ) -> None:
        self.policy = policy
        self.holder = holder
        self.handshake = handshake
        self.frame = frame
        self.connections: list[TrackedConnection] = []
        self.attempts: list[float] = []
        self.refused: list[float] = []  # virtual time of every refused upgrade
        self.revoked_below = 0  # tokens of generations below this are refused
        self.written: list[int] = []  # seqs written to at least one socket
        self._seq = 0

    def live(self) -> list[TrackedConnection]:
        return [c for c in self.connections if c.live]

    async def open(self, token: Secret) -> TrackedConnection:
        self.attempts.append(now())
        await asyncio.sleep(self.handshake)
        revealed = token.reveal()
        if self.holder.token_generation(revealed) < self.revoked_below:
            raise SessionRejected(
                "tracking socket refused the session (HTTP 401)", status=401
            )
        older = self.live()
        if self.policy == "refuse-409" and older:
            self.refused.append(now())
            raise UpstreamUnavailable(
                "tracking socket upgrade failed (HTTP 409)", status=409
            )
        conn = TrackedConnection(len(self.connections) + 1, revealed)
        self.connections.append(conn)
        if self.policy == "replace-4409":
            for other in older:
                other.drop(4409, "replaced by a newer connection")
        return conn

    async def issue(self, generation: int, *, ttl: float = 21_600.0) -> None:
        """Issue a session; ``revoke-4001`` ends the older sessions' sockets."""
        await self.holder.issue(generation, ttl=ttl)
        if self.policy == "revoke-4001":
            self.revoked_below = generation
            for conn in self.live():
                if self.holder.token_generation(conn.token) < generation:
                    conn.drop(4001, "session replaced")

    async def run_fleet(self, interval: float = 0.1) -> None:
        """Write frame after frame to every live socket (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            self._seq += 1
            targets = self.live()
            for conn in targets:
                conn.push(self.frame(self._seq))
                conn.pushed.append(self._seq)
            if targets:
                self.written.append(self._seq)


class FakeSink:
    """``RecordSink``: accepts everything at once and keeps it."""

    def __init__(self) -> None:
        self.records: list[OutboundRecord] = []

    async def send(self, record: OutboundRecord) -> None:
        self.records.append(record)

    async def flush(self, grace: float) -> bool:
        return True

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(0, 0, len(self.records), 0, True)


@dataclass
class FakeSessionSource:
    """``SessionSource``: answers from a script of grants and exceptions."""

    script: list[SessionGrant | Exception] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    ttl: float = 3_600.0

    async def obtain(self) -> SessionGrant:
        self.calls.append(now())
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        return SessionGrant(Secret(f"t{len(self.calls)}"), EPOCH + now() + self.ttl)


# -- commands ----------------------------------------------------------------------


Reply = tuple[int, bytes, Mapping[str, str]]


@dataclass
class FakeGateway:
    """``RestGateway``: replies from a script per path, else a default."""

    default: Reply = (200, b'{"status":true,"message":"ok","data":{}}', {})
    by_path: dict[str, list[Reply | RestUnavailable]] = field(default_factory=dict)
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    latency: float = 0.0

    async def execute(self, request: RestRequest) -> Reply:
        self.calls.append((now(), request.method, request.path))
        if self.latency:
            await asyncio.sleep(self.latency)
        script = self.by_path.get(request.path)
        step = script.pop(0) if script else self.default
        if isinstance(step, RestUnavailable):
            raise step
        return step


@dataclass
class FakePublisher:
    """``AckingPublisher``: acks at once, or fails while ``down``."""

    records: list[OutboundRecord] = field(default_factory=list)
    down: bool = False

    async def publish(self, record: OutboundRecord) -> None:
        if self.down:
            raise PublishError("Kafka is down (fake)")
        self.records.append(record)

    def on(self, topic: str) -> list[OutboundRecord]:
        return [r for r in self.records if r.topic == topic]


class FakeStateLog:
    """``StateLog`` over the fake publisher's records: the log every worker reads."""

    def __init__(self, publisher: FakePublisher, topics: tuple[str, ...]) -> None:
        self._publisher = publisher
        self._topics = topics
        self._read = 0

    async def catch_up(self) -> list[tuple[str, str, bytes]]:
        records = self._publisher.records[self._read :]
        self._read = len(self._publisher.records)
        return [
            (r.topic, (r.key or b"").decode(), r.value)
            for r in records
            if r.topic in self._topics and r.key is not None
        ]


class FakeSource:
    """``CommandSource``: one topic's messages, all assigned to this worker."""

    def __init__(self, topic: str, partitions: int = 1) -> None:
        self.topic = topic
        self._partitions = set(range(partitions))
        self._queue: asyncio.Queue[SourceMessage] = asyncio.Queue()
        self._next: dict[int, int] = {}
        self.committed: dict[int, int] = {}

    def put(self, value: bytes, partition: int = 0) -> None:
        offset = self._next.get(partition, 0)
        self._next[partition] = offset + 1
        self._queue.put_nowait(SourceMessage(self.topic, partition, offset, value))

    async def fetch(self, max_records: int, wait: float) -> list[SourceMessage]:
        out: list[SourceMessage] = []
        try:
            async with asyncio.timeout(wait):
                out.append(await self._queue.get())
        except TimeoutError:
            return out
        while not self._queue.empty() and len(out) < max_records:
            out.append(self._queue.get_nowait())
        return out

    async def commit(self, offsets: dict[int, int]) -> None:
        self.committed.update(offsets)

    def assignment(self) -> set[int]:
        return set(self._partitions)

    def lag(self) -> dict[int, int]:
        return {}


class GatedSink(FakeSink):
    """``FakeSink`` whose ``send`` waits while ``open`` is clear (a full buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()

    async def send(self, record: OutboundRecord) -> None:
        await self.open.wait()
        await super().send(record)


class FakeProgressLog:
    """``ProgressLog``: acked windows in memory; ``caught_up`` waits for ``ready``."""

    def __init__(self, *, window: float = 60.0) -> None:
        self.windows: dict[str, AckedDigests] = {}
        self.window = window
        self.ready = asyncio.Event()
        self.ready.set()
        self.published: list[tuple[str, list[int]]] = []
        self.fail_publish = False

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        return None

    def acked(self, account: str) -> AckedDigests:
        return self.windows.setdefault(account, AckedDigests(max_age=self.window))

    async def caught_up(self, account: str, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                await self.ready.wait()
        except TimeoutError:
            return False
        return True

    async def publish(self, account: str, digests: Sequence[int]) -> None:
        if self.fail_publish:
            raise PublishError("progress topic unavailable")
        self.published.append((account, list(digests)))
        self.acked(account).add(digests, now())
