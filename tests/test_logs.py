"""Logging setup and redaction: what reaches the output, and what never does."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from bridge.logs import Redactor, configure_logging, get_logger
from bridge.secrets import Secret, redact_text, redact_url, scrub

# Shaped like a Sendstack session: an HS256 JWT whose payload embeds the app
# id and the app secret (invented values, from the API notes' sample).
TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOnsiYXBwSWQiOiI3MzAyOTE1IiwiYXBwU2VjcmV0IjoiWks0UDBRVzdUUlYyTTlYQkM4"
    "MUxKNkRIUzVOQTNFWVUifSwiaWF0IjoxNzQ5OTA2MzQxLCJleHAiOjE3NDk5Mjc5NDF9."
    "ppOMlHTstDiTyUS5sDTIvWQ5uOkCnLgF7hkoWVj8yJE"
)
HEADER, PAYLOAD, SIGNATURE = TOKEN.split(".")
APP_SECRET = "ZK4P0QW7TRV2M9XBC81LJ6DHS5NA3EYU"
WS_URL = f"wss://stream.example/api/v1/tracking/stream?session={TOKEN}"


def fail_with(error: Exception) -> None:
    """Raise *error*, so that tests can log it from an ``except`` block."""
    raise error


def assert_clean(text: str) -> None:
    """Fail if any part of the token (or the app secret) is in *text*."""
    for part in (HEADER, PAYLOAD, SIGNATURE, APP_SECRET):
        assert part not in text


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def json_lines(out: io.BytesIO) -> list[dict[str, object]]:
    """Parse every line of *out* as one JSON object."""
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


# --------------------------------------------------------------------------
# JSON output


def test_json_lines_carry_level_timestamp_event_and_logger() -> None:
    """Each event is one JSON object with level, UTC ISO timestamp and event."""
    out = io.BytesIO()
    configure_logging("info", "json", out)
    get_logger("bridge.test").info("upstream_connected", connection_id=7)
    (line,) = json_lines(out)
    assert line["event"] == "upstream_connected"
    assert line["level"] == "info"
    assert line["logger"] == "bridge.test"
    assert line["connection_id"] == 7
    timestamp = line["timestamp"]
    assert isinstance(timestamp, str)
    assert timestamp.endswith("Z")
    assert "T" in timestamp


def test_level_filters_our_events_and_library_records() -> None:
    """Below the configured level, nothing is written from either path."""
    out = io.BytesIO()
    configure_logging("warning", "json", out)
    get_logger("bridge.test").info("hidden")
    logging.getLogger("aiokafka").info("hidden too")
    get_logger("bridge.test").warning("shown")
    logging.getLogger("aiokafka").error("shown too")
    assert [line["event"] for line in json_lines(out)] == ["shown", "shown too"]


def test_library_records_come_out_in_the_same_format() -> None:
    """A stdlib record becomes a JSON line with its logger name and level."""
    out = io.BytesIO()
    configure_logging("debug", "json", out)
    logging.getLogger("websockets.client").debug("= connection is %s", "OPEN")
    (line,) = json_lines(out)
    assert line["event"] == "= connection is OPEN"
    assert line["level"] == "debug"
    assert line["logger"] == "websockets.client"
    assert "timestamp" in line


def test_context_variables_are_merged() -> None:
    """Values bound with ``bind_contextvars`` appear on every event."""
    out = io.BytesIO()
    configure_logging("info", "json", out)
    structlog.contextvars.bind_contextvars(session_generation=3)
    try:
        get_logger("bridge.test").info("session_rotated")
        logging.getLogger("aiokafka").warning("library")
    finally:
        structlog.contextvars.clear_contextvars()
    assert [line["session_generation"] for line in json_lines(out)] == [3, 3]


def test_exceptions_are_rendered_as_text() -> None:
    """``log.exception`` adds the formatted traceback under ``exception``."""
    out = io.BytesIO()
    configure_logging("info", "json", out)
    try:
        fail_with(RuntimeError("boom"))
    except RuntimeError:
        get_logger("bridge.test").exception("publish_failed")
    (line,) = json_lines(out)
    exception = line["exception"]
    assert isinstance(exception, str)
    assert "RuntimeError: boom" in exception


def test_reconfiguring_replaces_the_root_handler() -> None:
    """Calling ``configure_logging`` twice leaves one root handler, the new one."""
    first, second = io.BytesIO(), io.BytesIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", second)
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("x").warning("only once")
    assert first.getvalue() == b""
    assert len(json_lines(second)) == 1


def test_text_stream_without_buffer_works() -> None:
    """A plain ``StringIO`` is written to as text."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    get_logger("bridge.test").info("hello")
    logging.getLogger("lib").warning("world")
    events = [orjson.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["hello", "world"]


def test_text_stream_with_buffer_gets_bytes_in_order() -> None:
    """A text stream with a buffer receives both paths' lines, in order."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    configure_logging("info", "json", out)
    get_logger("a").info("one")
    logging.getLogger("b").warning("two")
    get_logger("a").info("three")
    events = [orjson.loads(line)["event"] for line in raw.getvalue().splitlines()]
    assert events == ["one", "two", "three"]
    out.detach()


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "yaml")])
def test_unknown_level_or_format_is_refused(level: str, fmt: str) -> None:
    """A misspelt level or format raises ``ValueError``."""
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(level, fmt, io.BytesIO())


# --------------------------------------------------------------------------
# Console output


class TTYBytesIO(io.BytesIO):
    """A byte stream that claims to be a terminal."""

    def isatty(self) -> bool:
        """Pretend to be a terminal."""
        return True


def test_console_format_is_for_people() -> None:
    """Console lines are not JSON, and carry the event, level and key=values."""
    out = io.BytesIO()
    configure_logging("info", "console", out)
    get_logger("bridge.test").info("upstream_connected", connection_id=7)
    logging.getLogger("aiokafka").warning("broker down")
    first, second = out.getvalue().decode().splitlines()
    assert not first.startswith("{")
    assert "upstream_connected" in first
    assert "info" in first
    assert "connection_id=7" in first
    assert "broker down" in second
    assert "\x1b[" not in first  # no colours off a terminal


def test_auto_format_is_console_on_a_tty_and_json_otherwise() -> None:
    """``auto`` picks console for a terminal and JSON for anything else."""
    tty, pipe = TTYBytesIO(), io.BytesIO()
    configure_logging("info", "auto", tty)
    get_logger("t").info("hello")
    configure_logging("info", "auto", pipe)
    get_logger("t").info("hello")
    assert not tty.getvalue().startswith(b"{")
    assert json_lines(pipe)[0]["event"] == "hello"


# --------------------------------------------------------------------------
# Nothing secret reaches the output


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_token_as_a_value_never_appears(fmt: str) -> None:
    """A token or a ``?session=`` URL logged as a value is masked."""
    out = io.BytesIO()
    configure_logging("debug", fmt, out)
    log = get_logger("bridge.test")
    log.info("connecting", url=WS_URL)
    log.info("got_token", value=TOKEN)
    log.info("nested", frames=[{"u": WS_URL}, (TOKEN,)], raw=WS_URL.encode())
    log.info("formatted %s", WS_URL)
    text = out.getvalue().decode()
    assert_clean(text)
    assert "session=***" in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_token_in_an_exception_never_appears(fmt: str) -> None:
    """An exception whose message holds the URL is masked in the traceback."""
    out = io.BytesIO()
    configure_logging("info", fmt, out)
    try:
        fail_with(ConnectionError(f"server rejected WebSocket connection: {WS_URL}"))
    except ConnectionError as exc:
        get_logger("bridge.test").exception("upstream_failed", error=exc)
    text = out.getvalue().decode()
    assert_clean(text)
    assert "ConnectionError" in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_token_through_a_library_debug_log_never_appears(fmt: str) -> None:
    """A stdlib DEBUG record (websockets' request line) is masked too."""
    out = io.BytesIO()
    configure_logging("debug", fmt, out)
    ws_log = logging.getLogger("websockets.client")
    ws_log.debug("> GET /api/v1/tracking/stream?session=%s HTTP/1.1", TOKEN)
    ws_log.debug("> %s", {"uri": WS_URL})
    try:
        fail_with(OSError(f"connect failed for {WS_URL}"))
    except OSError:
        logging.getLogger("aiokafka").debug("library traceback", exc_info=True)
    text = out.getvalue().decode()
    assert_clean(text)
    assert text.count("session=***") == 3


def test_secret_objects_and_sensitive_keys_are_masked() -> None:
    """``Secret`` values and values under credential keys print as ``***``."""
    out = io.BytesIO()
    configure_logging("info", "json", out)
    get_logger("t").info(
        "auth", app_secret=APP_SECRET, password="pw-123", wrapped=Secret("pw-456")
    )
    (line,) = json_lines(out)
    assert line["app_secret"] == "***"
    assert line["password"] == "***"
    assert line["wrapped"] == "***"


def test_configured_literals_and_query_keys_are_masked() -> None:
    """Secrets and extra query keys given to ``configure_logging`` are masked."""
    out = io.BytesIO()
    configure_logging(
        "info", "json", out, secrets=[Secret(APP_SECRET)], query_keys=["token"]
    )
    logging.getLogger("httpx").warning("echo %s", f"secret={APP_SECRET}")
    get_logger("t").info("url", url="wss://h/p?token=abc123&fleet=7")
    text = out.getvalue().decode()
    assert APP_SECRET not in text
    assert "abc123" not in text
    assert "token=***&fleet=7" in text


def test_objects_are_rendered_by_repr_and_masked() -> None:
    """An arbitrary object is logged as its ``repr``, with secrets masked."""

    class Connection:
        def __repr__(self) -> str:
            return f"<Connection {WS_URL}>"

    out = io.BytesIO()
    configure_logging("info", "json", out)
    get_logger("t").info("opened", conn=Connection())
    (line,) = json_lines(out)
    assert (
        line["conn"]
        == "<Connection wss://stream.example/api/v1/tracking/stream?session=***>"
    )


def test_a_broken_library_record_does_not_leak_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A record that fails to format reports the failure without its arguments."""
    configure_logging("debug", "json", io.BytesIO())
    logging.getLogger("websockets.client").debug("> GET %s %s", WS_URL)
    err = capsys.readouterr().err
    assert "logging error in 'websockets.client'" in err
    assert_clean(err)


# --------------------------------------------------------------------------
# The redaction functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TOKEN, "***"),
        (f"token={TOKEN}; next", "token=***; next"),
        (f"{HEADER}.{PAYLOAD}", "***"),  # no signature: still masked
        (f"payload {PAYLOAD} alone", "payload *** alone"),
        (f"'{TOKEN[:60]}...'", "'***...'"),  # cut short by a repr
        ("eyJ is how base64 JSON starts", "eyJ is how base64 JSON starts"),
        ("nothing to see", "nothing to see"),
    ],
)
def test_scrub_masks_anything_shaped_like_a_jwt(text: str, expected: str) -> None:
    """``scrub`` masks whole or partial JWTs and leaves other text alone."""
    assert scrub(text) == expected


@pytest.mark.parametrize(
    ("url", "keys", "expected"),
    [
        (WS_URL, (), "wss://stream.example/api/v1/tracking/stream?session=***"),
        ("wss://h/p?a=1&session=xyz&b=2", (), "wss://h/p?a=1&session=***&b=2"),
        ("wss://h/p?SESSION=xyz#frag", (), "wss://h/p?SESSION=***#frag"),
        (
            "https://x/cb?next=wss%3A%2F%2Fh%3Fsession%3Dxyz",
            (),
            "https://x/cb?next=wss%3A%2F%2Fh%3Fsession%3D***",
        ),
        (
            "wss://h/p?token=xyz&session=abc",
            ("token",),
            "wss://h/p?token=***&session=***",
        ),
        ("GET /p?session=xyz HTTP/1.1", (), "GET /p?session=*** HTTP/1.1"),
        ("{'uri': 'wss://h/p?session=xyz'}", (), "{'uri': 'wss://h/p?session=***'}"),
        ("https://user:hunter2@host/p", (), "https://user:***@host/p"),
        ("wss://h/p?my_session=keep", (), "wss://h/p?my_session=keep"),
        ("wss://h/p?fleet=7", (), "wss://h/p?fleet=7"),
    ],
)
def test_redact_url_masks_session_values(
    url: str, keys: tuple[str, ...], expected: str
) -> None:
    """``redact_url`` masks ``session=`` (and given keys) and URL passwords."""
    assert redact_url(url, keys) == expected


def test_redact_text_masks_literals_longest_first() -> None:
    """Known values are masked wherever they occur; longer ones win."""
    text = "abc and abcdef and xyz"
    assert redact_text(text, ["abc", "abcdef", "", Secret("xyz")]) == (
        "*** and *** and ***"
    )


def test_redactor_walks_nested_values_and_keeps_plain_ones() -> None:
    """Nested containers are cleaned; numbers and booleans pass unchanged."""
    redactor = Redactor()
    event = {
        "event": f"got {TOKEN}",
        "n": 3,
        "ok": True,
        "none": None,
        "d": {"inner": [WS_URL, {"token": "abc"}], 5: b"session=zzz"},
    }
    assert redactor(None, "info", event) == {
        "event": "got ***",
        "n": 3,
        "ok": True,
        "none": None,
        "d": {
            "inner": [
                "wss://stream.example/api/v1/tracking/stream?session=***",
                {"token": "***"},
            ],
            "5": "session=***",
        },
    }
