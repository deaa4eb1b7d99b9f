"""Fenced publishing (``BRIDGE_HA_TRANSACTIONAL_ID``): one transactional
producer per account, opened only while this replica leads the account.

Why: the group protocol deposes a leader that stops heartbeating, but a
leader that was paused (a long GC, SIGSTOP, a frozen VM) or cut off from the
group coordinator only learns that when it next talks to the coordinator,
and until then it may still publish beside its successor. With a fixed
``transactional.id`` per account (``<prefix>.<account>``) Kafka fences it:
the successor's ``InitProducerId`` bumps the id's epoch, aborts the old
leader's open transaction, and every later send or commit of the old
producer fails with ``ProducerFenced``. Consumers that read with
``isolation.level=read_committed`` then never see a record the old leader
sent after the takeover.

Theory of operation
-------------------
* Records are routed to their account's lane (``account_of``). A lane has no
  producer until :meth:`TransactionalRecordSink.claim` (the takeover, before
  it reads the old leader's progress): claiming starts the producer and waits
  for ``InitProducerId``, which is the fencing.
* A lane's task commits what its account holds every ``commit_interval``:
  begin, send each record, commit. Only then are the records acknowledged
  (``on_batch_ack``: the journal releases them, the progress reporter
  reports them); a record in an aborted transaction stays unacknowledged and
  is sent again in the next one, in order.
* A new epoch (``InitProducerId``) is only ever asked for while the group
  confirms that this replica leads the account (``confirmed``: the account
  is assigned here, its gate is live, and the group coordinator answered
  within the self-fencing bound). Otherwise a replica that does not know it
  was deposed could take the id back from its successor.
* A failure other than fencing (Kafka away, a timeout) aborts the
  transaction and tries again with the same producer; a producer that cannot
  go on is replaced, under the same rule.
* Fenced (``ProducerFenced``, ``InvalidProducerEpoch``) while the group
  still confirms this replica: the fence came from the broker (a transaction
  that outlived ``transaction.timeout.ms`` while Kafka was away bumps the
  epoch too), not from a successor: a new epoch, nothing let go.
* Fenced otherwise: another replica leads the account now and publishes from
  its own buffer everything the old leader had not reported. The lane's
  records are released to it (``on_released``: the journal lets them go,
  nobody reports them), and ``on_fenced`` tells the roles to depose the
  account at once. Records of the account that still arrive (the journal's
  backlog) are released too, until the account is claimed again.
* Records of an account that was never claimed (the journal's backlog after
  a restart), or whose producer broke after it was deposed, wait: if the
  group gives this replica the account, they go out once it is claimed; if
  it gives it to another replica, :meth:`disown` releases them to that one.

What is lost by fencing: a record the fenced leader journaled but had not
committed, and which is older than the new leader's buffer
(``BRIDGE_HA_BUFFER_SECONDS``) at its takeover. Without fencing that record
would arrive late as a duplicate; with it, it is counted
(``bridge_ha_fenced_records_total``) and dropped, because publishing it is
exactly what fencing forbids.

Records are sent with aiokafka's per-record ``send``: it adds each partition
to the transaction, which our batch path (``kafka_batches``) does not.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import structlog
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced

from bridge.adapters.kafka_producer import has_room, wait_for_room
from bridge.core.records import OutboundRecord
from bridge.core.retry import Backoff
from bridge.metrics import SinkMetrics
from bridge.ports import SinkStatistics

log = structlog.get_logger("bridge.kafka")

#: The errors that mean "another producer took this transactional.id".
FENCED_ERRORS: tuple[type[BaseException], ...] = (ProducerFenced, InvalidProducerEpoch)

BatchCallback = Callable[[Sequence[OutboundRecord]], None]
LaneState = Literal["waiting", "claimed", "fenced", "disowned"]


class TransactionalProducer(Protocol):
    """The part of ``AIOKafkaProducer`` (with a ``transactional_id``) used here."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def begin_transaction(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]: ...

    async def commit_transaction(self) -> None: ...

    async def abort_transaction(self) -> None: ...


class _Lane:
    """One account: its records in order, its producer, its state."""

    __slots__ = (
        "account",
        "bytes",
        "claims",
        "opened",
        "producer",
        "records",
        "state",
        "streak",
        "task",
        "wake",
    )

    def __init__(self, account: str) -> None:
        self.account = account
        self.records: deque[tuple[OutboundRecord, int]] = deque()
        self.bytes = 0
        self.state: LaneState = "waiting"
        self.producer: TransactionalProducer | None = None
        self.opened = asyncio.Event()  # the producer holds the id's epoch
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.streak = 0  # consecutive failed transactions
        self.claims = 0  # leadership terms: each opens a producer anew


class TransactionalRecordSink:
    """``RecordSink`` (and ``Fencing``): per-account transactional producers.

    Args:
        producer_factory: Builds a producer whose ``transactional_id`` is the
            account's (one per claim and per retry).
        account_of: The account a record belongs to.
        max_records: Bound of records held over all accounts.
        max_bytes: Bound of bytes held over all accounts.
        commit_interval: Seconds between commits (the latency it adds).
        max_transaction_records: Records per transaction, at most.
        retry_backoff: Delay before a new producer after a failure.
        metrics: The Kafka and buffer metrics.
        topic_kinds: Topic -> ``kind`` label of the published counter.
        on_batch_ack: Records committed (the journal, the progress reporter).
        on_released: An account's records let go to its new leader (the
            journal forgets them; nobody reports them).
        on_fenced: Told the account whose producer was fenced by a successor.
        confirmed: Whether the group confirms, now, that this replica leads
            the account (the only time a new epoch may be asked for).
    """

    def __init__(
        self,
        producer_factory: Callable[[str], TransactionalProducer],
        *,
        account_of: Callable[[OutboundRecord], str],
        max_records: int,
        max_bytes: int,
        commit_interval: float,
        retry_backoff: Backoff,
        metrics: SinkMetrics,
        topic_kinds: Mapping[str, str],
        on_batch_ack: BatchCallback | None = None,
        on_released: Callable[[str, Sequence[OutboundRecord]], None] | None = None,
        on_fenced: Callable[[str], None] | None = None,
        confirmed: Callable[[str], bool] = lambda _account: True,
        max_transaction_records: int = 10_000,
    ) -> None:
        self._factory = producer_factory
        self._account_of = account_of
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._interval = max(0.0, commit_interval)
        self._max_txn = max(1, max_transaction_records)
        self._backoff = retry_backoff
        self._metrics = metrics
        self._topic_kinds = dict(topic_kinds)
        self._on_batch_ack = on_batch_ack
        self._on_released = on_released
        self._on_fenced = on_fenced
        self._confirmed = confirmed
        self._lanes: dict[str, _Lane] = {}
        self._records = 0
        self._bytes = 0
        self._acked = 0
        self._retried = 0
        self.released = 0
        self._room = asyncio.Event()
        self._changed = asyncio.Event()  # records left a lane (flush looks)
        self._started = False
        metrics.buffer_records.set_function(lambda: self._records)
        metrics.buffer_bytes.set_function(lambda: self._bytes)

    # -- the RecordSink port ---------------------------------------------------

    async def start(self) -> None:
        """Accept records; producers open per account, on :meth:`claim`."""
        self._started = True
        for lane in self._lanes.values():
            if lane.state == "claimed":
                self._run(lane)

    async def stop(self) -> None:
        """Stop every lane's task and producer; what was not committed stays
        unacknowledged (journaled, it is sent again after a restart)."""
        self._started = False
        lanes = list(self._lanes.values())
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in lanes:
            lane.task = None
            await self._close(lane)

    async def send(self, record: OutboundRecord) -> None:
        size = record.size

        def fits() -> bool:  # the plain Kafka sink's bound
            return has_room(
                self._records, self._bytes, size, self._max_records, self._max_bytes
            )

        if not fits():
            await wait_for_room(fits, self._room, self._metrics.buffer_full_seconds)
        lane = self._lane(self._account_of(record))
        if lane.state in ("fenced", "disowned"):
            self._release(lane, [(record, size)])
            return
        lane.records.append((record, size))
        lane.bytes += size
        self._records += 1
        self._bytes += size
        lane.wake.set()

    async def flush(self, grace: float) -> bool:
        """Wait until every claimed account committed what it holds; records
        of accounts this replica does not lead are not this flush's to wait
        for (they stay journaled)."""
        try:
            async with asyncio.timeout(grace):
                while any(
                    lane.records
                    for lane in self._lanes.values()
                    if lane.state == "claimed"
                ):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def statistics(self) -> SinkStatistics:
        claimed = [lane for lane in self._lanes.values() if lane.state == "claimed"]
        return SinkStatistics(
            in_flight_records=self._records,
            in_flight_bytes=self._bytes,
            acked=self._acked,
            retried=self._retried,
            connected=self._started and all(lane.streak == 0 for lane in claimed),
        )

    # -- the Fencing port --------------------------------------------------------

    async def claim(self, account: str, within: float) -> bool:
        """Lead ``account``: open its producer, which fences any other holder
        of its id. True once it did within ``within`` seconds; else it keeps
        trying in the background (records wait, none is published unfenced)."""
        lane = self._lane(account)
        lane.state = "claimed"
        lane.claims += 1
        lane.opened.clear()
        lane.wake.set()
        if self._started:
            self._run(lane)
        if within <= 0:
            return False  # not waited for: the lane opens it in the background
        try:
            async with asyncio.timeout(within):
                await lane.opened.wait()
        except TimeoutError:
            log.warning("transactional_producer_not_ready", account=account)
            return False
        return True

    def disown(self, account: str) -> None:
        """Another replica leads ``account``: release what waits for a claim
        that will not come (or for a producer this replica may no longer
        open). A claimed lane with a producer goes on until it is fenced."""
        lane = self._lane(account)
        broken = lane.state == "claimed" and lane.producer is None
        if lane.state == "waiting" or broken:
            lane.state = "disowned"
            self._release(lane, self._take_all(lane))

    # -- lanes -------------------------------------------------------------------

    def _lane(self, account: str) -> _Lane:
        lane = self._lanes.get(account)
        if lane is None:
            lane = self._lanes[account] = _Lane(account)
        return lane

    def _run(self, lane: _Lane) -> None:
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(
                self._lane_loop(lane), name=f"kafka-transactions-{lane.account}"
            )
            lane.task.add_done_callback(self._task_ended)

    def _take_all(self, lane: _Lane) -> list[tuple[OutboundRecord, int]]:
        taken = list(lane.records)
        lane.records.clear()
        self._records -= len(taken)
        self._bytes -= lane.bytes
        lane.bytes = 0
        self._room.set()
        self._changed.set()
        return taken

    def _take(self, lane: _Lane) -> list[tuple[OutboundRecord, int]]:
        taken: list[tuple[OutboundRecord, int]] = []
        while lane.records and len(taken) < self._max_txn:
            taken.append(lane.records.popleft())
        return taken

    def _give_back(self, lane: _Lane, taken: list[tuple[OutboundRecord, int]]) -> None:
        lane.records.extendleft(reversed(taken))  # ahead of what came since

    def _release(
        self, lane: _Lane, taken: Sequence[tuple[OutboundRecord, int]]
    ) -> None:
        if not taken:
            return
        self.released += len(taken)
        if self._on_released is not None:
            self._on_released(lane.account, [record for record, _ in taken])

    async def _close(self, lane: _Lane) -> None:
        producer, lane.producer = lane.producer, None
        lane.opened.clear()
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # noqa: BLE001 - a broken producer is dropped anyway
                log.warning("transactional_producer_stop_failed", account=lane.account)

    async def _open(self, lane: _Lane, term: int) -> TransactionalProducer | None:
        """A producer holding the account's id (a new epoch), asked for only
        while the group confirms this replica; None once the lane is no
        longer this term's (claimed again, disowned)."""
        while lane.state == "claimed" and lane.claims == term:
            if not self._confirmed(lane.account):
                await self._back_off(lane)
                continue
            producer = lane.producer = self._factory(lane.account)
            try:
                await producer.start()
                # InitProducerId: from here the id's older holders are fenced.
                await producer.begin_transaction()
            except KafkaError as exc:
                await self._close(lane)
                await self._failed(lane, exc, "transactional_producer_not_started")
                continue
            lane.opened.set()
            return producer
        return None

    async def _failed(self, lane: _Lane, exc: BaseException, event: str) -> None:
        self._metrics.kafka_errors.labels(type(exc).__name__).inc(1)
        log.warning(event, account=lane.account, error=type(exc).__name__)
        await self._back_off(lane)

    async def _back_off(self, lane: _Lane) -> None:
        """Wait before the lane's next try; longer while failures go on (a
        commit resets the streak)."""
        lane.streak += 1
        await asyncio.sleep(self._backoff.delay(lane.streak - 1, random.random()))

    async def _lane_loop(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        term = -1  # the claim the producer was opened for
        producer: TransactionalProducer | None = None
        in_transaction = False
        while lane.state == "claimed":
            if term != lane.claims or producer is None:
                # A new leadership term (a new epoch, so that a successor in
                # between cannot have fenced it), or a producer that broke.
                term = lane.claims
                await self._close(lane)
                producer = await self._open(lane, term)
                in_transaction = True  # begun by _open
                continue
            if not lane.records:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            first = loop.time()
            await asyncio.sleep(self._interval)  # gather a transaction's worth
            if term != lane.claims:
                continue
            taken = self._take(lane)
            try:
                if not in_transaction:
                    await producer.begin_transaction()
                in_transaction = True
                sent = [
                    await producer.send(
                        record.topic,
                        record.value,
                        key=record.key,
                        headers=list(record.headers),
                    )
                    for record, _ in taken
                ]
                await asyncio.gather(*sent)  # a refused batch says so here
                await producer.commit_transaction()
                in_transaction = False
            except FENCED_ERRORS as exc:
                self._give_back(lane, taken)
                if term != lane.claims:
                    continue  # claimed again meanwhile: a new epoch anyway
                if self._confirmed(lane.account):
                    # Still ours (the broker timed the transaction out while
                    # Kafka was away): a new epoch, nothing let go.
                    log.warning(
                        "transaction_fenced_still_leading", account=lane.account
                    )
                    lane.claims += 1
                    continue
                self._fenced(lane, exc)
                await self._close(lane)
                return
            except Exception as exc:  # noqa: BLE001 - aiokafka raises assorted types
                self._retried += len(taken)
                self._give_back(lane, taken)
                in_transaction = False
                if not await self._aborted(producer):
                    await self._close(lane)
                    producer = None  # replaced only while the group confirms
                await self._failed(lane, exc, "transaction_failed")
                continue
            self._committed(lane, taken, loop.time() - first)

    async def _aborted(self, producer: TransactionalProducer) -> bool:
        """Abort the failed transaction; False if the producer cannot go on."""
        try:
            await producer.abort_transaction()
        except Exception:  # noqa: BLE001 - any failure means "replace it"
            return False
        return True

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # A bug: this account would publish nothing more; say so loudly.
            self._started = False
            log.error(
                "kafka_transactions_task_failed",
                task=task.get_name(),
                exc_info=task.exception(),
            )

    def _committed(
        self, lane: _Lane, taken: list[tuple[OutboundRecord, int]], seconds: float
    ) -> None:
        lane.streak = 0
        size = sum(s for _, s in taken)
        lane.bytes -= size
        self._records -= len(taken)
        self._bytes -= size
        self._acked += len(taken)
        records = [record for record, _ in taken]
        kinds: dict[str, int] = {}
        for record in records:
            kind = self._topic_kinds.get(record.topic, "other")
            kinds[kind] = kinds.get(kind, 0) + 1
        for kind, count in kinds.items():
            self._metrics.published.labels(kind).inc(count)
        self._metrics.kafka_send_seconds.observe(seconds)
        self._room.set()
        self._changed.set()
        if self._on_batch_ack is not None and records:
            self._on_batch_ack(records)

    def _fenced(self, lane: _Lane, exc: BaseException) -> None:
        lane.state = "fenced"
        released = self._take_all(lane)
        self._release(lane, released)
        log.warning(
            "stream_fenced_by_new_leader",
            account=lane.account,
            error=type(exc).__name__,
            released=len(released),
        )
        if self._on_fenced is not None:
            self._on_fenced(lane.account)
