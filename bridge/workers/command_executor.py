"""Carries out one command against Sendstack, politely and within its deadline.

Every call goes through, in order: the auth gate (after a 401 no call is
made until the credentials work again: retrying into Sendstack's
20-failures lockout would lock every worker out), the circuit breaker (after
repeated 5xx/timeouts calls wait instead of piling on), and the shared token
bucket. Responses are classified by ``core.commands.classify``: success,
retry (429 honouring Retry-After, 5xx and timeouts with capped jittered
backoff), re-authenticate (401) or rejected (other 4xx, one attempt only).
Nothing waits past the command's deadline.

The ambiguous case (the request may have reached Sendstack but no answer
came back, or an earlier worker died after writing its ``started`` marker)
is resolved by reading Sendstack (``RestRequest.reconcile``, e.g. fetch
deliveries by ``externalOrderId``) before sending again. Read-only commands
are simply repeated. A write that cannot be checked is not sent again: it
fails as ``ambiguous``, so it runs at most once.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.core.breaker import BreakerState, CircuitBreaker
from bridge.core.commands import (
    QUERY_TYPES,
    Command,
    RestRequest,
    classify,
    outcome_error,
    reconciled,
)
from bridge.core.ratelimit import TokenBucket
from bridge.core.retry import Backoff, FailureBudget
from bridge.errors import RestUnavailable
from bridge.metrics import CommandMetrics
from bridge.ports import Clock, RestGateway

log = structlog.get_logger("bridge.commands")


@dataclass(slots=True)
class Execution:
    """How a command ended at Sendstack."""

    outcome: str  # succeeded | failed | rejected
    response: object | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    first_attempt_at: float | None = None
    reconciled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


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
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._bucket = bucket
        self._breaker = breaker
        self._retry = retry
        self._auth_backoff = auth_backoff
        self._auth_budget = auth_budget
        self._probe_request = probe
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
        previously_started: bool,
    ) -> Execution:
        """Run ``request`` until it succeeds, is rejected or the deadline passes."""
        execution = Execution(outcome="failed")
        try:
            if previously_started:
                settled = await self._settle_ambiguity(
                    command, request, execution, deadline
                )
                if settled is not None:
                    return settled
            return await self._attempts(command, request, execution, deadline)
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
    ) -> Execution:
        retry_attempt = 0
        while True:
            await self._admit(deadline)
            execution.attempts += 1
            if execution.first_attempt_at is None:
                execution.first_attempt_at = self._clock.time()
            if execution.attempts > 1:
                self._metrics.retries.labels(command.type).inc()
            try:
                status, body, headers = await self._gateway.execute(request)
            except RestUnavailable as exc:
                self._metrics.api_calls.labels("error").inc()
                self._breaker.record_failure(self._clock.time())
                execution.error = _error("unavailable", str(exc))
                if exc.ambiguous:
                    settled = await self._settle_ambiguity(
                        command, request, execution, deadline
                    )
                    if settled is not None:
                        return settled
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
            # retry (429) or unavailable (5xx)
            if outcome.kind == "unavailable":
                self._breaker.record_failure(self._clock.time())
            else:
                self._breaker.record_success()
            execution.error = outcome_error(outcome)
            delay = self._retry.delay(retry_attempt, random.random())
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            await self._sleep_within(delay, deadline)
            retry_attempt += 1

    async def _settle_ambiguity(
        self,
        command: Command,
        request: RestRequest,
        execution: Execution,
        deadline: float,
    ) -> Execution | None:
        """Decide what to do when an earlier attempt may have reached Sendstack."""
        if command.type in QUERY_TYPES:
            return None  # reading again is harmless
        check = request.reconcile
        if check is None:
            execution.outcome = "failed"
            execution.error = _error(
                "ambiguous",
                "an earlier attempt may have reached Sendstack and this "
                "command type cannot be checked; not sent again",
            )
            return execution
        while True:
            await self._admit(deadline)
            try:
                status, body, _ = await self._gateway.execute(check)
            except RestUnavailable:
                self._metrics.api_calls.labels("error").inc()
                self._breaker.record_failure(self._clock.time())
                await self._sleep_within(
                    self._retry.delay(0, random.random()), deadline
                )
                continue
            self._metrics.api_calls.labels(_status_class(status)).inc()
            if status == 401:
                self._block_auth()
                continue
            if 200 <= status < 300:
                self._breaker.record_success()
                existing = reconciled(command, status, body)
                self._metrics.reconciled.labels(
                    "yes" if existing is not None else "no"
                ).inc()
                if existing is None:
                    return None  # it never took effect: send it
                execution.outcome = "succeeded"
                execution.response = existing
                execution.reconciled = True
                execution.error = None
                log.info("command_reconciled", command_type=command.type)
                return execution
            await self._sleep_within(self._retry.delay(0, random.random()), deadline)

    # -- politeness ------------------------------------------------------------

    async def _admit(self, deadline: float) -> None:
        """Wait for the auth gate, the breaker and a rate-limiter token."""
        while True:
            if not self._auth_ok.is_set():
                remaining = deadline - self._clock.time()
                if remaining <= 0:
                    raise _Deadline
                try:
                    async with asyncio.timeout(remaining):
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


def monotonic_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
