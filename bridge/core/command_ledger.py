"""What the bridge knows about every command id and who may call for a partition.

Theory of operation. Two kinds of record live in the compacted state topic,
and every worker folds them, in log order, into this ledger:

* **Command markers**, keyed by command id. Before its first call for a
  command a worker writes ``started`` (its owner id and the lease deadline it
  held) and waits for Kafka's ack; the command's result, keyed by command id
  on the results topic, is the ``done`` marker. A command found *started but
  not done* may or may not have reached Sendstack: the ambiguous case, settled
  by reading Sendstack, never by sending again blindly.
* **Partition leases**, keyed ``#partition:<n>`` (``#`` cannot occur in a
  command id). Kafka's group protocol says which worker *should* own a
  partition; the lease says which one *may call Sendstack* for its commands.
  A worker calls only while it holds a verified, unexpired lease, and a
  worker takes a lease only once the previous holder released it or let it
  expire. So two workers never call for the same partition at once, even
  when the group hands a partition over before its old owner heard of the
  rebalance (a paused process, Tansu completing a group without waiting).

The fold decides ties by log order, which Kafka makes total per key: a
``hold`` from another owner while a lease is live is void, so of two
workers racing for a partition exactly one sees its own hold win.
Deadlines are wall-clock seconds; clock skew between workers adds to the
margin (see ``docs/commands.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import orjson

CLAIM_PREFIX = "#partition:"


class CommandState(Enum):
    NEW = "new"
    STARTED = "started"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Marker:
    """A ``started`` marker: who started the command, when, under which lease."""

    owner: str | None
    at: float
    until: float | None


@dataclass(frozen=True, slots=True)
class Claim:
    """One lease record: ``hold`` (take or renew) or ``release``."""

    kind: Literal["hold", "release"]
    owner: str
    at: float
    until: float


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may call for a partition, until when (epoch seconds)."""

    owner: str
    until: float
    released: bool = False

    def free_for(self, owner: str, now: float) -> bool:
        """May ``owner`` take (or renew) this lease at ``now``?"""
        return self.owner == owner or self.released or now >= self.until


def fold_claim(current: Lease | None, claim: Claim) -> Lease | None:
    """The lease after ``claim``, applied in log order."""
    if claim.kind == "release":
        if current is not None and current.owner == claim.owner:
            return Lease(claim.owner, min(current.until, claim.at), released=True)
        return current
    if current is None or current.free_for(claim.owner, claim.at):
        return Lease(claim.owner, claim.until)
    return current  # another owner's lease was live when this was written: void


def claim_key(partition: int) -> str:
    return f"{CLAIM_PREFIX}{partition}"


def claim_value(claim: Claim) -> bytes:
    return orjson.dumps(
        {
            "lease": claim.kind,
            "owner": claim.owner,
            "at": claim.at,
            "until": claim.until,
        }
    )


def started_value(command_type: str, owner: str, at: float, until: float) -> bytes:
    return orjson.dumps(
        {
            "state": "started",
            "type": command_type,
            "owner": owner,
            "at": at,
            "until": until,
        }
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _decode(value: bytes) -> dict[str, Any]:
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


class CommandLedger:
    """Started and done command ids and partition leases, fed from the state log."""

    def __init__(self) -> None:
        self._started: dict[str, Marker] = {}
        self._done: set[str] = set()
        self._leases: dict[int, Lease] = {}

    # -- commands --------------------------------------------------------------

    def state(self, command_id: str) -> CommandState:
        if command_id in self._done:
            return CommandState.DONE
        if command_id in self._started:
            return CommandState.STARTED
        return CommandState.NEW

    def marker(self, command_id: str) -> Marker | None:
        return self._started.get(command_id)

    def mark_started(self, command_id: str, marker: Marker) -> None:
        if command_id not in self._done:
            self._started[command_id] = marker

    def mark_done(self, command_id: str) -> None:
        self._done.add(command_id)
        self._started.pop(command_id, None)

    # -- partitions ------------------------------------------------------------

    def lease(self, partition: int) -> Lease | None:
        return self._leases.get(partition)

    def apply_claim(self, partition: int, claim: Claim) -> None:
        lease = fold_claim(self._leases.get(partition), claim)
        if lease is not None:
            self._leases[partition] = lease

    # -- the state log ------------------------------------------------------------

    def apply_state(self, key: str, value: bytes) -> None:
        """Fold one state-topic record (a marker or a lease record)."""
        fields = _decode(value)
        if key.startswith(CLAIM_PREFIX):
            try:
                partition = int(key[len(CLAIM_PREFIX) :])
            except ValueError:
                return
            kind, owner = fields.get("lease"), fields.get("owner")
            at, until = _number(fields.get("at")), _number(fields.get("until"))
            if (
                kind in ("hold", "release")
                and isinstance(owner, str)
                and at is not None
                and until is not None
            ):
                self.apply_claim(partition, Claim(kind, owner, at, until))
            return
        owner = fields.get("owner")
        self.mark_started(
            key,
            Marker(
                owner=owner if isinstance(owner, str) else None,
                at=_number(fields.get("at")) or 0.0,
                until=_number(fields.get("until")),
            ),
        )

    def __len__(self) -> int:
        return len(self._started) + len(self._done)
