"""The one exception hierarchy of the bridge.

Adapters translate foreign exceptions (httpx, websockets, aiokafka) into these,
always chained with ``raise ... from ...``; workers only ever see these or
genuine bugs. Retryability lives on the type::

    BridgeError
    ├── ConfigError                  bad configuration, every problem listed
    ├── UpstreamError
    │   ├── UpstreamUnavailable      network, 5xx, timeouts       (retryable)
    │   ├── SessionRejected          401/403 or 4001/1008 close   (re-authenticate)
    │   ├── AuthLockedOut            429 from the session endpoint (wait)
    │   ├── UpstreamClosed           the socket closed (code, reason)
    │   └── UpstreamProtocolError    a reply we cannot understand
    ├── PublishError                 Kafka refused or timed out   (retryable)
    └── CommandError
        ├── CommandReleased          this worker may no longer call for it
        └── RestUnavailable          5xx, timeouts, connect errors (retryable;
                                     ``ambiguous`` if it may have taken effect)

Messages never carry a token, a secret or a ``?session=`` URL.
"""

from __future__ import annotations

from typing import ClassVar


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    retryable: ClassVar[bool] = False


class ConfigError(BridgeError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


class UpstreamError(BridgeError):
    """Something went wrong talking to Sendstack."""


class UpstreamRefusal(UpstreamError):
    """A connect attempt failed; ``status`` is the HTTP status, if one came back.

    The status decides what a refusal means (409 at a rotation: the upstream
    allows one socket; any 4xx counts toward Sendstack's lockout), so it is
    carried as data, never parsed back out of the message.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamUnavailable(UpstreamRefusal):
    """Sendstack could not be reached or answered 5xx; try again later."""

    retryable = True


class SessionRejected(UpstreamRefusal):
    """Sendstack refused the credentials or the session; re-authenticate."""


class AuthLockedOut(UpstreamError):
    """The session endpoint answered 429: too many failed attempts."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamClosed(UpstreamError):
    """The tracking socket closed (``core.close_codes`` says what that means)."""

    retryable = True

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"upstream closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class UpstreamProtocolError(UpstreamError):
    """Sendstack answered something we cannot interpret."""


class PublishError(BridgeError):
    """Kafka did not acknowledge a record."""

    retryable = True


class CommandError(BridgeError):
    """A command could not be carried out."""


class CommandReleased(CommandError):
    """This worker may no longer call Sendstack for the command.

    Its partition was revoked or its lease lost: the command is left
    unfinished (offset uncommitted) for the partition's next owner.
    """


class RestUnavailable(CommandError):
    """5xx, timeout or connection error; the request may be retried.

    ``ambiguous`` is True when the request may have reached Sendstack (a
    timeout or a dropped connection after it was sent), so it may have taken
    effect; False when it certainly did not (connection refused, DNS, TLS,
    pool timeout). ``status`` is the HTTP status when there was a reply.
    """

    retryable = True

    def __init__(
        self, message: str, *, ambiguous: bool = True, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous
        self.status = status
