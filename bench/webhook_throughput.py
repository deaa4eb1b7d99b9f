"""Webhook benchmark: accepted webhooks/s and p99 latency, beside a bare handler.

``.venv/bin/python -m bench.webhook_throughput [flags]``

One run, two contenders, the same load generator and the same HTTP server
code (``bridge.adapters.http_server``):

1. **bare**: a process serving the webhook path with a handler that does no
   work (200 and a short JSON body, the request is read and dropped). This is
   the ceiling of our HTTP stack on this machine.
2. **webhooks**: ``python -m bridge webhooks`` (the real subcommand, production
   defaults except the topic names, idempotence, which Tansu lacks, and
   ``BRIDGE_KAFKA_LINGER_MS``: 0 by default, as ``docs/webhooks.md``
   recommends for this subcommand; ``--linger-ms 5`` measures the shared
   default), against a fresh Tansu broker. Each request is a distinct webhook (its own
   ``webhookId``, signed with the current scheme), and is answered 200 only
   once Kafka acknowledged its record: the latency includes the producer's
   linger and the broker's acks=all round trip.

The load generator is closed-loop: ``--connections`` keep-alive connections,
each sending its next request as soon as the previous answer is in (raw
asyncio streams, requests pre-formatted; the per-request work is an HMAC and
a bytes join). After ``--warmup`` seconds, answers and their latencies are
counted for ``--duration`` seconds. The server runs alone on one CPU, the
broker and the load generator on the other, when there are two
(``os.sched_setaffinity``).

Exactly-once check: after the webhooks phase the topics' end offsets are
summed and compared with the 2xx answers the generator got over the whole
phase (warm-up included): every accepted webhook is in Kafka once.

Prints a table and writes ``bench/results/webhooks-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench import _profile
from bench._procs import (
    MB,
    OffsetProbe,
    Pinning,
    Sampler,
    Watched,
    create_topics,
    free_port,
    pin_self,
    spawn,
    start_tansu,
    stop_process,
    tail,
)
from bridgelab.emulator.config import DEMO_APP_SECRET
from bridgelab.emulator.webhooks import (
    WEBHOOK_KINDS,
    PayloadFactory,
    load_webhook_kinds,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PY = sys.executable
PATH = "/webhooks/sendstack"
_ID_MARK = "WEBHOOKIDWEBHOOKIDWEBHOOK"  # 25 chars, replaced by a 24-hex id + pad


def log(msg: str) -> None:
    """Progress to stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    connections: tuple[int, ...]
    linger_ms: int
    partitions: int
    pin: bool
    keep_logs: bool
    profile: bool


def parse_args(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m bench.webhook_throughput",
        description="Webhooks accepted per second and p99, vs a bare HTTP handler.",
    )
    p.add_argument("--duration", type=float, default=10.0, help="window, s")
    p.add_argument("--warmup", type=float, default=3.0, help="discarded, s")
    p.add_argument(
        "--connections",
        default="16,128",
        help="concurrent clients, comma-separated: one measurement per level "
        "(default 16,128: moderate load, then saturation)",
    )
    p.add_argument(
        "--linger-ms",
        type=int,
        default=0,
        help="BRIDGE_KAFKA_LINGER_MS of the receiver (default 0, the setting "
        "docs/webhooks.md recommends for it; the shared default is 5)",
    )
    p.add_argument("--partitions", type=int, default=3, help="per topic")
    p.add_argument("--no-pin", action="store_true", help="no CPU affinity")
    p.add_argument("--keep-logs", action="store_true", help="keep process logs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the receiver during its last window and print hot spots "
        "(perturbs that window's figures)",
    )
    p.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        levels = tuple(int(part) for part in a.connections.split(","))
    except ValueError:
        p.error("--connections: comma-separated integers")
    if a.duration <= 0 or a.warmup < 0 or min(levels) < 1:
        p.error("need --duration > 0, --warmup >= 0, --connections >= 1")
    opts = Options(
        duration=a.duration,
        warmup=a.warmup,
        connections=levels,
        linger_ms=a.linger_ms,
        partitions=a.partitions,
        pin=not a.no_pin,
        keep_logs=a.keep_logs,
        profile=a.profile,
    )
    return opts, a


# -- the bare contender (a child process) -----------------------------------------


async def serve_bare(port: int) -> None:
    """Our HTTP server with a handler that does nothing, until SIGTERM."""
    from bridge.adapters.http_server import HttpRequest, HttpResponse, HttpServer

    answer = HttpResponse.json(200, {"ok": True, "outcome": "accepted"})

    async def handle(request: HttpRequest) -> HttpResponse:
        return answer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with HttpServer(handle, "127.0.0.1", port, max_body_bytes=1_048_576):
        await stop.wait()


# -- the load generator ---------------------------------------------------------------


class Requests:
    """Signed webhook requests, one fresh ``webhookId`` each, kinds in turn."""

    def __init__(self, secret: str, host: str) -> None:
        self._key = secret.encode()
        factory = PayloadFactory(load_webhook_kinds(), seed=5)
        self._templates: list[tuple[bytes, bytes]] = []
        for kind in WEBHOOK_KINDS:
            payload = factory.build(kind)
            payload["webhookId"] = _ID_MARK
            body = json.dumps(payload, separators=(",", ":")).encode()
            before, after = body.split(_ID_MARK.encode())
            self._templates.append((before, after))
        self._host = host.encode()
        self._prefix = uuid.uuid4().hex[:8]
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        webhook_id = f"{self._prefix}{self._n:016x}".encode()  # 24 hex
        before, after = self._templates[self._n % len(self._templates)]
        body = before + webhook_id + after
        signature = hmac.new(
            self._key, b'"' + webhook_id + b'"', hashlib.sha256
        ).hexdigest()
        return b"".join(
            (
                b"POST " + PATH.encode() + b" HTTP/1.1\r\nhost: " + self._host,
                b"\r\ncontent-type: application/json\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\nx-sendstack-signature: ",
                signature.encode(),
                b"\r\n\r\n",
                body,
            )
        )


@dataclass
class Load:
    """What the generator saw: answers by status, latencies in the window."""

    statuses: dict[int, int] = field(default_factory=dict)
    window_ok: int = 0
    window_other: int = 0
    latencies: list[float] = field(default_factory=list)
    window_s: float = 0.0
    errors: int = 0


async def generate(
    port: int, requests: Requests, connections: int, warmup: float, duration: float
) -> Load:
    """Closed-loop load on ``connections`` keep-alive connections."""
    load = Load()
    loop = asyncio.get_running_loop()
    start = loop.time()
    window_start = start + warmup
    window_end = window_start + duration

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := loop.time()) < window_end:
                writer.write(requests.next())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                done = loop.time()
                load.statuses[status] = load.statuses.get(status, 0) + 1
                if window_start <= now and done <= window_end:
                    if 200 <= status < 300:
                        load.window_ok += 1
                        load.latencies.append(done - now)
                    else:
                        load.window_other += 1
                if b"connection: close" in head.lower():
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            load.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    load.window_s = duration
    return load


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Phase:
    name: str
    connections: int
    accepted_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    window_ok: int
    window_other: int
    statuses: dict[int, int]
    connection_errors: int
    server_cpu_util: float
    server_cpu_us_per_accepted: float
    harness_cpu_util: float
    broker_cpu_util: float | None
    server_peak_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def capacity_per_s(self) -> float:
        """Accepted/s the server could reach at one full core (CPU-bound)."""
        per = self.server_cpu_us_per_accepted
        return 1e6 / per if per else math.nan


def phase_of(
    name: str,
    connections: int,
    load: Load,
    cpu: dict[str, float],
    peak_rss: int,
) -> Phase:
    lat = sorted(load.latencies)
    window = load.window_s
    return Phase(
        name=name,
        connections=connections,
        accepted_per_s=load.window_ok / load.window_s,
        p50_ms=percentile(lat, 0.50) * 1000,
        p99_ms=percentile(lat, 0.99) * 1000,
        p999_ms=percentile(lat, 0.999) * 1000,
        max_ms=(lat[-1] if lat else math.nan) * 1000,
        window_ok=load.window_ok,
        window_other=load.window_other,
        statuses=dict(sorted(load.statuses.items())),
        connection_errors=load.errors,
        server_cpu_util=cpu["server"] / window,
        server_cpu_us_per_accepted=(
            cpu["server"] / load.window_ok * 1e6 if load.window_ok else math.nan
        ),
        harness_cpu_util=cpu["harness"] / window,
        broker_cpu_util=cpu["broker"] / window if "broker" in cpu else None,
        server_peak_rss_mb=peak_rss / MB,
    )


async def measure(
    name: str,
    server: Watched,
    port: int,
    requests: Requests,
    opts: Options,
    connections: int,
    broker: Watched | None = None,
    profile_to: Path | None = None,
) -> Phase:
    """Run the load against ``server``; CPU of every process over the window."""
    me = psutil.Process()

    def cpu_now() -> dict[str, float]:
        times = me.cpu_times()
        now = {"server": server.cpu_seconds(), "harness": times.user + times.system}
        if broker is not None:
            now["broker"] = broker.cpu_seconds()
        return now

    cpu_at: dict[str, dict[str, float]] = {}

    async def sample_cpu() -> None:
        await asyncio.sleep(opts.warmup)
        cpu_at["start"] = cpu_now()
        spy = None
        if profile_to is not None:
            spy = _profile.start(server.pid, opts.duration, profile_to, frozenset())
        await asyncio.sleep(opts.duration)
        cpu_at["end"] = cpu_now()
        if spy is not None and profile_to is not None:
            hotspots = await asyncio.to_thread(_profile.finish, spy, profile_to)
            if hotspots is not None:
                print(hotspots.render(), flush=True)

    log(
        f"{name}: {connections} connections, {opts.warmup:g} s warm-up, "
        f"{opts.duration:g} s window"
    )
    load, _ = await asyncio.gather(
        generate(port, requests, connections, opts.warmup, opts.duration),
        sample_cpu(),
    )
    cpu = {k: cpu_at["end"][k] - cpu_at["start"][k] for k in cpu_at["start"]}
    return phase_of(name, connections, load, cpu, server.peak_rss)


async def wait_ready(url: str, process: Watched, within: float) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(
                    f"{process.name} exited ({process.popen.returncode})"
                )
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.name} not ready within {within}s")


async def scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    return {
        f"{s.name}{dict(sorted(s.labels.items()))}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("bridge_webhook_", "bridge_kafka_send_seconds_count"))
    }


async def run(opts: Options) -> int:
    pinning = Pinning.plan(opts.pin)
    pin_self(pinning.harness)
    logdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    sampler = Sampler()
    sampler.start()
    started_at = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()
    broker = None
    phases: list[Phase] = []
    exactly_once: dict[str, Any] = {}
    try:
        # -- bare ----------------------------------------------------------------
        port = free_port()
        bare = sampler.watch(
            spawn(
                "bare",
                [PY, "-m", "bench.webhook_throughput", "--serve-bare", str(port)],
                env=None,
                logdir=logdir,
                cpus=pinning.measured,
            )
        )
        try:
            await wait_ready(f"http://127.0.0.1:{port}/", bare, 20)
            requests = Requests("x", "b")
            phases += [
                await measure("bare HTTP handler", bare, port, requests, opts, level)
                for level in opts.connections
            ]
        finally:
            stop_process(bare)

        # -- webhooks ------------------------------------------------------------
        broker = start_tansu(logdir, pinning.harness, "webhooks")
        suffix = uuid.uuid4().hex[:8]
        topics = [
            f"bench.webhooks.{suffix}.{t}" for t in ("deliveries", "tracking", "dlq")
        ]
        await create_topics(broker.bootstrap, topics, opts.partitions)
        port, ops_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            {
                "BRIDGE_SENDSTACK_BASE_URL": "http://127.0.0.1:9/api/v1",
                "BRIDGE_SENDSTACK_APP_ID": "bench",
                "BRIDGE_SENDSTACK_APP_SECRET": DEMO_APP_SECRET,
                "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
                "BRIDGE_KAFKA_LINGER_MS": str(opts.linger_ms),
                "BRIDGE_WEBHOOK_HOST": "127.0.0.1",
                "BRIDGE_WEBHOOK_PORT": str(port),
                "BRIDGE_WEBHOOK_TOPIC_DELIVERIES": topics[0],
                "BRIDGE_WEBHOOK_TOPIC_TRACKING": topics[1],
                "BRIDGE_WEBHOOK_TOPIC_DEAD_LETTER": topics[2],
                "BRIDGE_OPS_HOST": "127.0.0.1",
                "BRIDGE_OPS_PORT": str(ops_port),
                "BRIDGE_LOG_LEVEL": "warning",
                "BRIDGE_LOG_FORMAT": "json",
            }
        )
        receiver = sampler.watch(
            spawn(
                "webhooks",
                [PY, "-m", "bridge", "webhooks"],
                env=env,
                logdir=logdir,
                cpus=pinning.measured,
            )
        )
        try:
            await wait_ready(f"http://127.0.0.1:{ops_port}/readyz", receiver, 60)
            requests = Requests(DEMO_APP_SECRET, "w")
            hook_phases = [
                await measure(
                    "webhooks -> Kafka",
                    receiver,
                    port,
                    requests,
                    opts,
                    level,
                    broker.watched,
                    logdir / "receiver.pyspy.txt"
                    if opts.profile and level == opts.connections[-1]
                    else None,
                )
                for level in opts.connections
            ]
            hook_phases[-1].extra["metrics"] = await scrape(
                f"http://127.0.0.1:{ops_port}/metrics"
            )
            phases.extend(hook_phases)
        finally:
            code = stop_process(receiver)
        probe = OffsetProbe(broker.bootstrap, topics)
        await probe.start()
        try:
            offsets = await probe.exact_per_partition()
        finally:
            await probe.stop()
        in_kafka = sum(offsets.values())
        answered_2xx = sum(
            n for p in hook_phases for s, n in p.statuses.items() if 200 <= s < 300
        )
        exactly_once = {
            "answered_2xx": answered_2xx,
            "records_in_kafka": in_kafka,
            "equal": in_kafka == answered_2xx,
            "receiver_exit_code": code,
        }
    except Exception:
        for name in ("bare", "webhooks"):
            text = tail(logdir / f"{name}.stderr.log")
            if text:
                log(f"{name} stderr:\n{text}")
        raise
    finally:
        await sampler.stop()
        if broker is not None and broker.watched is not None:
            stop_process(broker.watched)
        if not opts.keep_logs:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            log(f"logs kept in {logdir}")

    loadavg = {"start": load_start, "end": os.getloadavg()}
    report(phases, exactly_once, pinning, opts)
    print(
        f"load average (1 min) at start {load_start[0]:.2f}, at end "
        f"{loadavg['end'][0]:.2f}: other work on the machine skews the figures"
    )
    save(phases, exactly_once, pinning, opts, started_at, broker, loadavg)
    return 0


def report(
    phases: list[Phase], exactly_once: dict[str, Any], pinning: Pinning, opts: Options
) -> None:
    head = ("", "conns", "accepted/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms")
    tail = ("non-2xx", "server CPU", "µs CPU/req", "1-core cap/s", "harness CPU")
    rows = [(*head, *tail)]
    rows.extend(
        (
            p.name,
            str(p.connections),
            f"{p.accepted_per_s:,.0f}",
            f"{p.p50_ms:.2f}",
            f"{p.p99_ms:.2f}",
            f"{p.p999_ms:.2f}",
            f"{p.max_ms:.2f}",
            str(p.window_other),
            f"{p.server_cpu_util:.0%}",
            f"{p.server_cpu_us_per_accepted:.0f}",
            f"{p.capacity_per_s:,.0f}",
            f"{p.harness_cpu_util + (p.broker_cpu_util or 0.0):.0%}",
        )
        for p in sorted(phases, key=lambda p: (p.connections, p.name))
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells))
    print()
    bare = {p.connections: p for p in phases if p.name.startswith("bare")}
    for p in phases:
        base = bare.get(p.connections)
        if p.name.startswith("bare") or base is None or not base.accepted_per_s:
            continue
        share = p.accepted_per_s / base.accepted_per_s
        print(
            f"{p.connections} connections: webhooks reach {share:.0%} of the bare "
            f"handler's rate; p99 {p.p99_ms - base.p99_ms:+.2f} ms"
        )
    print(
        f"exactly once: {exactly_once.get('answered_2xx')} answered 2xx, "
        f"{exactly_once.get('records_in_kafka')} records in Kafka "
        f"({'equal' if exactly_once.get('equal') else 'NOT EQUAL'})"
    )
    print(
        "µs CPU/req: server CPU time per accepted request; 1-core cap/s: the "
        "rate that would fill one core (1e6 / µs CPU/req); harness CPU: load "
        "generator + broker"
    )
    print(f"closed loop, one request per connection at a time; {pinning.note}")


def save(
    phases: list[Phase],
    exactly_once: dict[str, Any],
    pinning: Pinning,
    opts: Options,
    started_at: dt.datetime,
    broker: Any,
    loadavg: dict[str, tuple[float, float, float]],
) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"webhooks-{stamp}.json"
    data = {
        "benchmark": "webhook_throughput",
        "started_at": started_at.isoformat(),
        "options": asdict(opts),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": psutil.cpu_count(),
            "broker": getattr(broker, "version", None),
            "pinning": pinning.note,
            "loadavg": loadavg,
        },
        "phases": [{**asdict(p), "capacity_per_s": p.capacity_per_s} for p in phases],
        "exactly_once": exactly_once,
    }
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    log(f"wrote {out.relative_to(RESULTS_DIR.parent.parent)}")


def main(argv: Sequence[str] | None = None) -> int:
    opts, args = parse_args(argv)
    if args.serve_bare is not None:
        asyncio.run(serve_bare(args.serve_bare))
        return 0
    try:
        return asyncio.run(run(opts))
    except (RuntimeError, OSError) as exc:
        log(f"benchmark failed: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
