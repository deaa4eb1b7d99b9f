"""``make demo``: the whole flow on one machine, watched live.

One process runs a Tansu broker (or uses ``--bootstrap``), creates the four
topics, then runs the emulator, the bridge (``StreamApp``, exactly as
``stream`` builds it) and an independent consumer (`bridgelab.demo.watch`).
Once a second it shows what flows: a redrawn panel on a terminal, one line
per second otherwise. ``--faults`` injects a fault every few seconds so
reconnects and dead letters show up.

It ends after ``--duration`` or on SIGINT/SIGTERM: the fleet is paused, the
bridge drains, and the seqs the emulator wrote to the sockets are compared to
the ``attributes.seq`` values the consumer read, so the closing summary says
honestly whether every item was published exactly once. Exit code: 0, or 1
if items were lost or duplicated or the bridge failed, 2 on bad options or a
missing broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from bridge.app import StreamApp
from bridge.config import Settings
from bridge.core.records import Topics
from bridge.errors import ConfigError
from bridge.logs import configure_logging
from bridgelab.demo.view import (
    BridgeReading,
    Tracker,
    Verification,
    View,
    render_event,
    render_line,
    render_panel,
    render_summary,
    verify,
)
from bridgelab.demo.watch import Watcher
from bridgelab.demo.webhooks import WebhookLeg, start_webhooks, verify_webhooks
from bridgelab.emulator import Emulator, EmulatorConfig
from bridgelab.emulator.config import DEMO_APP_SECRET
from bridgelab.tansu import BrokerUnavailable, create_topics, start_tansu

LOG_FILE = "demo-bridge.log"
FAULTS = ("drop", "malformed", "unknown", "half-open")
DRAIN_SECONDS = 2.0
_RECENT_EVENTS = 8


class DemoFailed(Exception):
    """The demo cannot go on; the message is for the user."""


# -- command line -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The demo's flags."""
    p = argparse.ArgumentParser(
        prog="python -m bridgelab.demo",
        description="Run broker, emulator, bridge and a consumer; show what flows.",
    )
    p.add_argument(
        "--duration",
        type=_positive,
        help="run this many seconds, then drain, verify and exit (default: Ctrl-C)",
    )
    p.add_argument(
        "--session-ttl",
        type=_positive,
        default=30.0,
        help="emulated session lifetime in seconds; the bridge rotates just before",
    )
    p.add_argument("--devices", type=int, default=25, help="emulated devices")
    p.add_argument(
        "--rate", type=float, default=2.0, help="max frames per second (0: no limit)"
    )
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this Kafka instead of starting Tansu (topics get a run suffix)",
    )
    p.add_argument(
        "--ops-port",
        type=int,
        default=9095,
        help="bridge /metrics, /readyz port on 127.0.0.1 (0: any free port)",
    )
    p.add_argument(
        "--faults",
        action="store_true",
        help="inject a fault in turn: " + ", ".join(FAULTS),
    )
    p.add_argument(
        "--fault-every",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="seconds between faults (default: 10)",
    )
    p.add_argument(
        "--webhooks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the webhook receiver; the emulator posts one a second",
    )
    p.add_argument(
        "--quiet-logs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"bridge logs go to ./{LOG_FILE} (default) instead of stderr",
    )
    return p


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: list[str]) -> int:
    """Run the demo; returns the exit code."""
    opts = build_parser().parse_args(argv)
    try:
        with _bridge_logs(opts.quiet_logs) as logs_to:
            return asyncio.run(_demo(opts, logs_to))
    except (BrokerUnavailable, ConfigError, DemoFailed) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 130


@contextlib.contextmanager
def _bridge_logs(quiet: bool) -> Iterator[str]:
    """Route bridge and library logs away from the dashboard; yield where to."""
    redact = (DEMO_APP_SECRET,)
    if not quiet:
        configure_logging("info", "auto", sys.stderr, secrets=redact)
        yield "stderr"
        return
    with open(LOG_FILE, "wb") as out:
        configure_logging("info", "json", out, secrets=redact)
        try:
            yield LOG_FILE
        finally:
            # Nothing may log to the file once it is closed.
            configure_logging("error", "json", sys.stderr, secrets=redact)


# -- signals --------------------------------------------------------------------


@dataclass
class _Signals:
    """SIGINT/SIGTERM set ``stop``; a second one leaves at once."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    on_force: list[Callable[[], None]] = field(default_factory=list)

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._received)

    def _received(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            return
        for callback in self.on_force:
            callback()
        os._exit(130)


# -- the run ----------------------------------------------------------------------


@dataclass
class _Demo:
    """The running parts, for the watch loop and the drain."""

    emu: Emulator
    app: StreamApp
    task: asyncio.Task[int]
    watcher: Watcher
    topics: Mapping[str, str]
    header: str
    webhooks: WebhookLeg | None = None
    bootstrap: str = ""
    tracker: Tracker = field(default_factory=Tracker)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=_RECENT_EVENTS))


async def _demo(opts: argparse.Namespace, logs_to: str) -> int:
    signals = _Signals()
    signals.install()
    async with AsyncExitStack() as stack:
        demo = await _start(opts, stack, signals, logs_to)
        elapsed = await _watch(demo, opts, signals.stop)
        if demo.task.done():
            _say(f"\nthe bridge stopped unexpectedly: {_failure(demo.task)}")
            _say("\n".join(render_summary(_view(demo, elapsed), None)))
            return 1
        _say(f"\npausing the fleet and draining for {DRAIN_SECONDS:.0f} s ...")
        check = await _drain(demo)
        _say("\n".join(render_summary(_view(demo, elapsed), check)))
        hooks_ok = True
        if demo.webhooks is not None:
            verdict = await verify_webhooks(demo.webhooks, demo.emu, demo.bootstrap)
            hooks_ok = verdict.startswith("webhooks verified")
            _say(f"  {verdict}")
        _say("shutting down ...")
    _say("done: bridge, consumer, emulator and broker stopped")
    return 1 if _failed(check) or not hooks_ok else 0


async def _start(
    opts: argparse.Namespace,
    stack: AsyncExitStack,
    signals: _Signals,
    logs_to: str,
) -> _Demo:
    _check_port_free(opts.ops_port)
    bootstrap, broker_label = await _broker(opts.bootstrap, stack, signals)
    topics = _topic_names("" if opts.bootstrap is None else _run_suffix())
    existing = await create_topics(bootstrap, list(topics.values()))
    _say(f"topics: {', '.join(topics.values())} (3 partitions each)")
    if existing:
        _say(f"note: already existed, earlier records included: {existing}")
    emu = await stack.enter_async_context(Emulator(_emulator_config(opts)))
    _say(f"emulator: {emu.base_url} and {emu.ws_url}")
    watcher = Watcher(bootstrap, topics)
    await watcher.start()
    stack.push_async_callback(watcher.stop)
    app, task = await _start_bridge(emu, bootstrap, topics, opts, stack)
    ops = f"http://127.0.0.1:{app.ops.port}/metrics"
    _say(f"bridge: ops on {ops}, logs to {logs_to}")
    header = f"broker {broker_label} · {ops} · logs {logs_to}"
    hooks = None
    if opts.webhooks:
        suffix = "" if opts.bootstrap is None else _run_suffix()
        hooks = await start_webhooks(emu, bootstrap, suffix, stack)
        _say(f"webhooks: the emulator posts to {hooks.app.webhook_url} every second")
    return _Demo(emu, app, task, watcher, topics, header, hooks, bootstrap)


async def _broker(
    external: str | None, stack: AsyncExitStack, signals: _Signals
) -> tuple[str, str]:
    """The bootstrap address and how to describe it; starts Tansu if needed."""
    if external is not None:
        _say(f"broker: external Kafka at {external}")
        return external, external
    _say("broker: starting Tansu ...")
    broker = await asyncio.to_thread(start_tansu)
    signals.on_force.append(broker.process.kill)
    stack.push_async_callback(asyncio.to_thread, broker.stop)
    _say(f"broker: Tansu on {broker.bootstrap}")
    return broker.bootstrap, f"Tansu {broker.bootstrap}"


def _run_suffix() -> str:
    # An external Kafka keeps earlier runs' records; fresh topics keep the
    # exactly-once check about this run only.
    return f".demo-{secrets.token_hex(3)}"


def _topic_names(suffix: str) -> dict[str, str]:
    """Kind -> topic, in display order: the bridge's default names."""
    t = Topics()
    return {
        "positions": t.positions + suffix,
        "device-status": t.device_status + suffix,
        "events": t.events + suffix,
        "dead-letter": t.dead_letter + suffix,
    }


def _emulator_config(opts: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        session_ttl_seconds=opts.session_ttl,
        devices=opts.devices,
        max_frames_per_second=opts.rate,
    )


def bridge_env(
    emu: Emulator,
    bootstrap: str,
    topics: Mapping[str, str],
    *,
    ops_port: int,
    session_ttl: float,
    journal_dir: str,
) -> dict[str, str]:
    """Bridge settings for the demo: short timers so rotations and faults show."""
    # A third of the TTL: rotations come every ~2/3 TTL, so one watches them happen.
    margin = session_ttl / 3
    return {
        "BRIDGE_SENDSTACK_BASE_URL": emu.base_url,
        "BRIDGE_SENDSTACK_APP_ID": emu.config.app_id,
        "BRIDGE_SENDSTACK_APP_SECRET": emu.config.app_secret,
        "BRIDGE_STREAM_URL": emu.ws_url,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        # Tansu does not implement idempotent producers.
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "BRIDGE_KAFKA_TOPIC_POSITIONS": topics["positions"],
        "BRIDGE_KAFKA_TOPIC_DEVICE_STATUS": topics["device-status"],
        "BRIDGE_KAFKA_TOPIC_EVENTS": topics["events"],
        "BRIDGE_KAFKA_TOPIC_DEAD_LETTER": topics["dead-letter"],
        "BRIDGE_OPS_HOST": "127.0.0.1",
        "BRIDGE_OPS_PORT": str(ops_port),
        "BRIDGE_SESSION_REFRESH_BEFORE_SECONDS": f"{margin:g}",
        "BRIDGE_SESSION_REFRESH_JITTER_SECONDS": f"{margin / 4:g}",
        "BRIDGE_AUTH_BACKOFF_INITIAL_SECONDS": "0.2",
        "BRIDGE_AUTH_BACKOFF_MAX_SECONDS": "2",
        # Short keepalive, so a half-open socket is noticed within seconds.
        "BRIDGE_STREAM_PING_INTERVAL_SECONDS": "1",
        "BRIDGE_STREAM_PING_TIMEOUT_SECONDS": "1",
        "BRIDGE_STREAM_ROTATION_OVERLAP_MAX_SECONDS": "2",
        "BRIDGE_STREAM_RECONNECT_INITIAL_SECONDS": "0.2",
        "BRIDGE_STREAM_RECONNECT_MAX_SECONDS": "2",
        "BRIDGE_PUBLISH_RETRY_INITIAL_SECONDS": "0.1",
        "BRIDGE_PUBLISH_RETRY_MAX_SECONDS": "1",
        "BRIDGE_SHUTDOWN_GRACE_SECONDS": "10",
        # The demo's own journal, removed with it (the default is per user).
        "BRIDGE_JOURNAL_DIR": journal_dir,
    }


async def _start_bridge(
    emu: Emulator,
    bootstrap: str,
    topics: Mapping[str, str],
    opts: argparse.Namespace,
    stack: AsyncExitStack,
) -> tuple[StreamApp, asyncio.Task[int]]:
    journal = stack.enter_context(tempfile.TemporaryDirectory(prefix="demo-journal-"))
    env = bridge_env(
        emu,
        bootstrap,
        topics,
        ops_port=opts.ops_port,
        session_ttl=opts.session_ttl,
        journal_dir=journal,
    )
    app = StreamApp(Settings.from_env(env))
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop), name="bridge")
    stack.push_async_callback(_stop_bridge, stop, task)
    while not app.ops.sockets_names:  # listening means run() got going
        if task.done():
            raise DemoFailed(f"the bridge did not start: {_failure(task)}")
        await asyncio.sleep(0.05)
    return app, task


def _check_port_free(port: int) -> None:
    """Fail with a hint now rather than with a half-started bridge."""
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise DemoFailed(
                f"ops port {port} is in use: pass --ops-port 0 for a free one"
            ) from None


async def _stop_bridge(stop: asyncio.Event, task: asyncio.Task[int]) -> None:
    stop.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await asyncio.gather(task, return_exceptions=True)


def _failure(task: asyncio.Task[int]) -> str:
    exc = task.exception() if not task.cancelled() else None
    if exc is None:
        return "it returned early"
    hint = " (is --ops-port in use? 0 picks a free port)" if _is_os(exc) else ""
    return f"{type(exc).__name__}: {exc}{hint}"


def _is_os(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_os(inner) for inner in exc.exceptions)
    return isinstance(exc, OSError)


# -- watching -----------------------------------------------------------------------


async def _watch(demo: _Demo, opts: argparse.Namespace, stop: asyncio.Event) -> float:
    """Refresh once a second until stopped; returns the seconds watched."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tty = sys.stdout.isatty() and opts.quiet_logs
    faults = itertools.cycle(FAULTS)
    next_fault = opts.fault_every if opts.faults else float("inf")
    tick = 0
    while True:
        tick += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(started + tick):
                await stop.wait()
        elapsed = loop.time() - started
        events = []
        if elapsed >= next_fault:
            events.append(await _inject(demo.emu, next(faults)))
            next_fault += opts.fault_every
        _show(demo, elapsed, events, tty=tty)
        ended = opts.duration is not None and elapsed >= opts.duration
        if stop.is_set() or ended or demo.task.done():
            return elapsed


async def _inject(emu: Emulator, fault: str) -> str:
    """Inject one fault; returns what was done and what the viewer should see."""
    if fault == "drop":
        n = await emu.drop()
        return f"fault: dropped {n} socket(s) without a close (expect a reconnect)"
    if fault == "malformed":
        n = emu.send_malformed()
        return (
            f"fault: a frame that is not JSON to {n} socket(s) (expect a dead letter)"
        )
    if fault == "unknown":
        n = emu.send_unknown()
        return (
            f"fault: an unknown frame and an unknown event type to {n} socket(s) "
            "(expect 2 dead letters)"
        )
    n = await emu.half_open(hold_seconds=10.0)
    return f"fault: half-opened {n} socket(s) (expect a reconnect within ~3 s)"


def _show(demo: _Demo, elapsed: float, events: list[str], *, tty: bool) -> None:
    w = demo.watcher
    bridge = _read_bridge(demo.app)
    events = events + demo.tracker.changes(bridge, w.dead_letters, w.last_reason)
    stamped = [render_event(elapsed, event) for event in events]
    demo.recent.extend(stamped)
    view = _view(demo, elapsed, bridge, rates=demo.tracker.rates(elapsed, w.totals))
    if tty:
        width = shutil.get_terminal_size().columns
        print(render_panel(view, width=width), flush=True)
        if demo.webhooks is not None:
            print(demo.webhooks.line()[:width], flush=True)
        return
    for line in stamped:
        _say(line)
    _say(render_line(view))
    if demo.webhooks is not None:
        _say(demo.webhooks.line())


def _view(
    demo: _Demo,
    elapsed: float,
    bridge: BridgeReading | None = None,
    *,
    rates: Mapping[str, float] | None = None,
) -> View:
    w = demo.watcher
    return View(
        elapsed=elapsed,
        topics=demo.topics,
        totals=dict(w.totals),
        rates=rates or {},
        latest=dict(w.latest),
        bridge=bridge or _read_bridge(demo.app),
        last_gap=demo.tracker.last_gap,
        dead_letters=w.dead_letters,
        last_reason=w.last_reason,
        events=list(demo.recent),
        header=demo.header,
    )


def _read_bridge(app: StreamApp) -> BridgeReading:
    pump = app.pump.statistics()
    sample = app.registry.get_sample_value
    return BridgeReading(
        expires_in=app.keeper.expires_in(),
        state=pump.state,
        open_connections=pump.open_connections,
        reconnects=pump.reconnects,
        rotations=pump.rotations,
        gap_sum=sample("bridge_session_rotation_gap_seconds_sum") or 0.0,
        gap_count=int(sample("bridge_session_rotation_gap_seconds_count") or 0),
        buffer_records=app.sink.statistics().in_flight_records,
    )


# -- draining and verifying -----------------------------------------------------------


async def _drain(demo: _Demo) -> Verification:
    """Pause the fleet, let everything reach Kafka and the consumer, compare."""
    demo.emu.pause()
    await asyncio.sleep(DRAIN_SECONDS)  # frames on the wire reach the bridge
    await _until(lambda: demo.app.sink.statistics().in_flight_records == 0, 10.0)
    if not await demo.watcher.caught_up(within=10.0):
        _say("warning: the consumer did not catch up within 10 s")
    # A rotation during the drain updates the last gap shown in the summary.
    w = demo.watcher
    demo.tracker.changes(_read_bridge(demo.app), w.dead_letters, w.last_reason)
    return verify(demo.emu.written_seqs(), demo.watcher.seqs)


async def _until(predicate: Callable[[], bool], within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _failed(check: Verification) -> bool:
    return bool(check.lost or check.duplicates or check.unexpected)


def _say(text: str) -> None:
    print(text, flush=True)
