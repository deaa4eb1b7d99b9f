"""Leader or hot standby, per account: who publishes, and a gapless takeover.

Theory of operation
-------------------
Every replica runs the whole stream for every account (session, socket,
codec); between each account's pump and the journal sits an
:class:`AccountGate`. The gate holds every record it is handed in a
:class:`~bridge.core.standby.RecentRecords` buffer (the last N seconds), and
forwards it to the journal only while this replica leads the account.

Who leads comes from the coordination group (the ``Election`` port, Kafka's
group protocol): :class:`StreamRoles` is its ``RoleHandler``.

* ``on_deposed``: the gate stops forwarding before the call returns, so the
  group hands the account over only after this replica stopped publishing.
  Records it had already journaled still go to Kafka (each with its
  ``ce_id``, so a duplicate at worst).
* ``on_fenced``: the replica lost the group coordinator while leading. It
  keeps journaling: if Kafka is down for everyone, no one else can lead and
  the journal is the only copy; if only this replica is cut off, another
  takes over and what this one journaled arrives later as duplicates with
  their ``ce_id``. The next assignment ends it: ``on_leading`` (it goes on,
  nothing to catch up) or ``on_deposed``.
* ``on_leading``: a takeover task starts. The gate first reads the account's
  progress log to its end (what the old leader reported acknowledged), then
  hands the journal every held record the old leader did not report, in the
  order this replica received them, then forwards live. Records that arrive
  meanwhile are held and included, so nothing falls between the backlog and
  the live stream. Records the old leader published after its last progress
  message are sent twice: with the same ``ce_id``, at most one progress
  interval (plus Kafka's ack latency) of records.

:class:`ProgressReporter` runs on every replica: the Kafka sink's acks are
turned into digests and written to the progress log every interval, so a
standby knows what not to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from bridge.core.records import OutboundRecord
from bridge.core.standby import RecentRecords, digest
from bridge.ports import Clock, Fencing, ProgressLog, RecordSink, SinkStatistics

log = structlog.get_logger("bridge.roles")

Role = Literal["standby", "taking_over", "leading", "fenced"]
#: The roles in which this replica reads for Kafka: a cold standby's socket
#: is open in these only.
LIVE_ROLES: frozenset[Role] = frozenset({"taking_over", "leading", "fenced"})
# "fenced": it led, then lost the group coordinator; it keeps journaling.
ROLE_VALUES: Mapping[Role, int] = {
    "standby": 0,
    "taking_over": 1,
    "leading": 2,
    "fenced": 3,
}


@dataclass(frozen=True, slots=True)
class Takeover:
    """What one takeover did."""

    account: str
    held: int  # records in the buffer when it began
    published: int  # records the old leader had not reported, now sent
    caught_up: bool  # the progress log was read to its end in time
    seconds: float  # from the group's assignment to live
    resumed: bool = False  # it led until the rebalance: only its own gap sent


class AccountGate:
    """``RecordSink`` for one account's pump: hold always, forward when leading.

    Args:
        account: The account's name (logs, metrics).
        target: Where a leader's records go (the journal).
        recent: The buffer of recent records.
        clock: Monotonic time for the buffer's ages.
    """

    def __init__(
        self,
        account: str,
        target: RecordSink,
        recent: RecentRecords,
        clock: Clock,
    ) -> None:
        self.account = account
        self._target = target
        self.recent = recent
        self._clock = clock
        self.role: Role = "standby"
        self.takeovers: list[Takeover] = []
        # The first held record this replica did not forward when it stopped
        # leading; everything before it went out (or was reported by the old
        # leader). A takeover starts its walk there: after an eager rebalance
        # that hands the account straight back, that is only the records of the
        # rebalance itself, not a progress interval of duplicates.
        self._resume_from: int | None = None
        self._walk_seq = 0

    async def send(self, record: OutboundRecord) -> None:
        self.recent.add(record, self._clock.monotonic())
        if self.role in ("leading", "fenced"):
            await self._target.send(record)

    async def flush(self, grace: float) -> bool:
        if self.role not in ("leading", "fenced"):
            return True  # a standby owes Kafka nothing
        return await self._target.flush(grace)

    def statistics(self) -> SinkStatistics:
        return self._target.statistics()

    def depose(self) -> None:
        """Stop forwarding now (synchronous: nothing more goes out after it)."""
        if self.role in ("leading", "fenced"):
            self._resume_from = self.recent.next_seq
        elif self.role == "taking_over":
            self._resume_from = self._walk_seq
        if self.role != "standby":
            log.warning("stream_deposed", account=self.account, was=self.role)
        self.role = "standby"

    def fence(self) -> None:
        """Cut off from the group while leading: keep journaling (see
        ``RoleHandler.on_fenced``); only a leader or a takeover can be fenced."""
        if self.role in ("leading", "taking_over"):
            log.warning("stream_fenced_journaling", account=self.account)
            self.role = "fenced"

    def resume(self) -> None:
        """The group gave a fenced account back: it never stopped, so live."""
        log.info("stream_unfenced", account=self.account)
        self.role = "leading"

    def _taking_over(self) -> bool:
        # A method, not an inline test: depose() may run at any await.
        return self.role == "taking_over"

    async def take_over(
        self,
        progress: ProgressLog,
        catch_up_within: float,
        claim: Callable[[], Awaitable[bool]] | None = None,
    ) -> Takeover:
        """Publish what the old leader did not report, then go live.

        ``claim`` (fencing) runs first: once the old leader's producer is
        fenced, nothing it publishes later can follow the progress read here.
        Returns early (still a standby) if :meth:`depose` is called meanwhile.
        """
        started = self._clock.monotonic()
        self.role = "taking_over"
        held = len(self.recent)
        if claim is not None and not await claim():
            # Records wait for the producer; none goes out unfenced.
            log.warning("takeover_producer_not_fenced_yet", account=self.account)
        caught_up = await progress.caught_up(self.account, catch_up_within)
        if not caught_up:
            # Publish anyway: a gap is worse than duplicates with their ce_id.
            log.warning("takeover_progress_behind", account=self.account)
        self.recent.expire(self._clock.monotonic())
        acked = progress.acked(self.account)
        resumed = self._resume_from is not None
        self._walk_seq = self._resume_from or 0
        self._resume_from = None
        published = 0
        for seq, record in self.recent.not_acked(acked, self._walk_seq):
            if not self._taking_over():
                break
            await self._target.send(record)
            self._walk_seq = seq + 1
            published += 1
        # No await between the walk's end and this line: a record that arrives
        # now is forwarded live by send(), not missed.
        if self._taking_over():
            self.role = "leading"
        done = Takeover(
            account=self.account,
            held=held,
            published=published,
            caught_up=caught_up,
            seconds=self._clock.monotonic() - started,
            resumed=resumed,
        )
        self.takeovers.append(done)
        log.info(
            "stream_leading" if self.role == "leading" else "takeover_abandoned",
            account=self.account,
            held=held,
            published=published,
            caught_up=caught_up,
            resumed=resumed,
            seconds=round(done.seconds, 3),
        )
        return done


class StreamRoles:
    """The ``RoleHandler``: moves each account's gate between the roles.

    Args:
        gates: The gate of each account.
        progress: The progress log (read on takeover).
        catch_up_within: How long a takeover waits to read the old leader's
            last progress before it publishes anyway.
        on_takeover: Told of each finished takeover (metrics).
        fencing: Kafka transactions: a takeover claims the account's
            transactional id before it reads the old leader's progress.
    """

    def __init__(
        self,
        gates: Mapping[str, AccountGate],
        progress: ProgressLog,
        *,
        catch_up_within: float = 5.0,
        on_takeover: Callable[[Takeover], None] | None = None,
        fencing: Fencing | None = None,
    ) -> None:
        self.gates = dict(gates)
        self._fencing = fencing
        self._progress = progress
        self._within = catch_up_within
        self._on_takeover = on_takeover
        self._takeovers: dict[str, asyncio.Task[Takeover]] = {}

    async def on_leading(self, accounts: frozenset[str]) -> None:
        # Not awaited here: the group's rebalance waits for this call, and a
        # takeover may publish a backlog; it runs as a task of its own.
        for account in sorted(accounts):
            gate = self.gates.get(account)
            if gate is not None and gate.role == "fenced":
                gate.resume()  # it journaled all along: nothing to catch up
                if self._fencing is not None:
                    # Another replica may have led (and fenced it) meanwhile:
                    # a new epoch now; its records wait for it, not waited on.
                    await self._fencing.claim(account, 0.0)
                continue
            if gate is None or gate.role != "standby":
                continue
            gate.role = "taking_over"  # seen at once (metrics, readiness)
            fencing = self._fencing
            task = asyncio.create_task(
                gate.take_over(
                    self._progress,
                    self._within,
                    claim=None
                    if fencing is None
                    else functools.partial(fencing.claim, account, self._within),
                ),
                name=f"takeover-{account}",
            )
            self._takeovers[account] = task
            task.add_done_callback(self._takeover_ended)

    async def on_deposed(self, accounts: frozenset[str]) -> None:
        for account in sorted(accounts):
            task = self._depose_now(account)
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def on_fenced(self, accounts: frozenset[str]) -> None:
        for account in sorted(accounts):
            task = self._takeovers.pop(account, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            gate = self.gates.get(account)
            if gate is not None:
                gate.fence()

    def fenced_out(self, account: str) -> None:
        """Kafka fenced this replica's producer for ``account``: a successor
        leads it, whatever the group has told this replica so far. Stop
        forwarding now; the group's next assignment says the rest."""
        self._depose_now(account)

    def _depose_now(self, account: str) -> asyncio.Task[Takeover] | None:
        """Stop forwarding ``account`` and cancel its takeover (returned, to
        be awaited by whoever may)."""
        gate = self.gates.get(account)
        if gate is not None:
            gate.depose()
        task = self._takeovers.pop(account, None)
        if task is not None:
            task.cancel()
        return task

    def _takeover_ended(self, task: asyncio.Task[Takeover]) -> None:
        for account, running in list(self._takeovers.items()):
            if running is task:
                del self._takeovers[account]
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("takeover_failed", exc_info=task.exception())
        elif self._on_takeover is not None:
            self._on_takeover(task.result())

    def leading(self) -> frozenset[str]:
        """Accounts whose gate forwards live."""
        return frozenset(a for a, g in self.gates.items() if g.role == "leading")

    async def stop(self) -> None:
        """Cancel running takeovers (shutdown)."""
        tasks = list(self._takeovers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ProgressReporter:
    """Turns Kafka's acks into progress messages, every ``interval`` seconds.

    Args:
        progress: Where progress messages go.
        account_of: The account a record belongs to.
        clock: For the interval.
        interval: Seconds between messages (the bound on duplicates after a
            takeover, with Kafka's ack latency).
        max_digests: Digests per message, at most (a backlog is split).
    """

    def __init__(
        self,
        progress: ProgressLog,
        account_of: AccountOf,
        clock: Clock,
        *,
        interval: float = 0.2,
        max_digests: int = 50_000,
    ) -> None:
        self._progress = progress
        self._account_of = account_of
        self._clock = clock
        self._interval = interval
        self._max = max_digests
        self._pending: dict[str, list[int]] = {}
        self.published = 0

    def acked(self, records: Iterable[OutboundRecord]) -> None:
        """The Kafka sink's batch-ack callback (synchronous, cheap)."""
        pending = self._pending
        for record in records:
            account = self._account_of(record)
            pending.setdefault(account, []).append(digest(record))

    async def run(self) -> None:
        """Write what was acknowledged, every interval, until cancelled."""
        while True:
            await self._clock.sleep(self._interval)
            await self.report()

    async def report(self) -> None:
        """Write the pending digests now (one message per account and chunk)."""
        pending, self._pending = self._pending, {}
        for account, digests in pending.items():
            for start in range(0, len(digests), self._max):
                chunk = digests[start : start + self._max]
                try:
                    await self._progress.publish(account, chunk)
                except Exception:  # noqa: BLE001 - progress is advisory
                    # Lost progress means duplicates after a takeover, never a
                    # gap: keep going.
                    log.warning(
                        "progress_not_written", account=account, digests=len(chunk)
                    )
                else:
                    self.published += len(chunk)


class AccountOf:
    """Which account a record belongs to: its ``bridge_account`` header, else
    the first account (the one of ``BRIDGE_SENDSTACK_APP_ID``: records
    journaled before more accounts were configured carry no header, and they
    are its records)."""

    HEADER = "bridge_account"

    def __init__(self, accounts: Sequence[str]) -> None:
        self._default = accounts[0]

    def __call__(self, record: OutboundRecord) -> str:
        for name, value in record.headers:
            if name == self.HEADER:
                return value.decode("utf-8", "replace")
        return self._default
