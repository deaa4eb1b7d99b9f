"""Settings: parsing, validation, loading from files, and showing them safely."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import pickle
import re
import sys
import textwrap
import typing
from pathlib import Path
from types import ModuleType

import pytest

import bridge.config
from bridge.config import (
    CONFIG_FILE_VARIABLE,
    GROUP_NAMES,
    KNOWN_VARIABLES,
    REFERENCE_BEGIN,
    REFERENCE_END,
    REQUIREMENTS,
    VARIABLES,
    BufferSettings,
    KafkaSettings,
    LogSettings,
    OpsSettings,
    SendstackSettings,
    SessionSettings,
    Settings,
    StreamSettings,
    describe,
    load_settings,
    render_check_config,
    render_reference_table,
    replace_reference_section,
)
from bridge.errors import ConfigError
from bridge.secrets import Secret

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

APP_SECRET = "ZK4P0QW7TRV2M9XBC81LJ6DHS5NA3EYU"
SASL_PASSWORD = "kafka-pa55word-do-not-print"
# A session token shaped like Sendstack's (header.payload.signature); its
# payload embeds the app secret in base64.
TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOnsiYXBwSWQiOiI3MzAyOTE1IiwiYXBwU2VjcmV0IjoiWks0UDBRVzdUUlYyTTlYQkM4"
    "MUxKNkRIUzVOQTNFWVUifSwiaWF0IjoxNzQ5OTA2MzQxLCJleHAiOjE3NDk5Mjc5NDF9."
    "ppOMlHTstDiTyUS5sDTIvWQ5uOkCnLgF7hkoWVj8yJE"
)

MINIMAL = {
    "BRIDGE_SENDSTACK_APP_ID": "7302915",
    "BRIDGE_SENDSTACK_APP_SECRET": APP_SECRET,
    "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
}

GROUP_TYPES = {
    "sendstack": SendstackSettings,
    "session": SessionSettings,
    "stream": StreamSettings,
    "kafka": KafkaSettings,
    "buffer": BufferSettings,
    "ops": OpsSettings,
    "log": LogSettings,
}


def problems_of(env: dict[str, str], **kwargs: frozenset[str]) -> list[str]:
    """Return the problems `Settings.from_env` reports for *env*."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, **kwargs)
    return caught.value.problems


# --------------------------------------------------------------------------
# Defaults and successful parsing


def test_minimal_env_gives_documented_defaults() -> None:
    """Only the required variables set: every other field has its default."""
    s = Settings.from_env(MINIMAL)
    assert s.sendstack == SendstackSettings(
        base_url="https://api.sendstack.africa/api/v1",
        app_id="7302915",
        app_secret=Secret(APP_SECRET),
        send_source_header=True,
        session_header_style="both",
        http_timeout_seconds=10.0,
    )
    assert s.session == SessionSettings(
        refresh_before_seconds=900.0,
        refresh_jitter_seconds=120.0,
        auth_backoff_initial_seconds=5.0,
        auth_backoff_max_seconds=300.0,
        auth_max_failures=10,
        auth_failure_window_seconds=900.0,
    )
    assert s.stream == StreamSettings(
        url="wss://api.sendstack.africa/api/v1/tracking/stream",
        session_query_key="session",
        codec="mapping",
        max_frame_bytes=1_048_576,
        max_message_bytes=8_388_608,
        ping_interval_seconds=20.0,
        ping_timeout_seconds=20.0,
        stale_after_seconds=600.0,
        reconnect_initial_seconds=0.5,
        reconnect_max_seconds=30.0,
        open_timeout_seconds=10.0,
        rotation_overlap_max_seconds=30.0,
        dedupe_capacity=200_000,
        single_session=False,
    )
    assert s.kafka == KafkaSettings(
        bootstrap_servers=("localhost:9092",),
        client_id="sendstack-bridge",
        acks="all",
        enable_idempotence=True,
        compression="none",
        linger_ms=5,
        max_batch_bytes=65_536,
        request_timeout_ms=30_000,
        retry_backoff_ms=200,
        security_protocol="PLAINTEXT",
        sasl_mechanism=None,
        sasl_username=None,
        sasl_password=None,
        ssl_cafile=None,
        topic_positions="sendstack.tracking.positions",
        topic_device_status="sendstack.tracking.device-status",
        topic_events="sendstack.tracking.events",
        topic_dead_letter="sendstack.tracking.dlq",
    )
    assert s.buffer == BufferSettings(
        max_records=10_000,
        max_bytes=16_777_216,
        publish_retry_initial_seconds=0.2,
        publish_retry_max_seconds=10.0,
    )
    assert s.ops == OpsSettings(
        host="0.0.0.0",  # noqa: S104  (the documented default, not a bind)
        port=9095,
        shutdown_grace_seconds=20.0,
    )
    assert s.log == LogSettings(level="info", format="auto")


def test_every_value_can_be_overridden() -> None:
    """A full environment lands in the right fields, converted to their types."""
    env = MINIMAL | {
        "BRIDGE_SENDSTACK_BASE_URL": "http://127.0.0.1:8080/api/v1",
        "BRIDGE_SENDSTACK_SEND_SOURCE_HEADER": "no",
        "BRIDGE_SENDSTACK_SESSION_HEADER_STYLE": "CAMEL",
        "BRIDGE_SENDSTACK_HTTP_TIMEOUT_SECONDS": "2.5",
        "BRIDGE_STREAM_URL": "ws://127.0.0.1:8081/live?fleet=7",
        "BRIDGE_STREAM_SESSION_QUERY_KEY": "token",
        "BRIDGE_STREAM_STALE_AFTER_SECONDS": "0",
        "BRIDGE_STREAM_SINGLE_SESSION": "1",
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": " kafka-0:9093 , [::1]:9094 ",
        "BRIDGE_KAFKA_ACKS": "1",
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "False",
        "BRIDGE_KAFKA_COMPRESSION": "ZSTD",
        "BRIDGE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "BRIDGE_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "BRIDGE_KAFKA_SASL_USERNAME": "bridge",
        "BRIDGE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "BRIDGE_KAFKA_SSL_CAFILE": "/etc/ssl/ca.crt",
        "BRIDGE_OPS_PORT": "0",
        "BRIDGE_LOG_LEVEL": "DEBUG",
        "BRIDGE_LOG_FORMAT": "json",
    }
    s = Settings.from_env(env)
    sendstack = s.require(SendstackSettings)
    kafka = s.require(KafkaSettings)
    assert sendstack.base_url == "http://127.0.0.1:8080/api/v1"
    assert sendstack.send_source_header is False
    assert sendstack.session_header_style == "camel"
    assert sendstack.http_timeout_seconds == 2.5
    assert s.stream.url == "ws://127.0.0.1:8081/live?fleet=7"
    assert s.stream.session_query_key == "token"
    assert s.stream.stale_after_seconds == 0.0
    assert s.stream.single_session is True
    assert kafka.bootstrap_servers == ("kafka-0:9093", "[::1]:9094")
    assert kafka.acks == 1
    assert kafka.enable_idempotence is False
    assert kafka.compression == "zstd"
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert kafka.sasl_username == "bridge"
    assert kafka.sasl_password == Secret(SASL_PASSWORD)
    assert kafka.ssl_cafile == "/etc/ssl/ca.crt"
    assert s.ops.port == 0
    assert s.log == LogSettings(level="debug", format="json")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
    ],
)
def test_boolean_spellings(raw: str, expected: bool) -> None:
    """Booleans accept true/false, 1/0 and yes/no in any case."""
    s = Settings.from_env(MINIMAL | {"BRIDGE_STREAM_SINGLE_SESSION": raw})
    assert s.stream.single_session is expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("all", "all"), ("ALL", "all"), ("0", 0)]
)
def test_acks_parse_to_the_producer_values(raw: str, expected: object) -> None:
    """``BRIDGE_KAFKA_ACKS`` becomes what aiokafka takes: ``"all"``, 1 or 0."""
    env = MINIMAL | {"BRIDGE_KAFKA_ACKS": raw, "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "no"}
    assert Settings.from_env(env).require(KafkaSettings).acks == expected


def test_empty_values_mean_unset() -> None:
    """An empty or blank value falls back to the default instead of failing."""
    env = MINIMAL | {"BRIDGE_STREAM_PING_INTERVAL_SECONDS": "", "BRIDGE_OPS_PORT": "  "}
    s = Settings.from_env(env)
    assert s.stream.ping_interval_seconds == 20.0
    assert s.ops.port == 9095


def test_surrounding_whitespace_is_ignored_except_in_secrets() -> None:
    """Plain values are stripped; a secret is kept exactly as given."""
    env = MINIMAL | {
        "BRIDGE_SENDSTACK_APP_ID": " 7302915\n",
        "BRIDGE_SENDSTACK_APP_SECRET": " s3cret ",
    }
    sendstack = Settings.from_env(env).require(SendstackSettings)
    assert sendstack.app_id == "7302915"
    assert sendstack.app_secret.reveal() == " s3cret "


def test_sasl_mechanism_defaults_to_plain_with_sasl() -> None:
    """With a SASL protocol and no mechanism, the settings say ``PLAIN``."""
    env = MINIMAL | {
        "BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BRIDGE_KAFKA_SASL_USERNAME": "bridge",
        "BRIDGE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    }
    assert Settings.from_env(env).require(KafkaSettings).sasl_mechanism == "PLAIN"


def test_non_bridge_variables_are_ignored() -> None:
    """``PATH`` and friends are none of our business."""
    s = Settings.from_env(MINIMAL | {"PATH": "/usr/bin", "HOME": "/root"})
    assert s.require(SendstackSettings).app_id == "7302915"


def test_test_suite_variables_are_not_unknown() -> None:
    """``BRIDGE_TEST_*`` is reserved for the test suite and not reported."""
    Settings.from_env(MINIMAL | {"BRIDGE_TEST_KAFKA_BOOTSTRAP": "localhost:9092"})


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after loading."""
    s = Settings.from_env(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.ops.port = 1  # type: ignore[misc]


def test_settings_survive_asdict_and_deepcopy() -> None:
    """Secrets inside settings do not break ``asdict`` or ``deepcopy``."""
    s = Settings.from_env(MINIMAL)
    assert copy.deepcopy(s) == s
    assert dataclasses.asdict(s)["sendstack"]["app_secret"] == Secret(APP_SECRET)


# --------------------------------------------------------------------------
# Every validation problem, one case each

INVALID_CASES: list[tuple[str, dict[str, str], list[str]]] = [
    (
        "missing app id",
        {"BRIDGE_SENDSTACK_APP_ID": ""},
        [
            "BRIDGE_SENDSTACK_APP_ID: required, not set "
            "(or BRIDGE_SENDSTACK_APP_ID_FILE)"
        ],
    ),
    (
        "missing app secret",
        {"BRIDGE_SENDSTACK_APP_SECRET": ""},
        [
            "BRIDGE_SENDSTACK_APP_SECRET: required, not set "
            "(or BRIDGE_SENDSTACK_APP_SECRET_FILE)"
        ],
    ),
    (
        "missing bootstrap servers",
        {"BRIDGE_KAFKA_BOOTSTRAP_SERVERS": ""},
        ["BRIDGE_KAFKA_BOOTSTRAP_SERVERS: required, not set"],
    ),
    (
        "number that is not one",
        {"BRIDGE_SENDSTACK_HTTP_TIMEOUT_SECONDS": "abc"},
        ["BRIDGE_SENDSTACK_HTTP_TIMEOUT_SECONDS: expected a number, got 'abc'"],
    ),
    (
        "number that is not finite",
        {"BRIDGE_STREAM_PING_INTERVAL_SECONDS": "inf"},
        ["BRIDGE_STREAM_PING_INTERVAL_SECONDS: expected a finite number, got 'inf'"],
    ),
    (
        "number that must be positive",
        {"BRIDGE_STREAM_OPEN_TIMEOUT_SECONDS": "0"},
        ["BRIDGE_STREAM_OPEN_TIMEOUT_SECONDS: must be greater than 0, got 0"],
    ),
    (
        "number that must not be negative",
        {"BRIDGE_SESSION_REFRESH_JITTER_SECONDS": "-1"},
        ["BRIDGE_SESSION_REFRESH_JITTER_SECONDS: must be at least 0, got -1"],
    ),
    (
        "whole number that is a fraction",
        {"BRIDGE_BUFFER_MAX_RECORDS": "1.5"},
        ["BRIDGE_BUFFER_MAX_RECORDS: expected a whole number, got '1.5'"],
    ),
    (
        "whole number below its minimum",
        {"BRIDGE_STREAM_DEDUPE_CAPACITY": "0"},
        ["BRIDGE_STREAM_DEDUPE_CAPACITY: must be at least 1, got 0"],
    ),
    (
        "port out of range",
        {"BRIDGE_OPS_PORT": "65536"},
        ["BRIDGE_OPS_PORT: must be between 0 and 65535, got 65536"],
    ),
    (
        "auth failures at Sendstack's lock-out threshold",
        {"BRIDGE_AUTH_MAX_FAILURES": "20"},
        [
            "BRIDGE_AUTH_MAX_FAILURES: must be between 1 and 19 (Sendstack locks "
            "the app out at 20 failures in 15 minutes), got 20"
        ],
    ),
    (
        "auth failure window too short for the failure budget",
        {"BRIDGE_AUTH_FAILURE_WINDOW_SECONDS": "450"},
        [
            "BRIDGE_AUTH_FAILURE_WINDOW_SECONDS: 10 failures per 450 s allow up "
            "to 20 in 15 minutes; Sendstack locks the app out at 20"
        ],
    ),
    (
        "refresh margin longer than a session lives",
        {
            "BRIDGE_SESSION_REFRESH_BEFORE_SECONDS": "21000",
            "BRIDGE_SESSION_REFRESH_JITTER_SECONDS": "600",
        },
        [
            "BRIDGE_SESSION_REFRESH_BEFORE_SECONDS: plus "
            "BRIDGE_SESSION_REFRESH_JITTER_SECONDS must be under 21600 (a session "
            "lives 6 hours), got 21600"
        ],
    ),
    (
        "boolean that is not one",
        {"BRIDGE_SENDSTACK_SEND_SOURCE_HEADER": "maybe"},
        [
            "BRIDGE_SENDSTACK_SEND_SOURCE_HEADER: expected true/false "
            "(or 1/0, yes/no), got 'maybe'"
        ],
    ),
    (
        "header style not among the choices",
        {"BRIDGE_SENDSTACK_SESSION_HEADER_STYLE": "kebab"},
        [
            "BRIDGE_SENDSTACK_SESSION_HEADER_STYLE: expected one of both, snake, "
            "camel; got 'kebab'"
        ],
    ),
    (
        "acks not among the choices",
        {"BRIDGE_KAFKA_ACKS": "-1"},
        ["BRIDGE_KAFKA_ACKS: expected one of all, 1, 0; got '-1'"],
    ),
    (
        "compression not among the choices",
        {"BRIDGE_KAFKA_COMPRESSION": "brotli"},
        [
            "BRIDGE_KAFKA_COMPRESSION: expected one of none, gzip, snappy, lz4, "
            "zstd; got 'brotli'"
        ],
    ),
    (
        "security protocol not among the choices",
        {"BRIDGE_KAFKA_SECURITY_PROTOCOL": "TLS"},
        [
            "BRIDGE_KAFKA_SECURITY_PROTOCOL: expected one of PLAINTEXT, SSL, "
            "SASL_PLAINTEXT, SASL_SSL; got 'TLS'"
        ],
    ),
    (
        "log level not among the choices",
        {"BRIDGE_LOG_LEVEL": "trace"},
        ["BRIDGE_LOG_LEVEL: expected one of debug, info, warning, error; got 'trace'"],
    ),
    (
        "log format not among the choices",
        {"BRIDGE_LOG_FORMAT": "xml"},
        ["BRIDGE_LOG_FORMAT: expected one of auto, json, console; got 'xml'"],
    ),
    (
        "base URL with the wrong scheme",
        {"BRIDGE_SENDSTACK_BASE_URL": "ftp://api.sendstack.africa"},
        [
            "BRIDGE_SENDSTACK_BASE_URL: expected a http:// or https:// URL with a "
            "host, got 'ftp://api.sendstack.africa'"
        ],
    ),
    (
        "base URL without a host",
        {"BRIDGE_SENDSTACK_BASE_URL": "https:///api/v1"},
        [
            "BRIDGE_SENDSTACK_BASE_URL: expected a http:// or https:// URL with a "
            "host, got 'https:///api/v1'"
        ],
    ),
    (
        "base URL with a bad port",
        {"BRIDGE_SENDSTACK_BASE_URL": "https://host:99999/api"},
        [
            "BRIDGE_SENDSTACK_BASE_URL: expected a http:// or https:// URL, "
            "got 'https://host:99999/api'"
        ],
    ),
    (
        "stream URL that is not a websocket URL",
        {"BRIDGE_STREAM_URL": "https://api.sendstack.africa/stream?fleet=1"},
        [
            "BRIDGE_STREAM_URL: expected a ws:// or wss:// URL with a host, "
            "got 'https://api.sendstack.africa/stream?...'"
        ],
    ),
    (
        "stream URL that already carries a session",
        {"BRIDGE_STREAM_URL": f"wss://h/p?fleet=1&session={TOKEN}"},
        [
            "BRIDGE_STREAM_URL: must not contain the 'session' query parameter "
            "(the bridge adds the session itself; value not shown)"
        ],
    ),
    (
        "stream URL that carries the configured query key",
        {
            "BRIDGE_STREAM_URL": "wss://h/p?Token=abc",
            "BRIDGE_STREAM_SESSION_QUERY_KEY": "token",
        },
        [
            "BRIDGE_STREAM_URL: must not contain the 'token' query parameter "
            "(the bridge adds the session itself; value not shown)"
        ],
    ),
    (
        "session query key with characters a URL would mangle",
        {"BRIDGE_STREAM_SESSION_QUERY_KEY": "my key"},
        ["BRIDGE_STREAM_SESSION_QUERY_KEY: expected URL-safe characters, got 'my key'"],
    ),
    (
        "codec with an odd name",
        {"BRIDGE_STREAM_CODEC": "Traccar JSON"},
        [
            "BRIDGE_STREAM_CODEC: expected one of mapping, traccar-json;"
            " got 'Traccar JSON'"
        ],
    ),
    (
        "websocket limit below the frame limit",
        {"BRIDGE_STREAM_MAX_MESSAGE_BYTES": "1000"},
        [
            "BRIDGE_STREAM_MAX_MESSAGE_BYTES: must be at least "
            "BRIDGE_STREAM_MAX_FRAME_BYTES (1048576), got 1000"
        ],
    ),
    (
        "reconnect cap below the first delay",
        {"BRIDGE_STREAM_RECONNECT_MAX_SECONDS": "0.1"},
        [
            "BRIDGE_STREAM_RECONNECT_MAX_SECONDS: must be at least "
            "BRIDGE_STREAM_RECONNECT_INITIAL_SECONDS (0.5), got 0.1"
        ],
    ),
    (
        "auth backoff cap below the first delay",
        {"BRIDGE_AUTH_BACKOFF_MAX_SECONDS": "1"},
        [
            "BRIDGE_AUTH_BACKOFF_MAX_SECONDS: must be at least "
            "BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS (5), got 1"
        ],
    ),
    (
        "publish retry cap below the first delay",
        {"BRIDGE_PUBLISH_RETRY_MAX_SECONDS": "0.1"},
        [
            "BRIDGE_PUBLISH_RETRY_MAX_SECONDS: must be at least "
            "BRIDGE_PUBLISH_RETRY_INITIAL_SECONDS (0.2), got 0.1"
        ],
    ),
    (
        "HA heartbeat too slow for its session",
        {"BRIDGE_HA_HEARTBEAT_INTERVAL_MS": "2500"},
        [
            "BRIDGE_HA_SESSION_TIMEOUT_MS: must be at least "
            "BRIDGE_HA_HEARTBEAT_INTERVAL_MS (7500), got 6000"
        ],
    ),
    (
        "hot standby whose Kafka requests end before a group join may",
        {"BRIDGE_HA_ENABLED": "true", "BRIDGE_KAFKA_REQUEST_TIMEOUT_MS": "2000"},
        [
            "BRIDGE_KAFKA_REQUEST_TIMEOUT_MS: must be at least "
            "BRIDGE_HA_SESSION_TIMEOUT_MS (6000), got 2000"
        ],
    ),
    (
        "HA buffer shorter than a takeover",
        {"BRIDGE_HA_BUFFER_SECONDS": "10"},
        [
            "BRIDGE_HA_BUFFER_SECONDS: must be at least twice "
            "BRIDGE_HA_SESSION_TIMEOUT_MS (12 s), got 10"
        ],
    ),
    (
        "journal and HA values of the wrong kind",
        {
            "BRIDGE_JOURNAL_DURABILITY": "sometimes",
            "BRIDGE_JOURNAL_MAX_BYTES": "1000",
            "BRIDGE_HA_ACCOUNT": "has space",
        },
        [
            "BRIDGE_JOURNAL_MAX_BYTES: must be at least 1048576, got 1000",
            "BRIDGE_JOURNAL_DURABILITY: expected one of interval, fsync; "
            "got 'sometimes'",
            "BRIDGE_HA_ACCOUNT: expected an account name, got 'has space'",
        ],
    ),
    (
        "buffer smaller than one frame",
        {"BRIDGE_BUFFER_MAX_BYTES": "1024"},
        [
            "BRIDGE_BUFFER_MAX_BYTES: must be at least "
            "BRIDGE_STREAM_MAX_FRAME_BYTES (1048576), got 1024"
        ],
    ),
    (
        "bootstrap entry without a port",
        {"BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9092,kafka-1"},
        [
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS: expected a comma-separated list of "
            "host:port, got 'kafka-1'"
        ],
    ),
    (
        "bootstrap entries with a bad port and an empty slot",
        {"BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "kafka:0,,kafka:70000"},
        [
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS: expected a comma-separated list of "
            "host:port, got 'kafka:0', '', 'kafka:70000'"
        ],
    ),
    (
        "idempotence without acks=all",
        {"BRIDGE_KAFKA_ACKS": "1"},
        [
            "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE: must be false when BRIDGE_KAFKA_ACKS "
            "is 1 (the idempotent producer needs acks=all)"
        ],
    ),
    (
        "SASL without its credentials",
        {"BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
        [
            "BRIDGE_KAFKA_SASL_USERNAME: required when "
            "BRIDGE_KAFKA_SECURITY_PROTOCOL is SASL_SSL (username and password "
            "go together)",
            "BRIDGE_KAFKA_SASL_PASSWORD: required when "
            "BRIDGE_KAFKA_SECURITY_PROTOCOL is SASL_SSL (username and password "
            "go together)",
        ],
    ),
    (
        "SASL user without a password",
        {
            "BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "BRIDGE_KAFKA_SASL_USERNAME": "bridge",
        },
        [
            "BRIDGE_KAFKA_SASL_PASSWORD: required when "
            "BRIDGE_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT (username and "
            "password go together)"
        ],
    ),
    (
        "SASL settings without a SASL protocol",
        {
            "BRIDGE_KAFKA_SASL_MECHANISM": "PLAIN",
            "BRIDGE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        },
        [
            "BRIDGE_KAFKA_SASL_MECHANISM: only used when "
            "BRIDGE_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT or SASL_SSL, not "
            "PLAINTEXT",
            "BRIDGE_KAFKA_SASL_PASSWORD: only used when "
            "BRIDGE_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT or SASL_SSL, not "
            "PLAINTEXT",
        ],
    ),
    (
        "CA file without TLS",
        {"BRIDGE_KAFKA_SSL_CAFILE": "/etc/ssl/ca.crt"},
        [
            "BRIDGE_KAFKA_SSL_CAFILE: only used when BRIDGE_KAFKA_SECURITY_PROTOCOL "
            "is SSL or SASL_SSL, not PLAINTEXT"
        ],
    ),
    (
        "topic with illegal characters",
        {"BRIDGE_KAFKA_TOPIC_POSITIONS": "tracking/positions"},
        [
            "BRIDGE_KAFKA_TOPIC_POSITIONS: expected a Kafka topic name (1 to 249 "
            "of a-z A-Z 0-9 . _ -, not '.' or '..'), got 'tracking/positions'"
        ],
    ),
    (
        "topic named '..'",
        {"BRIDGE_KAFKA_TOPIC_EVENTS": ".."},
        [
            "BRIDGE_KAFKA_TOPIC_EVENTS: expected a Kafka topic name (1 to 249 "
            "of a-z A-Z 0-9 . _ -, not '.' or '..'), got '..'"
        ],
    ),
    (
        "topic name too long",
        {"BRIDGE_KAFKA_TOPIC_DEVICE_STATUS": "t" * 250},
        [
            "BRIDGE_KAFKA_TOPIC_DEVICE_STATUS: expected a Kafka topic name (1 to "
            "249 of a-z A-Z 0-9 . _ -, not '.' or '..'), got "
            f"'{'t' * 57}...'"
        ],
    ),
    (
        "dead-letter topic shared with a data topic",
        {"BRIDGE_KAFKA_TOPIC_DEAD_LETTER": "sendstack.tracking.events"},
        [
            "BRIDGE_KAFKA_TOPIC_DEAD_LETTER: must differ from "
            "BRIDGE_KAFKA_TOPIC_EVENTS (both are 'sendstack.tracking.events')"
        ],
    ),
    (
        "unknown variable close to a known one",
        {"BRIDGE_KAFKA_BOOTSTRAP": "localhost:9092"},
        [
            "BRIDGE_KAFKA_BOOTSTRAP: unknown variable; did you mean "
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS?"
        ],
    ),
    (
        "unknown variable like nothing known",
        {"BRIDGE_ZZZ": "1"},
        ["BRIDGE_ZZZ: unknown variable"],
    ),
    (
        "a _FILE variant given to the pure parser",
        {"BRIDGE_SENDSTACK_APP_SECRET_FILE": "/run/secret"},
        [
            "BRIDGE_SENDSTACK_APP_SECRET_FILE: files are read by load_settings(), "
            "not by Settings.from_env()"
        ],
    ),
    (
        "the config file given to the pure parser",
        {CONFIG_FILE_VARIABLE: "/etc/bridge.env"},
        [
            "BRIDGE_CONFIG_FILE: files are read by load_settings(), "
            "not by Settings.from_env()"
        ],
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [pytest.param(o, e, id=name) for name, o, e in INVALID_CASES],
)
def test_each_problem_is_reported_exactly(
    overrides: dict[str, str], expected: list[str]
) -> None:
    """Each invalid setting yields exactly its own, precise problem message."""
    assert problems_of(MINIMAL | overrides) == expected


def test_all_problems_are_reported_at_once() -> None:
    """Several mistakes come back together, in one error, one per line."""
    env = {
        "BRIDGE_STREAM_PING_TIMEOUT_SECONDS": "abc",
        "BRIDGE_AUTH_MAX_FAILURES": "25",
        "BRIDGE_KAFKA_ACKS": "0",
        "BRIDGE_LOG_LEVL": "debug",
        "BRIDGE_STREAM_URL": "wss://h/p?session=x",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    named = [problem.split(":")[0] for problem in caught.value.problems]
    assert named == [
        "BRIDGE_SENDSTACK_APP_ID",
        "BRIDGE_SENDSTACK_APP_SECRET",
        "BRIDGE_AUTH_MAX_FAILURES",
        "BRIDGE_STREAM_PING_TIMEOUT_SECONDS",
        "BRIDGE_STREAM_URL",
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE",
        "BRIDGE_LOG_LEVL",
    ]
    message = str(caught.value)
    assert message.splitlines()[0] == "invalid configuration:"
    assert len(message.splitlines()) == 1 + len(named)


def test_a_bad_value_does_not_also_fail_the_checks_that_use_it() -> None:
    """An unreadable value is reported once, not again by a cross-check."""
    env = MINIMAL | {"BRIDGE_STREAM_RECONNECT_INITIAL_SECONDS": "soon"}
    assert problems_of(env) == [
        "BRIDGE_STREAM_RECONNECT_INITIAL_SECONDS: expected a number, got 'soon'"
    ]


# --------------------------------------------------------------------------
# Secrets never shown


def test_secrets_are_never_echoed_in_problems() -> None:
    """Problems name a secret variable but never show its value."""
    env = {
        "BRIDGE_SENDSTACK_APP_SECRET": APP_SECRET,
        "BRIDGE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "kafka",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    text = str(caught.value) + repr(caught.value.problems)
    assert "BRIDGE_KAFKA_SASL_PASSWORD" in text
    assert APP_SECRET not in text
    assert SASL_PASSWORD not in text


@pytest.mark.parametrize(
    "name",
    [
        "BRIDGE_STREAM_PING_INTERVAL_SECONDS",
        "BRIDGE_SENDSTACK_BASE_URL",
        "BRIDGE_LOG_LEVEL",
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
    ],
)
def test_a_token_pasted_into_a_plain_variable_is_masked(name: str) -> None:
    """A session token in the wrong variable is rejected without being printed."""
    problems = problems_of(MINIMAL | {name: TOKEN})
    assert len(problems) == 1
    assert problems[0].startswith(name + ":")
    assert TOKEN[:20] not in problems[0]
    assert TOKEN.split(".")[1][:20] not in problems[0]


def test_stream_url_problem_does_not_echo_the_token() -> None:
    """A ``?session=`` in the stream URL is refused and the URL is not shown."""
    problems = problems_of(
        MINIMAL | {"BRIDGE_STREAM_URL": f"wss://h/p?session={TOKEN}"}
    )
    assert TOKEN not in " ".join(problems)
    assert "wss://h" not in " ".join(problems)


def test_describe_masks_secrets_and_lists_every_loaded_variable() -> None:
    """``describe`` is flat, keyed by variable name, with secrets as ``***``."""
    env = MINIMAL | {
        "BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BRIDGE_KAFKA_SASL_USERNAME": "bridge",
        "BRIDGE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    }
    described = describe(Settings.from_env(env))
    assert list(described) == [variable.name for variable in VARIABLES]
    assert described["BRIDGE_SENDSTACK_APP_SECRET"] == "***"
    assert described["BRIDGE_KAFKA_SASL_PASSWORD"] == "***"
    assert described["BRIDGE_KAFKA_BOOTSTRAP_SERVERS"] == ["localhost:9092"]
    assert described["BRIDGE_STREAM_PING_INTERVAL_SECONDS"] == 20.0
    assert APP_SECRET not in repr(described)
    assert SASL_PASSWORD not in repr(described)


def test_describe_hides_url_passwords() -> None:
    """A password embedded in a URL is masked in ``describe``."""
    env = MINIMAL | {"BRIDGE_SENDSTACK_BASE_URL": "https://user:hunter2@host/api/v1"}
    described = describe(Settings.from_env(env))
    assert described["BRIDGE_SENDSTACK_BASE_URL"] == "https://user:***@host/api/v1"


def test_describe_leaves_out_groups_not_loaded() -> None:
    """A group the command did not need is absent from ``describe``."""
    described = describe(Settings.from_env({}, require=frozenset()))
    assert "BRIDGE_SENDSTACK_APP_SECRET" not in described
    assert "BRIDGE_KAFKA_BOOTSTRAP_SERVERS" not in described
    assert "BRIDGE_STREAM_URL" in described


ROW = re.compile(r"  (?P<mark>[ *]) (?P<name>BRIDGE_\w+) +(?P<value>\S.*)")


def test_check_config_listing_is_aligned_marked_and_masked() -> None:
    """``render_check_config`` aligns values, stars overrides, masks secrets."""
    env = MINIMAL | {"BRIDGE_OPS_PORT": "9100"}
    text = render_check_config(Settings.from_env(env))
    assert APP_SECRET not in text
    rows = [ROW.fullmatch(line) for line in text.splitlines() if "BRIDGE_" in line]
    assert all(rows)
    assert len(rows) == len(VARIABLES)
    assert len({row.start("value") for row in rows if row}) == 1  # one column
    by_name = {row["name"]: row for row in rows if row}
    assert by_name["BRIDGE_OPS_PORT"]["mark"] == "*"
    assert by_name["BRIDGE_OPS_PORT"]["value"] == "9100"
    assert by_name["BRIDGE_OPS_HOST"]["mark"] == " "
    assert by_name["BRIDGE_SENDSTACK_APP_ID"]["mark"] == "*"
    assert by_name["BRIDGE_SENDSTACK_APP_SECRET"]["value"] == "***"
    assert by_name["BRIDGE_KAFKA_SASL_PASSWORD"]["value"] == "(unset)"
    assert by_name["BRIDGE_KAFKA_BOOTSTRAP_SERVERS"]["value"] == "localhost:9092"
    assert by_name["BRIDGE_STREAM_SINGLE_SESSION"]["value"] == "false"
    assert "[sendstack]" in text
    assert "[log]" in text


def test_check_config_says_which_groups_were_not_loaded() -> None:
    """Groups a command did not need are named, not silently dropped."""
    text = render_check_config(Settings.from_env({}, require=frozenset()))
    assert "[sendstack] not loaded: not required by this command" in text
    assert "[kafka] not loaded: not required by this command" in text


# --------------------------------------------------------------------------
# Requirements per command


def test_stream_requires_sendstack_and_kafka() -> None:
    """The ``stream`` command needs both groups with required variables."""
    assert REQUIREMENTS["stream"] == frozenset({"sendstack", "kafka"})
    problems = problems_of({}, require=REQUIREMENTS["stream"])
    assert [p.split(":")[0] for p in problems] == [
        "BRIDGE_SENDSTACK_APP_ID",
        "BRIDGE_SENDSTACK_APP_SECRET",
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
    ]


def test_groups_not_required_are_none() -> None:
    """Without requirements, empty groups are not loaded and not an error."""
    s = Settings.from_env({}, require=frozenset())
    assert s.sendstack is None
    assert s.kafka is None
    assert s.stream.codec == "mapping"


def test_a_partly_set_group_is_checked_even_if_not_required() -> None:
    """Setting one required variable of a group means finishing the group."""
    problems = problems_of({"BRIDGE_SENDSTACK_APP_ID": "x"}, require=frozenset())
    assert problems == [
        "BRIDGE_SENDSTACK_APP_SECRET: required, not set "
        "(or BRIDGE_SENDSTACK_APP_SECRET_FILE)"
    ]


def test_bad_values_are_reported_even_in_groups_not_loaded() -> None:
    """A typo in a group the command does not need is still a problem."""
    problems = problems_of({"BRIDGE_KAFKA_LINGER_MS": "soon"}, require=frozenset())
    assert problems == ["BRIDGE_KAFKA_LINGER_MS: expected a whole number, got 'soon'"]


def test_require_hands_out_a_loaded_group() -> None:
    """``Settings.require`` returns the group with its type narrowed."""
    s = Settings.from_env(MINIMAL)
    assert s.require(KafkaSettings).bootstrap_servers == ("localhost:9092",)
    assert s.require(StreamSettings) is s.stream


def test_require_of_a_missing_group_is_a_config_error() -> None:
    """Asking for a group that was not loaded names what is missing."""
    s = Settings.from_env({}, require=frozenset())
    with pytest.raises(ConfigError) as caught:
        s.require(KafkaSettings)
    assert caught.value.problems == [
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS: required, not set"
    ]


def test_unknown_group_in_require_is_a_programming_error() -> None:
    """A misspelt group name is the caller's bug, raised as ``ValueError``."""
    with pytest.raises(ValueError, match="kafak"):
        Settings.from_env(MINIMAL, require=frozenset({"kafak"}))


# --------------------------------------------------------------------------
# Secret files and the config file


def write(path: Path, text: str) -> str:
    """Write *text* to *path* and return the path as a string."""
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_file_variants_read_values_from_files(tmp_path: Path) -> None:
    """``NAME_FILE`` reads the value from a file, without the trailing newline."""
    env = {
        "BRIDGE_SENDSTACK_APP_ID_FILE": write(tmp_path / "id", "7302915\n"),
        "BRIDGE_SENDSTACK_APP_SECRET_FILE": write(tmp_path / "s", APP_SECRET + "\r\n"),
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
        "BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BRIDGE_KAFKA_SASL_USERNAME_FILE": write(tmp_path / "u", "bridge"),
        "BRIDGE_KAFKA_SASL_PASSWORD_FILE": write(tmp_path / "p", SASL_PASSWORD + "\n"),
    }
    s = load_settings(env)
    sendstack = s.require(SendstackSettings)
    kafka = s.require(KafkaSettings)
    assert sendstack.app_id == "7302915"
    assert sendstack.app_secret.reveal() == APP_SECRET
    assert kafka.sasl_username == "bridge"
    assert kafka.sasl_password == Secret(SASL_PASSWORD)


def test_file_variant_problems(tmp_path: Path) -> None:
    """Both forms set, a missing file, an empty file: each is reported once."""
    env = MINIMAL | {
        "BRIDGE_SENDSTACK_APP_SECRET_FILE": write(tmp_path / "s", APP_SECRET),
        "BRIDGE_SENDSTACK_APP_ID": "",
        "BRIDGE_SENDSTACK_APP_ID_FILE": str(tmp_path / "absent"),
        "BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BRIDGE_KAFKA_SASL_USERNAME": "bridge",
        "BRIDGE_KAFKA_SASL_PASSWORD_FILE": write(tmp_path / "empty", "\n"),
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    absent = str(tmp_path / "absent")
    empty = str(tmp_path / "empty")
    assert caught.value.problems == [
        f"BRIDGE_SENDSTACK_APP_ID_FILE: cannot read {absent!r} "
        "(No such file or directory)",
        "BRIDGE_SENDSTACK_APP_SECRET_FILE: set either it or "
        "BRIDGE_SENDSTACK_APP_SECRET, not both",
        f"BRIDGE_KAFKA_SASL_PASSWORD_FILE: {empty!r} is empty",
    ]
    assert APP_SECRET not in str(caught.value)


def test_config_file_is_merged_under_the_environment(tmp_path: Path) -> None:
    """Values come from the file unless the environment sets them too."""
    config = write(
        tmp_path / "bridge.env",
        "# comment\n"
        "\n"
        "export BRIDGE_SENDSTACK_APP_ID=from-file\n"
        f"BRIDGE_SENDSTACK_APP_SECRET='{APP_SECRET}'\n"
        'BRIDGE_KAFKA_BOOTSTRAP_SERVERS = "kafka:9092"\n'
        "BRIDGE_OPS_PORT=9100\n"
        "BRIDGE_LOG_LEVEL=debug\n"
        "BRIDGE_STREAM_URL=wss://h/p#not-a-comment\n",
    )
    env = {
        CONFIG_FILE_VARIABLE: config,
        "BRIDGE_OPS_PORT": "9200",
        "BRIDGE_LOG_LEVEL": "",  # empty: unset, so the file's value stays
    }
    s = load_settings(env)
    assert s.require(SendstackSettings).app_id == "from-file"
    assert s.require(SendstackSettings).app_secret.reveal() == APP_SECRET
    assert s.require(KafkaSettings).bootstrap_servers == ("kafka:9092",)
    assert s.ops.port == 9200
    assert s.log.level == "debug"
    assert s.stream.url == "wss://h/p#not-a-comment"


def test_environment_file_variant_beats_the_config_file(tmp_path: Path) -> None:
    """``NAME_FILE`` in the environment wins over ``NAME`` in the config file."""
    config = write(
        tmp_path / "bridge.env",
        "BRIDGE_SENDSTACK_APP_ID=7302915\n"
        "BRIDGE_SENDSTACK_APP_SECRET=from-config-file\n"
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS=kafka:9092\n",
    )
    env = {
        CONFIG_FILE_VARIABLE: config,
        "BRIDGE_SENDSTACK_APP_SECRET_FILE": write(tmp_path / "s", "from-secret-file"),
    }
    secret = load_settings(env).require(SendstackSettings).app_secret
    assert secret.reveal() == "from-secret-file"


def test_config_file_problems_never_quote_lines(tmp_path: Path) -> None:
    """Bad lines are reported by number, since a line may hold a secret."""
    config = write(
        tmp_path / "bridge.env",
        f"{APP_SECRET}\n"
        "PATH=/usr/bin\n"
        "BRIDGE_CONFIG_FILE=/other.env\n"
        "BRIDGE_OPS_PORT=1\n"
        "BRIDGE_OPS_PORT=2\n"
        "BRIDGE_OPS_PROT=3\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(MINIMAL | {CONFIG_FILE_VARIABLE: config})
    where = f"BRIDGE_CONFIG_FILE {config!r}"
    assert caught.value.problems == [
        f"{where} line 1: expected KEY=VALUE",
        f"{where} line 2: PATH is not a BRIDGE_* name",
        f"{where} line 3: BRIDGE_CONFIG_FILE cannot be set in the config file",
        f"{where} line 5: BRIDGE_OPS_PORT is already set on line 4",
        "BRIDGE_OPS_PROT: unknown variable; did you mean BRIDGE_OPS_PORT?",
    ]
    assert APP_SECRET not in str(caught.value)


def test_unreadable_config_file_is_a_problem(tmp_path: Path) -> None:
    """A missing config file is reported along with the other problems."""
    missing = str(tmp_path / "nope.env")
    with pytest.raises(ConfigError) as caught:
        load_settings({CONFIG_FILE_VARIABLE: missing})
    assert caught.value.problems[0] == (
        f"BRIDGE_CONFIG_FILE {missing!r}: cannot read it (No such file or directory)"
    )
    assert len(caught.value.problems) == 4  # plus the three required variables


def test_load_settings_without_files_is_from_env() -> None:
    """With no file variables, ``load_settings`` equals ``Settings.from_env``."""
    assert load_settings(MINIMAL) == Settings.from_env(MINIMAL)


@pytest.mark.parametrize("name", ["demo.env", "production.env.example"])
def test_example_files_are_valid(name: str, tmp_path: Path) -> None:
    """The example files in ``config/`` load cleanly (credentials supplied)."""
    env = {
        CONFIG_FILE_VARIABLE: str(CONFIG_DIR / name),
        # Stand-ins for the mounted secret files of the production example.
        "BRIDGE_SENDSTACK_APP_ID": "7302915",
        "BRIDGE_SENDSTACK_APP_SECRET": APP_SECRET,
        "BRIDGE_KAFKA_SASL_USERNAME_FILE": write(tmp_path / "u", "bridge\n"),
        "BRIDGE_KAFKA_SASL_PASSWORD_FILE": write(tmp_path / "p", SASL_PASSWORD),
    }
    if name == "demo.env":
        env = {CONFIG_FILE_VARIABLE: env[CONFIG_FILE_VARIABLE]}
    settings = load_settings(env)
    assert settings.require(KafkaSettings).bootstrap_servers


# --------------------------------------------------------------------------
# The table is the single source of truth


def test_table_matches_the_dataclasses() -> None:
    """Every group field has exactly one variable, and every variable a field."""
    assert tuple(f.name for f in dataclasses.fields(Settings)) == GROUP_NAMES
    for group, kind in GROUP_TYPES.items():
        fields = [f.name for f in dataclasses.fields(kind)]
        mapped = [v.field for v in VARIABLES if v.group == group]
        assert mapped == fields, group


@pytest.mark.parametrize("kind", [Settings, *GROUP_TYPES.values()])
def test_settings_classes_are_frozen_slotted_keyword_only(kind: type) -> None:
    """All settings classes are frozen, slotted and keyword-only dataclasses."""
    params = kind.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen
    assert "__slots__" in vars(kind)
    assert all(f.kw_only for f in dataclasses.fields(kind))


def test_variable_names_are_unique_and_prefixed() -> None:
    """Names are unique, start with ``BRIDGE_`` and are upper snake case."""
    names = [variable.name for variable in VARIABLES]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"BRIDGE_[A-Z0-9_]+", name) for name in names)


def test_known_variables_cover_settings_files_and_config_file() -> None:
    """``KNOWN_VARIABLES`` holds every name a deployment may set, and no more."""
    file_variants = {v.name + "_FILE" for v in VARIABLES if v.from_file}
    assert file_variants == {
        "BRIDGE_SENDSTACK_APP_ID_FILE",
        "BRIDGE_SENDSTACK_APP_SECRET_FILE",
        "BRIDGE_KAFKA_SASL_USERNAME_FILE",
        "BRIDGE_KAFKA_SASL_PASSWORD_FILE",
    }
    assert (
        {v.name for v in VARIABLES} | file_variants | {CONFIG_FILE_VARIABLE}
    ) == KNOWN_VARIABLES


def test_secret_variables_parse_to_secrets() -> None:
    """Variables marked secret are exactly those held as ``Secret``."""
    secret_names = {v.name for v in VARIABLES if v.secret}
    assert secret_names == {"BRIDGE_SENDSTACK_APP_SECRET", "BRIDGE_KAFKA_SASL_PASSWORD"}
    assert all(v.from_file for v in VARIABLES if v.secret)


def test_defaults_are_valid_values() -> None:
    """Each default, written back as text, parses to itself."""
    for variable in VARIABLES:
        if variable.default is not None:
            text = variable.default_text
            assert variable.kind.parse(text) == variable.default, variable.name


def test_readme_reference_matches_the_table() -> None:
    """``config/README.md`` shows exactly what ``render_reference_table`` makes."""
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    assert REFERENCE_BEGIN in readme
    assert REFERENCE_END in readme
    assert replace_reference_section(readme) == readme, (
        "config/README.md is out of date; regenerate it as its Reference "
        "section explains"
    )
    assert all(f"`{name}`" in readme for name in KNOWN_VARIABLES)


def test_reference_table_lists_every_variable_once() -> None:
    """Each known variable has exactly one row in the reference."""
    table = render_reference_table()
    for name in KNOWN_VARIABLES:
        assert len(re.findall(rf"^\| `{name}` \|", table, flags=re.MULTILINE)) == 1


def test_replace_reference_section_needs_the_markers() -> None:
    """Without markers there is nothing to replace, and that is an error."""
    with pytest.raises(ValueError, match="BEGIN GENERATED"):
        replace_reference_section("# no markers here\n")


def test_only_groups_with_required_variables_may_be_absent() -> None:
    """A `Settings` field may be ``None`` just when its group has required variables."""
    hints = typing.get_type_hints(Settings)
    optional = {g for g in GROUP_NAMES if type(None) in typing.get_args(hints[g])}
    assert optional == {v.group for v in VARIABLES if v.required}


def config_with(
    entry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """Load a copy of ``bridge/config.py`` with *entry* added to `LogSettings`."""
    source = Path(bridge.config.__file__).read_text(encoding="utf-8")
    (log_settings,) = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and node.name == "LogSettings"
    ]
    assert log_settings.end_lineno is not None
    lines = source.splitlines(keepends=True)
    lines.insert(log_settings.end_lineno, textwrap.indent(entry, "    "))
    path = tmp_path / "config_plus_one.py"
    path.write_text("".join(lines), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


LINE_WIDTH = """\
line_width: int = setting(
    name="BRIDGE_LOG_LINE_WIDTH",
    kind=_integer(ge=40),
    default=100,
    description="Wrap console log lines at this many characters.",
)
"""


def test_one_setting_entry_is_the_whole_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `setting` field alone reaches the table, reader, docs and check-config."""
    m = config_with(LINE_WIDTH, tmp_path, monkeypatch)
    names = [v.name for v in VARIABLES]
    after = names.index("BRIDGE_LOG_FORMAT") + 1
    expected = [*names[:after], "BRIDGE_LOG_LINE_WIDTH", *names[after:]]
    assert [v.name for v in m.VARIABLES] == expected
    added = m.KNOWN_VARIABLES - KNOWN_VARIABLES
    assert added == {"BRIDGE_LOG_LINE_WIDTH"}
    assert KNOWN_VARIABLES <= m.KNOWN_VARIABLES

    assert m.Settings.from_env(MINIMAL).log.line_width == 100
    settings = m.Settings.from_env(MINIMAL | {"BRIDGE_LOG_LINE_WIDTH": " 120 "})
    assert settings.log.line_width == 120
    assert m.describe(settings)["BRIDGE_LOG_LINE_WIDTH"] == 120
    with pytest.raises(ConfigError) as caught:
        m.Settings.from_env(MINIMAL | {"BRIDGE_LOG_LINE_WIDTH": "3"})
    assert caught.value.problems == [
        "BRIDGE_LOG_LINE_WIDTH: must be at least 40, got 3"
    ]

    row = (
        "| `BRIDGE_LOG_LINE_WIDTH` | integer >= 40 | `100` | "
        "Wrap console log lines at this many characters. |\n"
    )
    table = m.render_reference_table()
    assert row in table.split("### `log`")[1].split("###")[0]
    assert table.replace(row, "") == render_reference_table()

    listing = m.render_check_config(settings).splitlines()
    assert [line.split() for line in listing if "BRIDGE_LOG_LINE_WIDTH" in line] == [
        ["*", "BRIDGE_LOG_LINE_WIDTH", "120"]
    ]


def test_a_group_field_without_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group field not declared with `setting` fails the import, naming the field."""
    with pytest.raises(TypeError, match=r"LogSettings\.colour: declare .* setting\(\)"):
        config_with("colour: bool = True\n", tmp_path, monkeypatch)


# --------------------------------------------------------------------------
# Secret


def test_secret_never_shows_its_value() -> None:
    """``repr``, ``str``, f-strings, ``%`` and ``format`` all give ``***``."""
    secret = Secret(APP_SECRET)
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert f"{secret!r}" == "Secret('***')"
    assert f"{secret:>40}" == "***"
    assert "%s" % secret == "***"  # noqa: UP031  (the old style must hide it too)
    assert format(secret, "s") == "***"
    assert APP_SECRET not in repr([secret, {"k": secret}])


def test_secret_reveals_only_when_asked() -> None:
    """``reveal`` is the one way back to the value."""
    assert Secret(APP_SECRET).reveal() == APP_SECRET


def test_secret_equality_is_by_value() -> None:
    """Secrets compare and hash by value, and never equal plain strings."""
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))
    assert len({Secret("a"), Secret("a")}) == 1


def test_secret_truthiness_is_refused() -> None:
    """``if secret:`` raises instead of leaking whether it is empty."""
    with pytest.raises(TypeError, match="reveal"):
        bool(Secret(""))


def test_secret_is_immutable_and_not_picklable() -> None:
    """A secret cannot be altered, nor written out by ``pickle``."""
    secret = Secret("a")
    with pytest.raises(AttributeError):
        secret._value = "b"
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(secret)


def test_secret_wraps_only_strings() -> None:
    """Wrapping something else is a type error."""
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_a_broken_mapping_file_lists_every_problem_with_its_line(
    tmp_path: Path,
) -> None:
    """A mapping file with several mistakes: each is one problem, placed by line."""
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "mapping: 1\n"
        "message:\n"
        "  select: {each: {rule: pos}}\n"
        "rules:\n"
        "  position:\n"
        "    kind: position\n"
        "    fields:\n"
        "      deviceId: device.id\n"
        "      fixTime: {path: ts, format: epoch_ms}\n"
        "      latitude: lat\n"
        "      longitude: lon\n"
        "      speed: {path: v, unit: furlongs}\n"
        "  alert:\n"
        "    kind: event\n"
        "    fields:\n"
        "      eventType: {path: code, enum: {X: overspeeding, ON: overspeed}}\n"
    )
    problems = problems_of({"BRIDGE_STREAM_MAPPING_FILE": str(mapping)})
    listed = [p for p in problems if p.startswith("BRIDGE_STREAM_MAPPING_FILE")]
    expected = [
        "line 16, $.rules.alert.fields.eventType.enum.True: key True is not a string",
        "line 12, $.rules.position.fields.speed.unit: 'furlongs' is not one of",
        "line 3, $.message.select.each.rule: no rule named 'pos'",
        "line 5, $.rules.position: rule is never used",
        "line 16, $.rules.alert.fields.eventType.enum.X: 'overspeeding' is not an"
        " event type",
        "line 15, $.rules.alert.fields: eventTime is required",
        "line 15, $.rules.alert.fields: deviceId is required",
    ]
    for text in expected:
        assert any(text in p for p in listed), (text, listed)
    assert len(listed) == len(expected) + 1  # and: rule alert is never used


def test_a_mapping_file_needs_the_mapping_codec(tmp_path: Path) -> None:
    """Naming a mapping file with the hand-written codec is a mistake, said so."""
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("mapping: 1\n")
    problems = problems_of(
        {
            "BRIDGE_STREAM_MAPPING_FILE": str(mapping),
            "BRIDGE_STREAM_CODEC": "traccar-json",
        }
    )
    assert any(
        "BRIDGE_STREAM_MAPPING_FILE: only used when BRIDGE_STREAM_CODEC is mapping" in p
        for p in problems
    )


def test_an_unreadable_mapping_file_is_one_clear_problem(tmp_path: Path) -> None:
    """A missing mapping file is named, with the reason, not a traceback."""
    problems = problems_of({"BRIDGE_STREAM_MAPPING_FILE": str(tmp_path / "nope.yaml")})
    assert any("cannot read" in p and "No such file" in p for p in problems)


def test_fencing_needs_the_hot_standby_and_acks_all() -> None:
    """BRIDGE_HA_TRANSACTIONAL_ID without HA, or with acks other than all, is
    refused with both variables named."""
    base = {**MINIMAL, "BRIDGE_HA_TRANSACTIONAL_ID": "bridge"}
    with pytest.raises(ConfigError) as alone:
        Settings.from_env(base)
    assert "BRIDGE_HA_TRANSACTIONAL_ID" in str(alone.value)
    assert "BRIDGE_HA_ENABLED" in str(alone.value)
    with pytest.raises(ConfigError) as acks:
        Settings.from_env(
            {
                **base,
                "BRIDGE_HA_ENABLED": "true",
                "BRIDGE_KAFKA_ACKS": "1",
                "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
            }
        )
    assert "BRIDGE_KAFKA_ACKS" in str(acks.value)
    ok = Settings.from_env({**base, "BRIDGE_HA_ENABLED": "true"})
    assert ok.ha.transactional_id == "bridge"
    assert ok.ha.transaction_ms == 100
