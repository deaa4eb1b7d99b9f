"""Carries out one command against Sendstack, politely and within its deadline.

Every call goes through, in order: the auth gate (after a 401 no call is
made until the credentials work again: retrying into Sendstack's
20-failures lockout would lock every worker out), the circuit breaker (after
repeated 5xx/timeouts calls wait instead of piling on), and the shared token
bucket. Responses are classified by ``core.commands.classify``: success,
retry (429 honouring Retry-After, 5xx and timeouts with capped jittered
backoff), re-authenticate (401) or rejected (other 4xx, one attempt only).
Nothing waits past the command's deadline.

The rule for writes that are not repeatable: **when in doubt, never send
again**. A timeout after sending, a dropped connection, a 5xx or a reply
that is not Sendstack's may each hide a request that took effect, and so
may another worker's ``started`` marker without a result. Such a command is
settled by reading Sendstack (``RestRequest.reconcile``: fetch deliveries by
``externalOrderId``): a booking found is the result (``reconciled``); an
empty list counts as "not booked" only when read after the settle window
(Sendstack may still be completing the request) and after another empty
read; anything else ends ``ambiguous``, which is never sent again.
Repeatable commands are simply repeated.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog

from bridge.core.breaker import BreakerState, CircuitBreaker
from bridge.core.commands import (
    Command,
    Reconciliation,
    RestRequest,
    classify,
    outcome_error,
    reconciled,
)
from bridge.core.ratelimit import TokenBucket
from bridge.core.retry import Backoff, FailureBudget
from bridge.errors import RestUnavailable
from bridge.metrics import CommandMetrics
from bridge.ports import CallPermit, Clock, Execution, RestGateway

log = structlog.get_logger("bridge.commands")


class _Deadline(Exception):
    """The command's deadline would pass before the next attempt."""


def _error(reason: str, message: str, *, status: object = None) -> dict[str, Any]:
    """An ``error`` object as the result schema defines it (reason, message, status)."""
    return {"reason": reason, "message": message, "status": status}


def _status_class(status: int) -> str:
    if status == 429:
        return "429"
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"


class CommandExecutor:
    """Shared by every command of a worker: one limiter, one breaker, one auth gate."""

    def __init__(
        self,
        gateway: RestGateway,
        *,
        clock: Clock,
        bucket: TokenBucket,
        breaker: CircuitBreaker,
        retry: Backoff,
        auth_backoff: Backoff,
        auth_budget: FailureBudget,
        probe: RestRequest,
        metrics: CommandMetrics,
        concurrency: int = 8,
        settle_seconds: float = 60.0,
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._bucket = bucket
        self._breaker = breaker
        self._retry = retry
        self._auth_backoff = auth_backoff
        self._auth_budget = auth_budget
        self._probe_request = probe
        self._settle_seconds = settle_seconds
        # Calls in flight at once (reconcile reads included); waits between
        # attempts and the settle window hold no slot.
        self._slots = asyncio.Semaphore(concurrency)
        self._metrics = metrics
        self._auth_ok = asyncio.Event()
        self._auth_ok.set()
        self._prober: asyncio.Task[None] | None = None

    # -- readiness -----------------------------------------------------------

    @property
    def authorised(self) -> bool:
        return self._auth_ok.is_set()

    def breaker_open(self) -> bool:
        return self._breaker.state(self._clock.time()) is BreakerState.OPEN

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)

    # -- executing -------------------------------------------------------------

    async def execute(
        self,
        command: Command,
        request: RestRequest,
        *,
        deadline: float,
        permit: CallPermit,
        ambiguous_since: float | None = None,
    ) -> Execution:
        """Run ``request`` until it succeeds, is rejected or the deadline passes.

        ``ambiguous_since``: an earlier attempt (another worker's, found as a
        ``started`` marker) may have reached Sendstack, and any such attempt
        had ended by this instant; it is settled before anything is sent.
        Every write call first passes ``permit`` (ownership and the marker).
        """
        execution = Execution(outcome="failed")
        try:
            if ambiguous_since is not None:
                settled = await self._settle(
                    command, request, execution, deadline, since=ambiguous_since
                )
                if settled is not None:
                    return settled
            return await self._attempts(command, request, execution, deadline, permit)
        except _Deadline:
            last = execution.error or {}
            execution.outcome = "failed"
            execution.error = _error(
                "deadline",
                "the deadline passed; last problem: "
                + str(last.get("message") or last.get("reason") or "none"),
                status=last.get("status"),
            )
            return execution

    async def _attempts(
        self,
        command: Command,
        request: RestRequest,
        execution: Execution,
        deadline: float,
        permit: CallPermit,
    ) -> Execution:
        retry_attempt = 0
        writes = not command.query
        while True:
            sent_at = 0.0
            try:
                async with self._slots:
                    await self._admit(deadline)
                    if writes and not await permit.before_call(deadline):
                        raise _Deadline
                    execution.attempts += 1
                    if execution.first_attempt_at is None:
                        execution.first_attempt_at = self._clock.time()
                    if execution.attempts > 1:
                        self._metrics.retries.labels(command.type).inc()
                    sent_at = self._clock.time()
                    status, body, headers = await self._gateway.execute(request)
            except RestUnavailable as exc:
                self._metrics.api_calls.labels("error").inc()
                self._breaker.record_failure(self._clock.time())
                execution.error = _error("unavailable", str(exc))
                if exc.ambiguous and not command.repeatable:
                    settled = await self._settle(
                        command, request, execution, deadline, since=sent_at
                    )
                    if settled is not None:
                        return settled
                    continue  # known not to have taken effect: send again
                await self._sleep_within(
                    self._retry.delay(retry_attempt, random.random()), deadline
                )
                retry_attempt += 1
                continue
            self._metrics.api_calls.labels(_status_class(status)).inc()
            outcome = classify(status, body, headers)
            if outcome.kind == "succeeded":
                self._breaker.record_success()
                execution.outcome = "succeeded"
                execution.response = outcome.data
                execution.error = None
                return execution
            if outcome.kind == "rejected":
                self._breaker.record_success()  # Sendstack answered: it is up
                execution.outcome = "rejected"
                execution.error = outcome_error(outcome)
                return execution
            if outcome.kind == "reauth":
                self._breaker.record_success()
                execution.error = _error(
                    "unauthorized", "Sendstack refused the credentials", status=status
                )
                self._block_auth()
                continue  # _admit waits for the credentials to work again
            execution.error = outcome_error(outcome)
            if outcome.kind == "unavailable":
                self._breaker.record_failure(self._clock.time())
                if not command.repeatable:
                    # A 5xx (or a reply that is not Sendstack's) does not say
                    # the request did nothing: settle before sending again.
                    settled = await self._settle(
                        command, request, execution, deadline, since=sent_at
                    )
                    if settled is not None:
                        return settled
                    continue
            else:
                self._breaker.record_success()  # 429: Sendstack did nothing
            delay = self._retry.delay(retry_attempt, random.random())
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            await self._sleep_within(delay, deadline)
            retry_attempt += 1

    async def _settle(
        self,
        command: Command,
        request: RestRequest,
        execution: Execution,
        deadline: float,
        *,
        since: float,
    ) -> Execution | None:
        """An earlier attempt may have taken effect: find out before sending again.

        Returns None only when the bridge *knows* it did not take effect
        (or repeating is harmless); otherwise the command's final execution:
        ``succeeded`` (reconciled) or ``ambiguous``. Knowing means: an empty
        reconcile read made at least ``settle_seconds`` after the attempt was
        sent (``since``), preceded by another empty read. An unknown answer,
        or a deadline too close to wait for that, ends as ``ambiguous``.
        """
        if command.repeatable:
            return None  # repeating ends in the same state
        check = request.reconcile
        if check is None:
            return self._ambiguous(
                command,
                execution,
                "an earlier attempt may have reached Sendstack and this "
                "command type cannot be checked; not sent again",
            )
        known_after = since + self._settle_seconds
        empty_reads = 0
        try:
            while True:
                found = await self._read_back(command, check, deadline)
                if found.verdict == "found":
                    self._metrics.reconciled.labels("yes").inc()
                    execution.outcome = "succeeded"
                    execution.response = found.booking
                    execution.reconciled = True
                    execution.error = None
                    log.info(
                        "command_reconciled",
                        command_type=command.type,
                        matched_by=found.matched_by,
                    )
                    return execution
                if found.verdict == "unknown":
                    self._metrics.reconciled.labels("unknown").inc()
                    return self._ambiguous(
                        command,
                        execution,
                        f"the reconcile read could not tell ({found.reason}); "
                        "not sent again",
                    )
                empty_reads += 1
                now = self._clock.time()
                if now >= known_after and empty_reads >= 2:
                    self._metrics.reconciled.labels("no").inc()
                    return None  # known not to have taken effect
                wait = max(known_after - now, self._retry.initial)
                if now + wait >= deadline:
                    return self._ambiguous(
                        command,
                        execution,
                        "not found yet, and the deadline leaves no time to wait "
                        f"the {self._settle_seconds:g} s settle window; not sent again",
                    )
                await self._clock.sleep(wait)
        except _Deadline:
            return self._ambiguous(
                command,
                execution,
                "the deadline passed while checking an earlier attempt; not sent again",
            )

    async def _read_back(
        self, command: Command, check: RestRequest, deadline: float
    ) -> Reconciliation:
        """The reconcile read, retried (transport errors, 5xx) within the deadline."""
        attempt = 0
        while True:
            try:
                async with self._slots:
                    await self._admit(deadline)
                    status, body, _ = await self._gateway.execute(check)
            except RestUnavailable:
                self._metrics.api_calls.labels("error").inc()
                self._breaker.record_failure(self._clock.time())
            else:
                self._metrics.api_calls.labels(_status_class(status)).inc()
                if status == 401:
                    self._block_auth()
                    continue
                if 200 <= status < 300 or (
                    400 <= status < 500 and status not in (408, 429)
                ):
                    self._breaker.record_success()
                    return reconciled(command, status, body)
                if status >= 500:
                    self._breaker.record_failure(self._clock.time())
            await self._sleep_within(
                self._retry.delay(attempt, random.random()), deadline
            )
            attempt += 1

    def _ambiguous(
        self, command: Command, execution: Execution, message: str
    ) -> Execution:
        execution.outcome = "ambiguous"
        execution.error = _error(
            "ambiguous", message, status=(execution.error or {}).get("status")
        )
        log.warning(
            "command_ambiguous",
            command_id=command.command_id,
            command_type=command.type,
            action="check it in the Sendstack dashboard; it is not sent again",
        )
        return execution

    # -- politeness ------------------------------------------------------------

    async def _admit(self, deadline: float) -> None:
        """Wait for the auth gate, the breaker and a rate-limiter token."""
        while True:
            if not self._auth_ok.is_set():
                remaining = deadline - self._clock.time()
                if remaining <= 0:
                    raise _Deadline
                try:
                    async with self._clock.timeout(remaining):
                        await self._auth_ok.wait()
                except TimeoutError:
                    raise _Deadline from None
            wait = self._breaker.wait_before_call(self._clock.time())
            self._metrics.breaker_open.set(1.0 if wait > 0 else 0.0)
            if wait > 0:
                await self._sleep_within(wait, deadline)
                continue
            break
        wait = self._bucket.reserve(self._clock.time())
        if wait > 0:
            self._metrics.rate_limiter_wait.inc(wait)
            await self._sleep_within(wait, deadline)

    async def _sleep_within(self, seconds: float, deadline: float) -> None:
        if self._clock.time() + seconds >= deadline:
            raise _Deadline
        await self._clock.sleep(seconds)

    # -- the auth gate -----------------------------------------------------------

    def _block_auth(self) -> None:
        if not self._auth_ok.is_set():
            return
        self._auth_ok.clear()
        self._metrics.auth_blocked.set(1)
        self._auth_budget.record_failure(self._clock.time())
        log.error(
            "commands_unauthorized", action="calls stopped until credentials work"
        )
        self._prober = asyncio.create_task(self._probe(), name="auth-probe")

    async def _probe(self) -> None:
        """Check the credentials now and then, within the failure budget."""
        attempt = 0
        while True:
            delay = max(
                self._auth_backoff.delay(attempt, random.random()),
                self._auth_budget.wait_before_next(self._clock.time()),
            )
            await self._clock.sleep(delay)
            attempt += 1
            try:
                status, _, _ = await self._gateway.execute(self._probe_request)
            except RestUnavailable:
                continue
            if status == 401:
                self._auth_budget.record_failure(self._clock.time())
                continue
            if status < 500:
                self._auth_ok.set()
                self._metrics.auth_blocked.set(0)
                log.info("commands_authorized_again")
                return
