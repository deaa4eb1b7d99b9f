"""What the bridge knows about every command id: started, finished, or neither.

Theory of operation: before calling Sendstack for a command, the worker
writes a ``started`` marker (keyed by command id) to a compacted state topic
and waits for Kafka's ack; the command's result, also keyed by command id,
is the ``done`` marker. Every worker reads both topics on start and on every
partition assignment. So when a command arrives again (a crash before the
offset commit, a rebalance):

* done: its result exists; nothing is called and nothing is published again;
* started but not done: an earlier attempt may or may not have reached
  Sendstack: the ambiguous case, resolved by reading Sendstack (see
  ``bridge.core.commands``) before anything is sent again;
* neither: it never reached Sendstack; run it.
"""

from __future__ import annotations

from enum import Enum


class CommandState(Enum):
    NEW = "new"
    STARTED = "started"
    DONE = "done"


class CommandLedger:
    """Started and done command ids, fed from the state and result topics."""

    def __init__(self) -> None:
        self._started: set[str] = set()
        self._done: set[str] = set()

    def state(self, command_id: str) -> CommandState:
        if command_id in self._done:
            return CommandState.DONE
        if command_id in self._started:
            return CommandState.STARTED
        return CommandState.NEW

    def mark_started(self, command_id: str) -> None:
        self._started.add(command_id)

    def mark_done(self, command_id: str) -> None:
        self._done.add(command_id)
        self._started.discard(command_id)

    def __len__(self) -> int:
        return len(self._started) + len(self._done)
