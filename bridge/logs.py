"""Logging: structlog's production setup, with every line redacted.

Theory of operation: there is one pipeline and two ways into it.

* Our code logs through `get_logger` (structlog). Events flow through
  ``merge_contextvars`` (per-connection context such as ``connection_id``),
  ``add_log_level``, an ISO/UTC ``TimeStamper``, ``format_exc_info`` (so a
  traceback becomes text), `Redactor`, and a renderer: JSON lines via orjson
  straight to the byte stream (structlog's ``docs/performance.md`` recipe), or
  ``ConsoleRenderer`` for people.
* Libraries (aiokafka, websockets, httpx) log through stdlib `logging`. A
  single root handler sends their records through structlog's
  ``ProcessorFormatter`` with the same steps, so they come out in the same
  format, on the same stream, and just as redacted.

Redaction runs *after* exceptions are formatted, so it sees the final text of
every value, including exception messages and tracebacks. It masks anything
shaped like a JWT, the value of ``session=`` (and any configured query key)
and URL passwords, literal secret values handed to `configure_logging`,
`bridge.secrets.Secret` instances, and whole values under credential-ish keys
(``token``, ``password``, ...). The Sendstack session token is a JWT whose
payload holds the app secret in clear, and websockets logs the request line
(with ``?session=``) at DEBUG, so this is the rule and not an option.

Nothing is configured at import; `configure_logging` is called once by the
CLI.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import sys
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from bridge.secrets import MASK, Secret, TextRedactor

__all__ = ["LEVELS", "Redactor", "configure_logging", "get_logger"]

LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""The level names `configure_logging` accepts (as in ``BRIDGE_LOG_LEVEL``)."""

_FORMATS = frozenset({"auto", "json", "console"})

# Keys whose string values are credentials whatever they look like.
_SENSITIVE_KEYS = frozenset(
    {
        "app_secret",
        "appsecret",
        "authorization",
        "password",
        "secret",
        "session",
        "session_token",
        "token",
    }
)

# Values that cannot hide a token and that orjson renders natively (bool is
# an int).
_PLAIN = (int, float, type(None), dt.datetime, dt.date, dt.time, uuid.UUID)

# Deeper structures are rendered to text whole (and then redacted).
_MAX_DEPTH = 8


class Redactor(TextRedactor):
    """A structlog processor that masks secrets in every value of an event.

    Strings are scrubbed of JWT-shaped text, of ``session=`` (and *query_keys*)
    values and URL passwords, and of the literal *secrets*. Dicts, lists,
    tuples and sets are walked; other objects are replaced by their redacted
    ``repr`` (which is what the renderers would print anyway). Strings go
    through `bridge.secrets.TextRedactor`.

    Args:
        secrets: literal values to mask wherever they appear.
        query_keys: URL query keys to mask besides ``session``.
    """

    __slots__ = ()

    def __call__(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> EventDict:
        return {key: self._value(value, key, 0) for key, value in event_dict.items()}

    def _value(self, value: object, key: object, depth: int) -> object:
        if isinstance(value, str):
            if isinstance(key, str) and key.lower() in _SENSITIVE_KEYS:
                return MASK
            return self.text(value)
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, Secret):
            return MASK
        if isinstance(value, bytes | bytearray):
            return self._value(bytes(value).decode("utf-8", "backslashreplace"), key, 0)
        if depth < _MAX_DEPTH:
            if isinstance(value, dict):
                return {
                    k if isinstance(k, str) else self.text(str(k)): self._value(
                        v, k, depth + 1
                    )
                    for k, v in value.items()
                }
            if isinstance(value, list | tuple | set | frozenset):
                return [self._value(item, key, depth + 1) for item in value]
        return self.text(repr(value))


def configure_logging(
    level: str,
    fmt: str,
    stream: TextIO | BinaryIO | None = None,
    *,
    secrets: Iterable[str | Secret] = (),
    query_keys: Iterable[str] = (),
    cache_logger_on_first_use: bool = False,
) -> None:
    """Configure structlog and stdlib `logging` to write redacted lines.

    Replaces every handler on the root logger (like
    ``logging.basicConfig(force=True)``), so no library record can reach the
    output without redaction. Safe to call again; the last call wins.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``
            (case-insensitive); applies to libraries too.
        fmt: ``json``, ``console``, or ``auto`` (console when *stream* is a
            TTY, JSON otherwise).
        stream: where lines go; ``None`` means ``sys.stdout`` at call time.
            Text streams with a ``buffer`` are written to through it.
        secrets: literal values to mask, e.g. the app secret.
        query_keys: URL query keys to mask besides ``session``, e.g. the
            configured ``BRIDGE_STREAM_SESSION_QUERY_KEY``.
        cache_logger_on_first_use: structlog's speed-up for production.
            Leave it off in tests: cached loggers ignore
            ``structlog.testing.capture_logs``.

    Raises:
        ValueError: on an unknown *level* or *fmt*.
    """
    level_number = LEVELS.get(level.lower())
    if level_number is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {list(LEVELS)}")
    fmt = fmt.lower()
    if fmt not in _FORMATS:
        raise ValueError(
            f"unknown log format {fmt!r}; expected one of {sorted(_FORMATS)}"
        )
    out = sys.stdout if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and _isatty(out))
    sink = _Sink(out)
    redactor = Redactor(secrets, query_keys)

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    finish: list[Processor] = [
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redactor,
    ]
    text_renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=_isatty(out))
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps_text)
    )

    native_renderer: list[Processor] = (
        [text_renderer, _encode]
        if console
        else [structlog.processors.JSONRenderer(serializer=orjson.dumps)]
    )

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            timestamper,
            *finish,
            *native_renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        context_class=dict,
        logger_factory=structlog.BytesLoggerFactory(file=sink.binary),
        cache_logger_on_first_use=cache_logger_on_first_use,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *finish,
            text_renderer,
        ],
    )
    handler = _SinkHandler(sink, redactor)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number)


def get_logger(name: str) -> FilteringBoundLogger:
    """Return a structlog logger whose events carry ``logger=name``.

    Safe to call at import: the logger picks up the configuration lazily.
    """
    # The name reaches the BytesLogger (structlog >= 26.1 keeps it as
    # ``.name``), from where _add_logger_name copies it into the event.
    return cast(FilteringBoundLogger, structlog.get_logger(name))


def _add_logger_name(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Add ``logger``: the stdlib record's name, or the `get_logger` name."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _isatty(stream: TextIO | BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _dumps_text(obj: Any, **kwargs: Any) -> str:
    """orjson for `ProcessorFormatter`, which wants `str`, not `bytes`."""
    return orjson.dumps(obj, **kwargs).decode()


def _encode(logger: WrappedLogger, method_name: str, event_dict: Any) -> bytes:
    """Turn the console renderer's text into bytes for `BytesLogger`."""
    return cast(str, event_dict).encode("utf-8", "backslashreplace")


class _Sink:
    """The output stream as bytes: one place where lines are written."""

    def __init__(self, stream: TextIO | BinaryIO) -> None:
        self.binary: BinaryIO
        if isinstance(stream, io.TextIOBase):
            text = cast(TextIO, stream)
            text.flush()  # what was written as text goes out before our bytes
            buffer = getattr(text, "buffer", None)
            if buffer is None:
                buffer = cast(BinaryIO, _TextAsBytes(text))
            self.binary = buffer
        else:
            self.binary = cast(BinaryIO, stream)

    def write_line(self, line: str) -> None:
        self.binary.write(line.encode("utf-8", "backslashreplace") + b"\n")
        self.binary.flush()


class _TextAsBytes:
    """Lets `BytesLogger` write to a text stream without a buffer (StringIO)."""

    def __init__(self, text: TextIO) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        self._text.write(data.decode("utf-8", "backslashreplace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


class _SinkHandler(logging.Handler):
    """Root handler: formats library records through structlog, then writes.

    Unlike `logging.StreamHandler`, a failure does not print the record's
    message and arguments to stderr (they may hold a token); only a redacted
    one-line notice.
    """

    def __init__(self, sink: _Sink, redactor: Redactor) -> None:
        super().__init__()
        self._sink = sink
        self._redactor = redactor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.write_line(self.format(record))
        except RecursionError:
            raise
        # A handler must never raise into the code that logged (the stdlib's
        # own StreamHandler does the same); handleError reports it instead.
        except Exception:  # noqa: BLE001
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if not logging.raiseExceptions or sys.stderr is None:
            return
        error = sys.exc_info()[1]
        reason = self._redactor.text(f"{type(error).__name__}: {error}")
        sys.stderr.write(f"logging error in {record.name!r}: {reason}\n")
