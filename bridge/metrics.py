"""Every Prometheus metric of the bridge, defined on an injected registry.

Names use the ``bridge_`` prefix and base units; labels are bounded sets (no
ids, no tokens). Label children that we know in advance are created up front
so dashboards see zero series instead of missing ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bridge.core.close_codes import CLOSE_REASONS, SINGLE_SESSION_CAUSES

ITEM_KINDS = ("position", "device_status", "event")
FRAME_OUTCOMES = ("ok", "keepalive", "dead_lettered", "partial")
DLQ_REASONS = (
    "oversize",
    "empty",
    "malformed_json",
    "not_an_object",
    "unknown_field",
    "not_an_array",
    "unknown_event_type",
    "invalid_item",
    "unknown_type",
    "not_a_socketio_event",
    "other",
)
# The usual failures of a send, created up front so the first one counts in
# increase(); others still appear as they happen.
KAFKA_ERRORS = (
    "KafkaTimeoutError",
    "RequestTimedOutError",
    "KafkaConnectionError",
    "NotLeaderForPartitionError",
    "LeaderNotAvailableError",
    "NodeNotReadyError",
)
WS_STATES = {"disconnected": 0, "connecting": 1, "open": 2, "rotating": 3}
# How the stream rotates sessions: make-before-break (multi) or close-first (single).
SESSION_POLICIES = ("multi", "single")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Finer at the low end: what the bridge itself adds is milliseconds.
_BRIDGE_LATENCY_BUCKETS = (
    0.0025,
    0.005,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.15,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


class SinkMetrics:
    """What the Kafka record sink reports, in whichever process runs one."""

    def __init__(self, registry: CollectorRegistry, *, kinds: tuple[str, ...]) -> None:
        self.published = Counter(
            "bridge_records_published_total",
            "Records acknowledged by Kafka, by kind (dead_letter included).",
            ["kind"],
            registry=registry,
        )
        self.kafka_send_seconds = Histogram(
            "bridge_kafka_send_seconds",
            "Time from accepting a record to Kafka's ack (observed once per "
            "batch, for its oldest record).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.kafka_errors = Counter(
            "bridge_kafka_send_errors_total",
            "Failed Kafka sends (each is retried), by error class.",
            ["error"],
            registry=registry,
        )
        self.buffer_records = Gauge(
            "bridge_buffer_records",
            "Records accepted but not yet acknowledged by Kafka.",
            registry=registry,
        )
        self.buffer_bytes = Gauge(
            "bridge_buffer_bytes",
            "Bytes of records accepted but not yet acknowledged by Kafka.",
            registry=registry,
        )
        self.buffer_full_seconds = Counter(
            "bridge_buffer_full_seconds_total",
            "Time intake spent blocked on a full buffer (backpressure).",
            registry=registry,
        )
        for error in KAFKA_ERRORS:
            self.kafka_errors.labels(error)
        for kind in kinds:
            self.published.labels(kind)


class IntakeMetrics:
    """Metrics of one account's intake: its session, socket and frames.

    A process streaming several accounts keeps one set per account, each in
    its own registry, and shows them with an ``account`` label
    (`AccountLabelled`).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames = Counter(
            "bridge_stream_frames_total",
            "Websocket frames received, by what the codec made of them.",
            ["outcome"],
            registry=registry,
        )
        self.items = Counter(
            "bridge_stream_items_total",
            "Upstream items decoded from frames, by kind.",
            ["kind"],
            registry=registry,
        )
        self.duplicates = Counter(
            "bridge_stream_duplicates_dropped_total",
            "Items dropped because their event id was just published "
            "(rotation overlap, reconnect).",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "bridge_records_dead_lettered_total",
            "Inputs sent to the dead-letter topic, by origin and reason.",
            ["origin", "reason"],
            registry=registry,
        )
        self.ws_connects = Counter(
            "bridge_ws_connects_total",
            "Websocket connection attempts, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.ws_disconnects = Counter(
            "bridge_ws_disconnects_total",
            "Websocket connections that ended, by reason.",
            ["reason"],
            registry=registry,
        )
        self.ws_reconnects = Counter(
            "bridge_ws_reconnects_total",
            "Reconnections after a connection was lost (not rotations).",
            registry=registry,
        )
        self.ws_state = Gauge(
            "bridge_ws_state",
            "Websocket state: 0 disconnected, 1 connecting, 2 open, 3 rotating.",
            registry=registry,
        )
        self.ws_open = Gauge(
            "bridge_ws_open_connections",
            "Open tracking sockets (2 during a make-before-break overlap).",
            registry=registry,
        )
        self.last_frame = Gauge(
            "bridge_stream_last_frame_timestamp_seconds",
            "Unix time of the last frame received.",
            registry=registry,
        )
        self.watchdog = Counter(
            "bridge_stream_watchdog_triggers_total",
            "Reconnects forced by the staleness watchdog.",
            registry=registry,
        )
        self.session_expires_in = Gauge(
            "bridge_session_expires_in_seconds",
            "Seconds until the current session expires (negative: none valid).",
            registry=registry,
        )
        self.session_obtained = Counter(
            "bridge_session_obtained_total",
            "Sessions obtained from Sendstack.",
            registry=registry,
        )
        self.rotations = Counter(
            "bridge_session_rotations_total",
            "Socket rotations onto a new session, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.rotation_gap = Histogram(
            "bridge_session_rotation_gap_seconds",
            "Intake gap during a rotation: last frame handled on the old socket "
            "to the first frame handled on the new one.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.auth_failures = Counter(
            "bridge_auth_failures_total",
            "Failed session requests, by reason.",
            ["reason"],
            registry=registry,
        )
        self.session_policy = Gauge(
            "bridge_stream_session_policy",
            "The upstream's session policy the stream follows: 1 for the current "
            "one. multi: make-before-break rotations; single: close-first (set by "
            "BRIDGE_STREAM_SINGLE_SESSION, or observed during a rotation).",
            ["policy"],
            registry=registry,
        )
        self.session_policy_fallbacks = Counter(
            "bridge_stream_session_policy_fallbacks_total",
            "Falls back from make-before-break to close-first rotations (at most "
            "one per process), by what the upstream did: refused (the new "
            "socket's upgrade got 409/403/429), replaced (the old socket closed "
            "with 4409), revoked (the old socket closed with 4001/1008).",
            ["cause"],
            registry=registry,
        )
        for outcome in FRAME_OUTCOMES:
            self.frames.labels(outcome)
        for kind in ITEM_KINDS:
            self.items.labels(kind)
        for reason in DLQ_REASONS:
            self.dead_lettered.labels("stream", reason)
        for reason in CLOSE_REASONS:
            self.ws_disconnects.labels(reason)
        for outcome in ("ok", "rejected", "failed"):
            self.ws_connects.labels(outcome)
        # refused: the upgrade got a 4xx other than a session refusal (409, 429).
        self.ws_connects.labels("refused")
        for policy in SESSION_POLICIES:
            self.session_policy.labels(policy)
        for cause in SINGLE_SESSION_CAUSES:
            self.session_policy_fallbacks.labels(cause)
        for outcome in ("ok", "failed", "closed_first"):
            self.rotations.labels(outcome)
        for reason in ("rejected", "locked_out", "unavailable", "protocol"):
            self.auth_failures.labels(reason)


class OutputMetrics:
    """Metrics of the stream's way to Kafka, shared by all its accounts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # The Kafka sink's metrics, under the names they always had.
        self.sink = SinkMetrics(registry, kinds=(*ITEM_KINDS, "dead_letter"))
        self.published = self.sink.published
        self.kafka_send_seconds = self.sink.kafka_send_seconds
        self.kafka_errors = self.sink.kafka_errors
        self.buffer_records = self.sink.buffer_records
        self.buffer_bytes = self.sink.buffer_bytes
        self.buffer_full_seconds = self.sink.buffer_full_seconds
        self.end_to_end = Histogram(
            "bridge_stream_end_to_end_seconds",
            "Event time (upstream) to Kafka acknowledgement (observed once per "
            "batch, for its first record).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.receive_to_ack = Histogram(
            "bridge_stream_receive_to_ack_seconds",
            "The bridge's own latency: the frame's receipt (its records' "
            "ce_bridgereceivedat, ms) to Kafka's acknowledgement, journal "
            "included (observed once per batch, for its first record).",
            buckets=_BRIDGE_LATENCY_BUCKETS,
            registry=registry,
        )


class StreamMetrics(IntakeMetrics, OutputMetrics):
    """Metrics of a ``stream`` process with one account: intake and output in
    one registry, unlabelled."""

    def __init__(self, registry: CollectorRegistry) -> None:
        IntakeMetrics.__init__(self, registry)
        OutputMetrics.__init__(self, registry)


class AccountLabelled(Collector):
    """Shows each account's `IntakeMetrics` (one registry per account) in the
    process registry, every sample with an ``account`` label."""

    def __init__(self) -> None:
        self._registries: dict[str, CollectorRegistry] = {}

    def add(self, account: str) -> IntakeMetrics:
        """New metrics for *account*, in a registry of its own."""
        registry = self._registries[account] = CollectorRegistry()
        return IntakeMetrics(registry)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for account, registry in self._registries.items():
            for family in registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    merged.add_sample(
                        sample.name,
                        {"account": account, **sample.labels},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
        yield from families.values()


def dlq_reason_label(reason: str) -> str:
    """Map a codec rejection reason to the bounded label set."""
    return reason if reason in DLQ_REASONS else "other"


class RoleMetrics:
    """Leader or hot standby, per account (``BRIDGE_HA_ENABLED``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.role = Gauge(
            "bridge_stream_role",
            "This replica's role for the account: 0 standby, 1 taking over, 2 leading.",
            ["account"],
            registry=registry,
        )
        self.takeovers = Counter(
            "bridge_stream_takeovers_total",
            "Takeovers this replica completed (it became the account's leader).",
            ["account"],
            registry=registry,
        )
        self.takeover_seconds = Histogram(
            "bridge_stream_takeover_seconds",
            "From the group's assignment to publishing live: catching up on the "
            "old leader's progress and sending what it had not reported.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )
        self.takeover_published = Counter(
            "bridge_stream_takeover_published_total",
            "Held records a takeover published because the old leader had not "
            "reported them acknowledged.",
            ["account"],
            registry=registry,
        )
        self.standby_records = Gauge(
            "bridge_standby_buffer_records",
            "Recent records held for a takeover.",
            ["account"],
            registry=registry,
        )
        self.standby_bytes = Gauge(
            "bridge_standby_buffer_bytes",
            "Bytes of recent records held for a takeover.",
            ["account"],
            registry=registry,
        )
        self.standby_age = Gauge(
            "bridge_standby_buffer_age_seconds",
            "Age of the oldest held record (the window a takeover can fill).",
            ["account"],
            registry=registry,
        )
        self.fenced = Counter(
            "bridge_ha_fenced_total",
            "Times Kafka fenced this replica's transactional producer for the "
            "account: another replica took it over while this one still published.",
            ["account"],
            registry=registry,
        )
        self.fenced_records = Counter(
            "bridge_ha_fenced_records_total",
            "Journaled records this replica let go to the account's new leader "
            "instead of publishing them (fenced, or led elsewhere after a restart).",
            ["account"],
            registry=registry,
        )
        self.progress_digests = Counter(
            "bridge_stream_progress_digests_total",
            "Acknowledged records this replica reported on the coordination topic.",
            registry=registry,
        )


class ReadyMetric:
    """``bridge_ready``: 1 while the app's readiness checks all pass, else 0.

    Every app (``stream``, ``webhooks``, ``commands``) registers one and hands
    it the same check that ``/readyz`` answers with; the value is computed at
    scrape time, so it is current even when nothing probes ``/readyz``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "bridge_ready",
            "1 when the process is ready (what /readyz answers 200 for), else 0.",
            registry=registry,
        )

    def track(self, readiness: Callable[[], Mapping[str, bool]]) -> None:
        """Report ``all(readiness().values())`` at every scrape."""
        self.gauge.set_function(lambda: float(all(readiness().values())))


COMMAND_OUTCOMES = ("succeeded", "failed", "rejected", "ambiguous")


class CommandMetrics:
    """Metrics of the ``commands`` path."""

    def __init__(
        self, registry: CollectorRegistry, command_types: tuple[str, ...]
    ) -> None:
        self.commands = Counter(
            "bridge_commands_total",
            "Commands finished, by type and outcome (one per command id).",
            ["type", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "bridge_commands_duration_seconds",
            "Time from taking a command to publishing its result.",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "bridge_commands_retries_total",
            "API attempts beyond the first, by command type.",
            ["type"],
            registry=registry,
        )
        self.api_calls = Counter(
            "bridge_commands_api_calls_total",
            "Calls to Sendstack's API, by status class (2xx, 4xx, 429, 5xx, error).",
            ["status"],
            registry=registry,
        )
        self.rate_limiter_wait = Counter(
            "bridge_commands_rate_limiter_wait_seconds_total",
            "Time commands waited for the shared rate limiter.",
            registry=registry,
        )
        self.in_flight = Gauge(
            "bridge_commands_in_flight",
            "Commands taken from Kafka and not yet finished.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "bridge_commands_consumer_lag",
            "Messages in the command topic not yet consumed, by partition.",
            ["partition"],
            registry=registry,
        )
        self.breaker_open = Gauge(
            "bridge_commands_breaker_open",
            "1 while the circuit breaker holds calls back.",
            registry=registry,
        )
        self.auth_blocked = Gauge(
            "bridge_commands_auth_blocked",
            "1 while calls are stopped after a 401 (credentials refused).",
            registry=registry,
        )
        self.duplicates = Counter(
            "bridge_commands_duplicates_skipped_total",
            "Redelivered commands whose result already existed.",
            registry=registry,
        )
        self.reconciled = Counter(
            "bridge_commands_reconciled_total",
            "Reconcile verdicts on earlier attempts that may have taken effect:"
            " yes (found), no (absent after the settle window), unknown.",
            ["found"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "bridge_commands_dead_lettered_total",
            "Commands sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        for command_type in command_types:
            for outcome in COMMAND_OUTCOMES:
                self.commands.labels(command_type, outcome)
            self.duration.labels(command_type)
            self.retries.labels(command_type)
        for status in ("2xx", "4xx", "429", "5xx", "error"):
            self.api_calls.labels(status)
        for found in ("yes", "no", "unknown"):
            self.reconciled.labels(found)


# -- webhooks ----------------------------------------------------------------

WEBHOOK_OUTCOMES = (
    "accepted",
    "dead_lettered",
    "duplicate",
    "bad_signature",
    "missing_signature",
    "malformed",
    "too_large",
    "unavailable",
    "not_found",
)
WEBHOOK_FAMILIES = ("delivery", "tracking", "dead_letter")
WEBHOOK_DLQ_REASONS = (
    "missing_webhook_id",
    "missing_event_type",
    "invalid_event_type",
    "unknown_event_type",
    "oversize",
    "other",
)
WEBHOOK_SCHEMES = ("webhook_id", "payload")
WEBHOOK_UNAVAILABLE = ("disconnected", "timeout", "full", "failed")


class WebhookMetrics:
    """Metrics of the ``webhooks`` path (the receiver; Kafka's are the sink's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "bridge_webhook_requests_total",
            "Webhook requests answered, by outcome (2xx: accepted, dead_lettered, "
            "duplicate).",
            ["outcome"],
            registry=registry,
        )
        self.unavailable = Counter(
            "bridge_webhook_unavailable_total",
            "Webhooks answered 503 so that Sendstack retries, by cause.",
            ["cause"],
            registry=registry,
        )
        self.verified = Counter(
            "bridge_webhook_verified_total",
            "Webhooks whose signature verified, by scheme (webhook_id: current, "
            "payload: legacy).",
            ["scheme"],
            registry=registry,
        )
        self.published = Counter(
            "bridge_webhook_records_published_total",
            "Webhook records acknowledged by Kafka, by family (dead_letter included).",
            ["family"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "bridge_webhook_dead_lettered_total",
            "Verified webhooks sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "bridge_webhook_publish_seconds",
            "Time from receiving a webhook to Kafka's ack of its record.",
            buckets=(0.001, 0.0025, *_LATENCY_BUCKETS),
            registry=registry,
        )
        self.in_flight = Gauge(
            "bridge_webhook_in_flight_records",
            "Webhook records handed to the producer and not yet acknowledged.",
            registry=registry,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.requests.labels(outcome)
        for cause in WEBHOOK_UNAVAILABLE:
            self.unavailable.labels(cause)
        for scheme in WEBHOOK_SCHEMES:
            self.verified.labels(scheme)
        for family in WEBHOOK_FAMILIES:
            self.published.labels(family)
        for reason in WEBHOOK_DLQ_REASONS:
            self.dead_lettered.labels(reason)


def webhook_dlq_reason_label(reason: str) -> str:
    """Map a webhook dead-letter reason to the bounded label set."""
    return reason if reason in WEBHOOK_DLQ_REASONS else "other"
