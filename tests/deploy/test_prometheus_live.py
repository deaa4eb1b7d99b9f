"""A real Prometheus scrapes the bridge; every dashboard and alert query runs on it.

The emulator and the three processes, ``StreamApp``, ``WebhookApp`` and
``CommandApp``, run in-process against the test broker, each with its own ops
port; a ``prometheus`` process (Debian's package) scrapes the three every
second, as three jobs, and loads the alerts file. The stream job has two
targets: the stream, and a second stream replica with the hot standby on,
alone in its coordination group, so leading (its role, takeover and buffer
metrics are what the dashboard's hot standby row and the BridgeStream* alerts
read; the first stays without HA because its 1 s Kafka request timeout, there
for the broker stall, is shorter than a group join). During a short run the
streams go through session rotations (a 3 s session lifetime), two dropped
sockets and bad frames, the emulator posts signed webhooks (duplicates
included), commands are produced (one of them malformed) and, with the test's
own broker, Kafka stalls for a moment. Then every panel expression of the
dashboard and every alert expression is sent to Prometheus's HTTP API, the
way Grafana and the rule engine send them, and each must evaluate and return
at least one series.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import yaml

from bridge.adapters.http_server import HttpServer
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.emulator.webhooks import RetryPolicy
from tests.deploy.observability import (
    ALERTS,
    alert_queries,
    alert_rules,
    dashboard_queries,
    dashboard_variables,
    require_tool,
)
from tests.e2e.commands_harness import (
    booking,
    commands_env,
    fresh_command_topics,
    produce,
    running_worker,
)
from tests.e2e.harness import bridge_env, fresh_topics, running_bridge
from tests.e2e.verifier import wait_for
from tests.kafka_broker import Broker, unique_topic
from tests.webhooks.harness import fresh_webhook_topics, running_webhooks, webhook_env

# Each webhook is posted once: the receiver's answers are what the test reads.
ONCE = RetryPolicy(max_attempts=1)

pytestmark = pytest.mark.e2e

# The hot standby replica's only account.
ACCOUNT = {"account": "default"}

COMPONENTS = ("stream", "webhooks", "commands")
JOBS = {component: f"sendstack-bridge-{component}" for component in COMPONENTS}
NAMESPACE = "live-test"
# What Grafana would put in $__rate_interval here: long enough to span the run.
RATE_INTERVAL = "1m"
# Panels that only have series once Kafka has failed a send: the run stalls
# the test's own broker, which an external broker cannot be.
NEEDS_BROKER_STALL = {"Kafka / Send errors by error (each retried) / A"}


_THRESHOLD = re.compile(
    r"\s*(?:==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*(?=$|\bor\b|\band\b|\bunless\b)"
)


def signal_of(expr: str) -> str:
    """An alert expression without its thresholds: the values it watches."""
    signal = _THRESHOLD.sub(" ", expr).strip()
    assert signal != expr.strip(), f"no threshold in {expr!r}"
    return signal


class Process(Protocol):
    """What the test needs of StreamApp, WebhookApp and CommandApp."""

    ops: HttpServer

    def readiness(self) -> Mapping[str, bool]: ...


@dataclass
class Result:
    """One instant query's answer."""

    error: str | None
    series: list[dict[str, Any]]


@dataclass
class LiveRun:
    """Everything the scenario observed, for the tests to judge."""

    variables: dict[str, list[str]] = field(default_factory=dict)
    panels: dict[str, Result] = field(default_factory=dict)
    alerts: dict[str, Result] = field(default_factory=dict)
    signals: dict[str, Result] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    active_alerts: list[dict[str, Any]] = field(default_factory=list)
    broker_paused: bool = False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _prometheus(directory: Path, targets: dict[str, list[int]]) -> Iterator[str]:
    """A Prometheus process scraping job -> 127.0.0.1:ports; yields its URL."""
    config = {
        "global": {
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}" for port in ports],
                        "labels": {"namespace": NAMESPACE},
                    }
                ],
            }
            for job, ports in targets.items()
        ],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (directory / "prometheus.log").open("w")
    process = subprocess.Popen(  # noqa: S603 - the prometheus binary, fixed arguments
        [
            require_tool("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode in (0, -15), (directory / "prometheus.log").read_text()


class PromApi:
    """The bits of Prometheus's HTTP API the test uses."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        response = await self.client.get(path, params=params)
        body: dict[str, Any] = response.json()
        return body

    async def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await self.client.get("/-/ready")).status_code == 200:
                    return
            assert time.monotonic() < deadline, "prometheus did not become ready"
            await asyncio.sleep(0.2)

    async def query(self, expr: str) -> Result:
        body = await self.get("/api/v1/query", query=expr)
        if body["status"] != "success":
            return Result(error=f"{body['errorType']}: {body['error']}", series=[])
        result = body["data"]["result"]
        assert body["data"]["resultType"] == "vector", body["data"]["resultType"]
        return Result(error=None, series=list(result))

    async def wait_for_samples(self, expr: str, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            answer = await self.query(f"count_over_time(({expr})[1m:1s])")
            if answer.series and float(answer.series[0]["value"][1]) >= count:
                return
            assert time.monotonic() < deadline, f"{expr} not scraped {count} times"
            await asyncio.sleep(0.5)


def _substitute(expr: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    return expr.replace("$__rate_interval", RATE_INTERVAL)


async def _evaluate(api: PromApi, run: LiveRun) -> None:
    chosen: dict[str, str] = {}
    for variable in dashboard_variables():
        selector = _substitute(variable.selector, chosen)
        body = await api.get(
            f"/api/v1/label/{variable.label}/values", **{"match[]": selector}
        )
        assert body["status"] == "success", body
        run.variables[variable.name] = body["data"]
        chosen[variable.name] = "|".join(body["data"]) or "(none)"
    for query in dashboard_queries():
        run.panels[query.where] = await api.query(_substitute(query.expr, chosen))
    for query in alert_queries():
        run.alerts[query.where] = await api.query(query.expr)
        run.signals[query.where] = await api.query(signal_of(query.expr))
    rules = await api.get("/api/v1/rules")
    run.rules = [r for g in rules["data"]["groups"] for r in g["rules"]]
    run.active_alerts = (await api.get("/api/v1/alerts"))["data"]["alerts"]


async def _scenario(broker: Broker, directory: Path) -> LiveRun:
    run = LiveRun()
    bootstrap = broker.bootstrap
    stream_topics = await fresh_topics(bootstrap)
    webhook_topics = await fresh_webhook_topics(bootstrap)
    command_topics = await fresh_command_topics(bootstrap)
    config = EmulatorConfig(
        devices=20, max_frames_per_second=10.0, session_ttl_seconds=3.0
    )
    async with (
        Emulator(config) as emu,
        running_bridge(
            bridge_env(
                emu,
                bootstrap,
                stream_topics,
                BRIDGE_KAFKA_REQUEST_TIMEOUT_MS="1000",
            )
        ) as stream,
        # Alone in its group, it leads; the broker's stall is shorter than its
        # session timeout, so it keeps leading through it.
        running_bridge(
            bridge_env(
                emu,
                bootstrap,
                stream_topics,
                BRIDGE_HA_ENABLED="true",
                BRIDGE_HA_COORDINATION_TOPIC=unique_topic("coord"),
                BRIDGE_HA_GROUP_ID=unique_topic("group"),
            )
        ) as leader,
        running_webhooks(webhook_env(emu, bootstrap, webhook_topics)) as hooks,
        running_worker(commands_env(emu, bootstrap, command_topics)) as worker,
    ):
        apps: dict[str, list[Process]] = {
            "stream": [stream.app, leader.app],
            "webhooks": [hooks.app],
            "commands": [worker.app],
        }
        processes = [app for group in apps.values() for app in group]
        await wait_for(lambda: all(all(a.readiness().values()) for a in processes), 30)
        await wait_for(lambda: leader.sample("bridge_stream_role", ACCOUNT) == 2, 30)
        ports = {
            JOBS[name]: [a.ops.port for a in group] for name, group in apps.items()
        }
        with _prometheus(directory, ports) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                api = PromApi(client)
                await api.wait_ready(30)
                await api.wait_for_samples(f"count(up == 1) == {len(processes)}", 2, 30)
                await produce(
                    bootstrap,
                    command_topics.commands,
                    [booking(), booking(), b"{not json"],
                )
                await emu.send_webhooks(hooks.url, "all", 1, duplicate=True, retry=ONCE)
                await asyncio.sleep(1.5)
                # One socket per stream, two while one rotates (make-before-break).
                assert await emu.drop() >= len(apps["stream"])
                await asyncio.sleep(1.5)
                assert emu.send_malformed() >= 1
                assert emu.send_unknown() >= 1
                await asyncio.sleep(1.5)
                if not broker.external:
                    broker.pause()
                    try:
                        await asyncio.sleep(2.5)
                    finally:
                        broker.resume()
                    run.broker_paused = True
                await asyncio.sleep(1.5)
                await wait_for(
                    lambda: stream.sample("bridge_ws_open_connections") >= 1, 10
                )
                assert await emu.drop() >= 1
                await produce(bootstrap, command_topics.commands, [booking()])
                await emu.send_webhooks(hooks.url, "new_delivery", 2, retry=ONCE)
                await wait_for(
                    lambda: all(all(a.readiness().values()) for a in processes), 20
                )
                await asyncio.sleep(3)
                await api.wait_for_samples(
                    f"count(bridge_ready == 1) == {len(processes)}", 3, 30
                )
                await _evaluate(api, run)
    return run


@pytest.fixture(scope="module")
def live(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> LiveRun:
    """Run the scenario once for the module's tests."""
    require_tool("prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    # A loop of its own that leaves the session's current event loop alone:
    # asyncio.run() would unset it, and the loop that looptime's hook made for
    # an earlier sync test would then be collected unclosed (ResourceWarning,
    # an error under filterwarnings=error).
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(_scenario(broker, directory))


def _failures(results: dict[str, Result], *, need_series: bool) -> list[str]:
    failures = []
    for where, result in results.items():
        if result.error is not None:
            failures.append(f"{where}: {result.error}")
        elif need_series and not result.series:
            failures.append(f"{where}: no series")
    return failures


def test_dashboard_variables_find_the_three_processes(live: LiveRun) -> None:
    """The namespace and job variables list what Prometheus scraped."""
    assert live.variables == {"namespace": [NAMESPACE], "job": sorted(JOBS.values())}


def test_every_panel_expression_returns_series(live: LiveRun) -> None:
    """Each panel expression evaluates and returns at least one series."""
    assert len(live.panels) == len(dashboard_queries())
    wanted = dict(live.panels)
    if not live.broker_paused:
        for where in NEEDS_BROKER_STALL:
            assert wanted.pop(where).error is None
    assert _failures(wanted, need_series=True) == []


def test_every_alert_expression_and_its_signal_evaluate(live: LiveRun) -> None:
    """Each alert evaluates; what it thresholds returns at least one series."""
    assert len(live.alerts) == len(alert_rules())
    assert _failures(live.alerts, need_series=False) == []
    assert _failures(live.signals, need_series=True) == []


def test_rules_load_and_evaluate_in_prometheus(live: LiveRun) -> None:
    """Prometheus loaded every alert and evaluates each without error."""
    assert sorted(r["name"] for r in live.rules) == sorted(
        r["alert"] for r in alert_rules()
    )
    for rule in live.rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_short_lived_sessions_put_the_expiry_alert_pending(live: LiveRun) -> None:
    """With 3 s sessions, BridgeSessionNearExpiry matches the stream and is pending."""
    series = live.alerts["alert BridgeSessionNearExpiry"].series
    assert len(series) == 2  # both stream replicas
    assert {s["metric"]["job"] for s in series} == {JOBS["stream"]}
    active = {(a["labels"]["alertname"], a["state"]) for a in live.active_alerts}
    assert ("BridgeSessionNearExpiry", "pending") in active
    assert not {name for name, _ in active} & {"BridgeNotReady"}


def _values(result: Result, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in result.series}


def test_panels_show_what_the_run_did(live: LiveRun) -> None:
    """Frames, rotations, reconnects, webhooks, commands, errors, the leader show up."""
    panels = live.panels
    ready = _values(panels["Overview / Ready / A"], "job")
    assert ready == dict.fromkeys(JOBS.values(), 1.0)
    frames = _values(panels["Stream / Frames by outcome / A"], "outcome")
    assert frames["ok"] > 0
    assert frames["dead_lettered"] > 0
    rotations = _values(
        panels["Session / Sessions obtained and rotations / B"], "outcome"
    )
    assert rotations["ok"] > 0
    reconnects = panels["Stream / Reconnects and watchdog triggers / A"]
    assert float(reconnects.series[0]["value"][1]) >= 1
    dead = _values(
        panels["Overview / Dead-lettered by origin and reason / A"], "reason"
    )
    assert dead["malformed_json"] > 0
    requests = _values(panels["Webhooks / Requests by outcome / A"], "outcome")
    assert requests["accepted"] > 0
    assert requests["duplicate"] > 0
    commands = _values(panels["Commands / Commands by outcome / A"], "outcome")
    assert commands["succeeded"] > 0
    assert commands["rejected"] > 0
    lag = _values(panels["Kafka / Commands consumer lag by partition / A"], "partition")
    assert lag
    role = panels["Hot standby / Role per replica and account / A"]
    assert _values(role, "account") == {"default": 2.0}
    buffered = panels["Hot standby / Standby buffer: records and bytes held / A"]
    assert float(buffered.series[0]["value"][1]) > 0
    errors = panels["Kafka / Send errors by error (each retried) / A"]
    if live.broker_paused:
        # The error class shows up. Its count may read 0: the labelled child is
        # created by the first error, and increase() cannot see a counter's
        # first value (bridge.metrics does not pre-create error children).
        assert _values(errors, "error")
