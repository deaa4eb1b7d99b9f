"""Commands benchmark: the command worker vs a plain httpx loop, one run.

``.venv/bin/python -m bench.commands_throughput [flags]``

For each emulator latency (``--latencies``, default 0 and 50 ms; set on the
emulator's admin API), two contenders send the same kind of REST requests to
the same emulator (``sendstack-emulator``, its own process), with the
same concurrency (``--concurrency``, default 16). The httpx loop runs before
and after the worker and counts as the mean of the two (the machine's load
drifts):

1. **httpx**: a separate process (``bench._httpx_loop``) with one
   ``httpx.AsyncClient`` and ``concurrency`` tasks pulling requests from a
   queue. The requests come from the command messages through
   ``bridge.core.commands.parse_command`` and ``to_request``, with
   ``SendstackRest``'s headers: the worker's calls, minus Kafka, validation,
   the limiter, the breaker, retries and the exactly-once bookkeeping.
2. **worker**: ``python -m bridge commands`` (the real subcommand) against a
   Tansu broker started for the run (``bridgelab.tansu``), fresh topics created
   explicitly per point. The command messages are pre-loaded into the command
   topic, then the worker starts. Settings: those of the e2e tests
   (``commands_env``) with the rate limiter out of the way (100,000/s, burst
   10,000), ``BRIDGE_COMMANDS_CONCURRENCY`` = ``--concurrency``, idempotence
   off (Tansu has none), linger ``--linger-ms`` (0: each command awaits two
   acks, its ``started`` marker and its result, so batching only delays it),
   production logging (info, JSON, one line per command). Every command
   costs the worker one REST call and two acked Kafka writes.

**Commands**: 90 % ``book_delivery`` (``--book-share``), each with its own
``externalOrderId`` and so its own ordering key (no command waits for
another), the rest ``wallet_balance`` (a read; its key is its command id).
The emulator's wallet is set huge so no booking is refused. Both contenders
get messages built the same way (with their own ids).

**Rate**: completions from the first to the last, ``(M - 1) / (t_last -
t_first)``: for the worker the Kafka timestamps (the worker's clock at send)
of its result records, which this process reads as they come (the run
checks one result per command, all ``succeeded``, one REST call each); for
the loop the instants its responses arrived. Start-up (imports, the
worker's group join) is therefore not counted. **CPU**: user + system
seconds of the contender's process over the same interval (psutil, sampled
every 50 ms and interpolated), per 1,000 commands; the emulator's and the
broker's CPU over that interval are shown, to tell who limited the rate,
and so is the *CPU ratio* (httpx CPU per command / the worker's): the rate
ratio both would reach if each had a whole core, steadier than the rate
ratio on a shared machine.

The contender runs alone on one CPU, the emulator, the broker and this
process on the other, when there are two (``os.sched_setaffinity``). Note
that the broker then shares the emulator's CPU during the worker's phase.

``--profile`` samples the worker with py-spy (blocking mode: whole stacks,
~15 % slower) during its phases and prints the hot spots, and what the event
loop spent its samples on; the figures of a profiled run are not the
benchmark's.

Prints a table and writes ``bench/results/commands-<timestamp>.json``. Exits
0 when the run completed (whatever PASS/FAIL says), 2 when the harness failed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import copy
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench import _profile
from bench._procs import (
    MB,
    Pinning,
    Sampler,
    Watched,
    cpu_busy,
    free_port,
    pin_process,
    pin_self,
    spawn,
    stop_process,
    tail,
)
from bridge.core.commands import EXAMPLES
from bridgelab.emulator.config import DEMO_APP_ID, DEMO_APP_SECRET
from bridgelab.tansu import TansuBroker, create_topics, start_tansu

TARGET_RATIO = 0.8
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PY = sys.executable
SECONDS_PER_POINT = 6.0  # auto --commands at L ms: ideal duration of one contender
WALLET = 1e15  # NGN: no booking is refused for want of funds
CPU_SAMPLE_S = 0.05


def log(msg: str) -> None:
    """Progress goes to stderr; the result table to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    latencies_ms: tuple[float, ...]
    commands: tuple[int, ...]  # one per latency
    concurrency: int
    book_share: float
    partitions: int
    linger_ms: int
    log_level: str
    pin: bool
    keep_logs: bool
    profile: bool


def auto_commands(latency_ms: float, concurrency: int, ceiling: int) -> int:
    """At most ``ceiling``; fewer when the latency makes each call slow."""
    if latency_ms <= 0:
        return ceiling
    ideal = concurrency * SECONDS_PER_POINT / (latency_ms / 1000)
    return max(100, min(ceiling, int(ideal)))


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.commands_throughput",
        description="Commands/s through the worker vs a plain httpx loop.",
    )
    p.add_argument(
        "--latencies",
        default="0,50",
        help="emulator latency per delivery call, ms, comma-separated",
    )
    p.add_argument(
        "--commands",
        default=None,
        help="commands per contender: one number (used at 0 ms; at L ms at "
        f"most concurrency x {SECONDS_PER_POINT:g} s / L) or one per latency "
        "(default 3000)",
    )
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    p.add_argument(
        "--book-share",
        type=float,
        default=0.9,
        help="share of book_delivery; the rest wallet_balance",
    )
    p.add_argument("--partitions", type=int, default=3, help="per topic")
    p.add_argument("--linger-ms", type=int, default=0, help="BRIDGE_KAFKA_LINGER_MS")
    p.add_argument("--log-level", default="info", help="worker's BRIDGE_LOG_LEVEL")
    p.add_argument("--no-pin", action="store_true", help="no CPU affinity")
    p.add_argument("--keep-logs", action="store_true", help="keep process logs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the worker with py-spy and report hot spots (perturbs it)",
    )
    a = p.parse_args(argv)
    try:
        latencies = tuple(float(x) for x in a.latencies.split(","))
    except ValueError:
        p.error("--latencies: comma-separated numbers")
    if not latencies or min(latencies) < 0:
        p.error("--latencies: numbers >= 0")
    if a.concurrency < 1 or not 0 <= a.book_share <= 1 or a.partitions < 1:
        p.error("need --concurrency >= 1, 0 <= --book-share <= 1, --partitions >= 1")
    try:
        given = [int(x) for x in a.commands.split(",")] if a.commands else [3000]
    except ValueError:
        p.error("--commands: an integer or comma-separated integers")
    if min(given) < 2:
        p.error("--commands: at least 2")
    if len(given) == 1:
        counts = tuple(auto_commands(lat, a.concurrency, given[0]) for lat in latencies)
    elif len(given) == len(latencies):
        counts = tuple(given)
    else:
        p.error("--commands: one number, or one per latency")
    return Options(
        latencies_ms=latencies,
        commands=counts,
        concurrency=a.concurrency,
        book_share=a.book_share,
        partitions=a.partitions,
        linger_ms=a.linger_ms,
        log_level=a.log_level,
        pin=not a.no_pin,
        keep_logs=a.keep_logs,
        profile=a.profile,
    )


# -- the commands ----------------------------------------------------------------------


def make_commands(n: int, tag: str, book_share: float) -> list[dict[str, Any]]:
    """``n`` command messages: bookings with distinct order ids, some reads."""
    out: list[dict[str, Any]] = []
    read_share = 1.0 - book_share
    for i in range(n):
        command_id = f"bench-{tag}-{i:06d}"
        # Spread the reads evenly: one whenever the running share ticks over.
        if math.floor((i + 1) * read_share) > math.floor(i * read_share):
            out.append({"commandId": command_id, "type": "wallet_balance"})
            continue
        payload = copy.deepcopy(dict(EXAMPLES["book_delivery"]))
        payload["externalOrderId"] = f"ORD-{tag}-{i:06d}"
        out.append(
            {"commandId": command_id, "type": "book_delivery", "payload": payload}
        )
    return out


def mix_of(messages: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(m["type"] for m in messages))


# -- CPU sampling ----------------------------------------------------------------------


class CpuTrace:
    """``(time.time(), cpu seconds)`` of some processes, every 50 ms."""

    def __init__(self) -> None:
        self.watched: dict[str, Watched] = {}
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.percpu: list[tuple[float, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, w: Watched) -> None:
        self.watched[w.name] = w
        self.samples[w.name] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cpu-trace")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def sample(self) -> None:
        self.percpu.append((time.time(), psutil.cpu_times(percpu=True)))
        for name, w in self.watched.items():
            if w.popen.poll() is None:
                cpu = w.cpu_seconds()
                if not math.isnan(cpu):
                    self.samples[name].append((time.time(), cpu))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(CPU_SAMPLE_S)

    def at(self, name: str, t: float) -> float:
        """CPU seconds of ``name`` at instant ``t`` (linear between samples)."""
        s = self.samples.get(name) or []
        if not s:
            return math.nan
        times = [x for x, _ in s]
        i = bisect.bisect_left(times, t)
        if i == 0:
            return s[0][1]
        if i >= len(s):
            return s[-1][1]
        (t0, c0), (t1, c1) = s[i - 1], s[i]
        return c0 if t1 <= t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)

    def between(self, name: str, t0: float, t1: float) -> float:
        return self.at(name, t1) - self.at(name, t0)

    def busy(self, t0: float, t1: float) -> list[float]:
        """Busy fraction of each CPU (any process) from ~``t0`` to ~``t1``."""
        times = [t for t, _ in self.percpu]
        i = max(0, bisect.bisect_left(times, t0) - 1)
        j = min(len(times) - 1, bisect.bisect_left(times, t1))
        if j <= i:
            return []
        return cpu_busy(self.percpu[i][1], self.percpu[j][1])


# -- results ---------------------------------------------------------------------------


@dataclass
class Phase:
    """One contender at one latency."""

    contender: str  # "worker" | "httpx"
    latency_ms: float
    commands: int
    completed: int
    window_s: float
    per_s: float
    cpu_s: float
    cpu_s_per_1k: float
    emulator_cpu_util: float
    broker_cpu_s_per_1k: float | None
    cpu_busy: list[float]  # every CPU's busy fraction (all processes)
    outcomes: dict[str, int]
    peak_rss_mb: float
    valid: bool
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def phase_of(
    contender: str,
    latency_ms: float,
    commands: int,
    completed: int,
    first: float | None,
    last: float | None,
    trace: CpuTrace,
    measured: Watched,
    outcomes: dict[str, int],
    problems: list[str],
) -> Phase:
    if first is None or last is None or last <= first or completed < 2:
        window = math.nan
        rate = cpu = per_1k = emu = math.nan
        broker: float | None = None
        busy: list[float] = []
        problems = [*problems, "no measurable window"]
    else:
        window = last - first
        intervals = completed - 1
        rate = intervals / window
        cpu = trace.between(measured.name, first, last)
        per_1k = cpu / intervals * 1000
        emu = trace.between("emulator", first, last) / window
        broker = (
            trace.between("tansu", first, last) / intervals * 1000
            if contender == "worker"
            else None
        )
        busy = trace.busy(first, last)
    return Phase(
        contender=contender,
        latency_ms=latency_ms,
        commands=commands,
        completed=completed,
        window_s=window,
        per_s=rate,
        cpu_s=cpu,
        cpu_s_per_1k=per_1k,
        emulator_cpu_util=emu,
        broker_cpu_s_per_1k=broker,
        cpu_busy=busy,
        outcomes=outcomes,
        peak_rss_mb=measured.peak_rss / MB,
        valid=not problems,
        problems=problems,
    )


# -- the emulator ----------------------------------------------------------------------


async def read_json_line(w: Watched, wait_s: float) -> dict[str, Any]:
    """The next JSON line a child prints on its stdout pipe."""
    assert w.popen.stdout is not None
    try:
        line = await asyncio.wait_for(
            asyncio.to_thread(w.popen.stdout.readline), wait_s
        )
    except TimeoutError:
        raise RuntimeError(f"{w.name}: no answer within {wait_s}s") from None
    if not line:
        raise RuntimeError(f"{w.name} exited (code {w.popen.poll()})")
    data: dict[str, Any] = orjson.loads(line)
    return data


async def admin(url: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(url, json=body)
        response.raise_for_status()


# -- the httpx contender ---------------------------------------------------------------


async def httpx_phase(
    latency_ms: float,
    messages: list[dict[str, Any]],
    emu: dict[str, Any],
    opts: Options,
    pinning: Pinning,
    logdir: Path,
    trace: CpuTrace,
    sampler: Sampler,
    run: str,
) -> Phase:
    tag = f"httpx-{latency_ms:g}ms-{run}"
    commands_path = logdir / f"{tag}.jsonl"
    commands_path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    spec_path = logdir / f"{tag}.spec.json"
    spec_path.write_bytes(
        orjson.dumps(
            {
                "base_url": emu["base_url"],
                "app_id": DEMO_APP_ID,
                "app_secret": DEMO_APP_SECRET,
                "concurrency": opts.concurrency,
                "timeout": 15.0,  # BRIDGE_COMMANDS_REQUEST_TIMEOUT_SECONDS default
                "commands_path": str(commands_path),
            }
        )
    )
    log(f"{latency_ms:g} ms: httpx loop ({run}), {len(messages)} requests")
    w = sampler.watch(
        spawn(
            tag,
            [PY, "-m", "bench._httpx_loop", str(spec_path)],
            env=None,
            logdir=logdir,
            cpus=pinning.measured,
            stdout_pipe=True,
        )
    )
    trace.watch(w)
    try:
        result = await read_json_line(w, 30 + len(messages) * 0.2)
    finally:
        trace.sample()
        stop_process(w)
    statuses = result["statuses"]
    problems = []
    ok = sum(n for s, n in statuses.items() if 200 <= int(s) < 300)
    if ok != len(messages):
        problems.append(f"{len(messages) - ok} requests not 2xx: {statuses}")
    if result["errors"]:
        problems.append(f"transport errors: {result['errors']}")
    phase = phase_of(
        "httpx",
        latency_ms,
        len(messages),
        result["completions"],
        result["first"],
        result["last"],
        trace,
        w,
        {f"http_{s}": n for s, n in statuses.items()},
        problems,
    )
    phase.extra["startup_s"] = (result["first"] or math.nan) - result["started"]
    phase.extra["run"] = run
    return phase


# -- the worker contender --------------------------------------------------------------


def worker_env(
    emu: dict[str, Any],
    bootstrap: str,
    topics: dict[str, str],
    ops_port: int,
    opts: Options,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_SENDSTACK_BASE_URL": emu["base_url"],
            "BRIDGE_SENDSTACK_APP_ID": DEMO_APP_ID,
            "BRIDGE_SENDSTACK_APP_SECRET": DEMO_APP_SECRET,
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "BRIDGE_KAFKA_LINGER_MS": str(opts.linger_ms),
            "BRIDGE_COMMANDS_TOPIC": topics["commands"],
            "BRIDGE_COMMANDS_RESULTS_TOPIC": topics["results"],
            "BRIDGE_COMMANDS_DEAD_LETTER_TOPIC": topics["dlq"],
            "BRIDGE_COMMANDS_STATE_TOPIC": topics["state"],
            "BRIDGE_COMMANDS_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
            "BRIDGE_COMMANDS_CONCURRENCY": str(opts.concurrency),
            "BRIDGE_COMMANDS_RATE_PER_SECOND": "100000",
            "BRIDGE_COMMANDS_RATE_BURST": "10000",
            "BRIDGE_COMMANDS_RETRY_INITIAL_SECONDS": "0.05",
            "BRIDGE_COMMANDS_RETRY_MAX_SECONDS": "0.5",
            "BRIDGE_OPS_HOST": "127.0.0.1",
            "BRIDGE_OPS_PORT": str(ops_port),
            "BRIDGE_SHUTDOWN_GRACE_SECONDS": "10",
            "BRIDGE_LOG_LEVEL": opts.log_level,
            "BRIDGE_LOG_FORMAT": "json",
        }
    )
    return env


async def preload(bootstrap: str, topic: str, messages: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, orjson.dumps(m), key=str(m["commandId"]).encode()
            )
            for m in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def scrape(url: str, http: httpx.AsyncClient) -> dict[str, float]:
    text = (await http.get(url)).text
    return {
        f"{s.name}{dict(sorted(s.labels.items()))}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("bridge_commands_")
        and not s.name.startswith("bridge_commands_duration_seconds_bucket")
    }


def metric_sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(name + "{"))


class ResultReader:
    """The results topic, read as it is written (no group, from the start)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False
        )
        self.records: list[tuple[int, dict[str, Any]]] = []  # (timestamp ms, value)
        self.ids: set[str] = set()

    async def start(self) -> None:
        await self._consumer.start()
        parts: set[int] = set()
        for _ in range(50):
            await self._consumer.topics()
            parts = self._consumer.partitions_for_topic(self._topic) or set()
            if parts:
                break
            await asyncio.sleep(0.1)
        tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self, wait_s: float) -> int:
        batches = await self._consumer.getmany(
            timeout_ms=int(wait_s * 1000), max_records=10_000
        )
        got = 0
        for records in batches.values():
            for r in records:
                value = orjson.loads(r.value)
                self.records.append((r.timestamp, value))
                self.ids.add(str(value.get("commandId")))
                got += 1
        return got


class Profiler:
    """py-spy on the worker, blocking mode (whole stacks; slows it ~15 %)."""

    def __init__(
        self, pid: int, seconds: float, out: Path, cpus: frozenset[int]
    ) -> None:
        exe = _profile.py_spy()
        if exe is None:
            raise RuntimeError(
                "py-spy not found: .venv/bin/python -m pip install py-spy"
            )
        self.out = out
        self.proc = subprocess.Popen(  # noqa: S603 - a fixed tool on our own child
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        pin_process(self.proc.pid, cpus)

    def finish(self) -> str | None:
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        if not self.out.exists():
            return None
        hot = _profile.analyse(self.out)
        return hot.render(20) + "\n" + by_task(self.out, 15)


def _frames(collapsed: Path) -> list[tuple[list[str], int]]:
    """``(["func (file)", ...], samples)`` per collapsed stack, outermost first."""
    out: list[tuple[list[str], int]] = []
    for raw in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            func, _, where = frame.partition(" (")
            frames.append(f"{func} ({_profile.short(where.rstrip(')'))})")
        out.append((frames, int(count_text)))
    return out


def _strip_line(frame: str) -> str:
    func, _, where = frame.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    return f"{func} ({path})" if line.isdigit() else frame


def by_task(collapsed: Path, top: int) -> str:
    """Where the samples go: per asyncio callback/task, then inside ``_process``.

    The frame after ``Handle._run`` names what the event loop was running
    (a task's coroutine, a transport's read callback...); samples with no
    ``Handle._run`` are the loop itself (select, timers).
    """
    stacks = _frames(collapsed)
    total = sum(n for _, n in stacks)
    tasks: Counter[str] = Counter()
    process: Counter[str] = Counter()
    in_process = 0
    for frames, n in stacks:
        names = [_strip_line(f) for f in frames]
        run = next(
            (i for i, f in enumerate(names) if f.startswith("Handle._run ")), None
        )
        task = names[run + 1] if run is not None and run + 1 < len(names) else None
        tasks[task or "event loop itself (select, timers, scheduling)"] += n
        at = next(
            (i for i, f in enumerate(names) if f.startswith("CommandWorker._process ")),
            None,
        )
        if at is not None:
            in_process += n
            callee = names[at + 1] if at + 1 < len(names) else "(its own code)"
            # Name the executor's REST call by what it ends in.
            if callee.startswith("CommandExecutor.execute"):
                rest = any(f.startswith("SendstackRest.execute") for f in names)
                callee += " -> SendstackRest.execute (httpx)" if rest else " (other)"
            process[callee] += n
    if not total:
        return ""
    lines = [f"samples by what the event loop was running ({total} samples):"]
    lines += [f"  {c / total:6.1%}  {name}" for name, c in tasks.most_common(top)]
    lines.append(
        f"inside CommandWorker._process ({in_process / total:.1%} of samples), "
        "by callee:"
    )
    lines += [f"  {c / total:6.1%}  {name}" for name, c in process.most_common(top)]
    return "\n".join(lines)


async def worker_phase(
    latency_ms: float,
    messages: list[dict[str, Any]],
    emu: dict[str, Any],
    broker: TansuBroker,
    opts: Options,
    pinning: Pinning,
    logdir: Path,
    trace: CpuTrace,
    sampler: Sampler,
    expected_s: float,
) -> Phase:
    tag = f"worker-{latency_ms:g}ms"
    suffix = uuid.uuid4().hex[:8]
    topics = {
        k: f"bench.cmd.{suffix}.{k}" for k in ("commands", "results", "dlq", "state")
    }
    await create_topics(
        broker.bootstrap, list(topics.values()), partitions=opts.partitions
    )
    await preload(broker.bootstrap, topics["commands"], messages)
    n = len(messages)
    log(f"{latency_ms:g} ms: worker, {n} commands pre-loaded")
    reader = ResultReader(broker.bootstrap, topics["results"])
    await reader.start()
    ops_port = free_port()
    w = sampler.watch(
        spawn(
            tag,
            [PY, "-m", "bridge", "commands"],
            env=worker_env(emu, broker.bootstrap, topics, ops_port, opts),
            logdir=logdir,
            cpus=pinning.measured,
        )
    )
    trace.watch(w)
    spawned = time.time()
    metrics: dict[str, float] = {}
    profiler: Profiler | None = None
    profile: str | None = None
    problems: list[str] = []
    try:
        deadline = time.monotonic() + 60 + expected_s * 5
        # Completion is watched on the results topic, not on /metrics: a
        # scrape costs the worker CPU (2-3 % at 4 Hz).
        while len(reader.ids) < n:
            if w.popen.poll() is not None:
                raise RuntimeError(
                    f"worker exited ({w.popen.returncode}):\n"
                    f"{tail(logdir / f'{tag}.stderr.log')}"
                )
            if time.monotonic() > deadline:
                problems.append("timed out before every command finished")
                break
            await reader.poll(0.2)
            if reader.ids and profiler is None and opts.profile:
                profiler = Profiler(
                    w.pid,
                    max(1.0, expected_s),
                    logdir / f"{tag}.pyspy.txt",
                    pinning.harness,
                )
        trace.sample()
        async with httpx.AsyncClient(timeout=5) as http:
            with contextlib.suppress(httpx.HTTPError):
                metrics = await scrape(f"http://127.0.0.1:{ops_port}/metrics", http)
    finally:
        trace.sample()
        code = stop_process(w)
        if profiler is not None:
            profile = profiler.finish()
        try:
            while await reader.poll(0.3):  # duplicates would show up here
                pass
        finally:
            await reader.stop()
    results = reader.records
    outcomes = dict(Counter(str(v.get("outcome")) for _, v in results))
    if len(reader.ids) != n or len(results) != n:
        problems.append(
            f"{len(results)} result records for {len(reader.ids)} ids, {n} commands"
        )
    if outcomes.get("succeeded", 0) != n:
        problems.append(f"outcomes {outcomes}")
    calls = metric_sum(metrics, "bridge_commands_api_calls_total")
    if calls != n:
        problems.append(f"{calls:.0f} API calls for {n} commands")
    if code not in (0, None):
        problems.append(f"worker exit code {code}")
    stamps = sorted(t / 1000 for t, _ in results)
    phase = phase_of(
        "worker",
        latency_ms,
        n,
        len(results),
        stamps[0] if stamps else None,
        stamps[-1] if stamps else None,
        trace,
        w,
        outcomes,
        problems,
    )
    phase.extra["startup_s"] = (stamps[0] - spawned) if stamps else math.nan
    phase.extra["metrics"] = metrics
    phase.extra["exit_code"] = code
    if profile is not None:
        phase.extra["profile"] = profile
    return phase


# -- the run ---------------------------------------------------------------------------


def mean(values: Sequence[float | None]) -> float:
    real = [v for v in values if v is not None and not math.isnan(v)]
    return sum(real) / len(real) if real else math.nan


@dataclass
class Point:
    """One latency: the worker, bracketed by two runs of the httpx loop."""

    latency_ms: float
    commands: int
    worker: Phase
    httpx_runs: list[Phase]  # before and after the worker (load drift)

    @property
    def httpx_per_s(self) -> float:
        return mean([p.per_s for p in self.httpx_runs])

    @property
    def httpx_cpu_s_per_1k(self) -> float:
        return mean([p.cpu_s_per_1k for p in self.httpx_runs])

    @property
    def httpx_emulator_cpu_util(self) -> float:
        return mean([p.emulator_cpu_util for p in self.httpx_runs])

    @property
    def ratio(self) -> float:
        if not self.httpx_per_s or math.isnan(self.httpx_per_s):
            return math.nan
        return self.worker.per_s / self.httpx_per_s

    @property
    def cpu_ratio(self) -> float:
        """The ratio both would reach if CPU-bound on equal CPUs."""
        if not self.worker.cpu_s_per_1k or math.isnan(self.worker.cpu_s_per_1k):
            return math.nan
        return self.httpx_cpu_s_per_1k / self.worker.cpu_s_per_1k

    @property
    def verdict(self) -> str:
        if not (self.worker.valid and all(p.valid for p in self.httpx_runs)):
            return "INVALID"
        return "PASS" if self.ratio >= TARGET_RATIO else "FAIL"


def dump_logs(logdir: Path) -> None:
    for path in sorted(logdir.glob("*.stderr.log")):
        text = tail(path)
        if text:
            log(f"{path.name}:\n{text}")


async def run(opts: Options) -> int:
    pinning = Pinning.plan(opts.pin)
    pin_self(pinning.harness)
    logdir = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    started_at = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()
    sampler = Sampler()
    sampler.start()
    trace = CpuTrace()
    trace.start()
    broker: TansuBroker | None = None
    emulator: Watched | None = None
    points: list[Point] = []
    try:
        broker = start_tansu()
        pin_process(broker.process.pid, pinning.harness)
        trace.watch(Watched("tansu", broker.process))
        emulator = sampler.watch(
            spawn(
                "emulator",
                [PY, "-m", "bridgelab.emulator", "--devices", "1"],
                env=None,
                logdir=logdir,
                cpus=pinning.harness,
                stdout_pipe=True,
            )
        )
        trace.watch(emulator)
        emu = await read_json_line(emulator, 30)
        pin_process(emulator.pid, pinning.harness)
        await admin(f"{emu['admin_url']}/deliveries/wallet", {"balance": WALLET})
        log(f"broker {broker.bootstrap}, emulator {emu['base_url']}; {pinning.note}")
        for latency, count in zip(opts.latencies_ms, opts.commands, strict=True):
            await admin(
                f"{emu['admin_url']}/faults/deliveries/latency", {"ms": latency}
            )
            tag = f"{latency:g}ms-{uuid.uuid4().hex[:6]}"
            before = await httpx_phase(
                latency,
                make_commands(count, f"h{tag}", opts.book_share),
                emu,
                opts,
                pinning,
                logdir,
                trace,
                sampler,
                "before",
            )
            worker_messages = make_commands(count, f"w{tag}", opts.book_share)
            expected = count / before.per_s if before.per_s > 0 else 10.0
            work = await worker_phase(
                latency,
                worker_messages,
                emu,
                broker,
                opts,
                pinning,
                logdir,
                trace,
                sampler,
                expected,
            )
            after = await httpx_phase(
                latency,
                make_commands(count, f"a{tag}", opts.book_share),
                emu,
                opts,
                pinning,
                logdir,
                trace,
                sampler,
                "after",
            )
            work.extra["mix"] = mix_of(worker_messages)
            points.append(Point(latency, count, work, [before, after]))
    except Exception:
        dump_logs(logdir)
        raise
    finally:
        await trace.stop()
        await sampler.stop()
        if emulator is not None:
            stop_process(emulator)
        if broker is not None:
            broker.stop()
        if opts.keep_logs:
            log(f"logs kept in {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    loadavg = {"start": load_start, "end": os.getloadavg()}
    report(points, pinning, opts, loadavg)
    save(points, pinning, opts, started_at, loadavg)
    return 0


def _f(value: float | None, spec: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return format(value, spec)


def report(
    points: list[Point],
    pinning: Pinning,
    opts: Options,
    loadavg: dict[str, tuple[float, float, float]],
) -> None:
    head = (
        "latency",
        "commands",
        "worker cmd/s",
        "httpx cmd/s",
        "ratio",
        "target",
        "result",
        "worker CPU-s/1k",
        "httpx CPU-s/1k",
        "CPU ratio",
        "broker CPU-s/1k",
        "emulator CPU w/h",
    )
    rows = [head]
    rows.extend(
        (
            f"{p.latency_ms:g} ms",
            str(p.commands),
            _f(p.worker.per_s, ",.0f"),
            _f(p.httpx_per_s, ",.0f"),
            _f(p.ratio, ".2f"),
            f">= {TARGET_RATIO:g}",
            p.verdict,
            _f(p.worker.cpu_s_per_1k, ".3f"),
            _f(p.httpx_cpu_s_per_1k, ".3f"),
            _f(p.cpu_ratio, ".2f"),
            _f(p.worker.broker_cpu_s_per_1k, ".3f"),
            f"{_f(p.worker.emulator_cpu_util, '.0%')} / "
            f"{_f(p.httpx_emulator_cpu_util, '.0%')}",
        )
        for p in points
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print()
    for row in rows:
        print("  ".join(c.rjust(wd) for c, wd in zip(row, widths, strict=True)))
    print()
    measured_cpu = min(pinning.measured) if pinning.enabled else None
    for p in points:
        for ph in (p.httpx_runs[0], p.worker, *p.httpx_runs[1:]):
            name = ph.contender
            if "run" in ph.extra:
                name += f" ({ph.extra['run']})"
            share = ph.cpu_s / ph.window_s if ph.window_s else math.nan
            busy = ""
            if measured_cpu is not None and len(ph.cpu_busy) > measured_cpu:
                busy = f", CPU {measured_cpu} busy {ph.cpu_busy[measured_cpu]:.0%}"
            status = "ok" if ph.valid else "INVALID: " + "; ".join(ph.problems)
            print(
                f"{p.latency_ms:g} ms {name}: {ph.completed}/{ph.commands} in "
                f"{_f(ph.window_s, '.2f')} s = {_f(ph.per_s, ',.0f')}/s; CPU "
                f"{_f(ph.cpu_s, '.2f')} s ({_f(share, '.0%')} of a core{busy}); "
                f"startup {ph.extra.get('startup_s', math.nan):.2f} s; peak RSS "
                f"{ph.peak_rss_mb:.0f} MB; {status}"
            )
    mix = points[0].worker.extra.get("mix", {}) if points else {}
    print(
        f"concurrency {opts.concurrency}; commands per run: {mix} (book_delivery "
        "with distinct externalOrderIds: distinct ordering keys)"
    )
    print(
        "rate = (completions - 1) / (last - first completion); CPU = the "
        "contender's user+system CPU over that interval; httpx = mean of the runs "
        "before and after the worker; emulator CPU w/h = the emulator's CPU use "
        "in the worker / httpx windows (near 100 %: the emulator limits the rate); "
        "CPU ratio = httpx CPU-s/1k / worker CPU-s/1k, the ratio both would reach "
        "if CPU-bound with a whole core each (steadier than the rate ratio when "
        "other work takes part of the measured CPU)"
    )
    print(
        f"{pinning.note}; load average (1 min) at start {loadavg['start'][0]:.2f}, "
        f"at end {loadavg['end'][0]:.2f}: other work on the machine skews the "
        "figures (CPU busy above the contender's share is someone else's)"
    )
    for p in points:
        profile = p.worker.extra.get("profile")
        if profile:
            print(f"\n-- worker at {p.latency_ms:g} ms --\n{profile}")


def save(
    points: list[Point],
    pinning: Pinning,
    opts: Options,
    started_at: dt.datetime,
    loadavg: dict[str, tuple[float, float, float]],
) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"commands-{stamp}.json"
    data = {
        "benchmark": "commands_throughput",
        "started_at": started_at.isoformat(),
        "target_ratio": TARGET_RATIO,
        "options": asdict(opts),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": psutil.cpu_count(),
            "pinning": pinning.note,
            "loadavg": loadavg,
            "pythonpath": os.environ.get("PYTHONPATH"),
        },
        "points": [
            {
                "latency_ms": p.latency_ms,
                "commands": p.commands,
                "ratio": p.ratio,
                "cpu_ratio": p.cpu_ratio,
                "verdict": p.verdict,
                "worker_per_s": p.worker.per_s,
                "httpx_per_s": p.httpx_per_s,
                "worker_cpu_s_per_1k": p.worker.cpu_s_per_1k,
                "httpx_cpu_s_per_1k": p.httpx_cpu_s_per_1k,
                "worker": asdict(p.worker),
                "httpx_runs": [asdict(h) for h in p.httpx_runs],
            }
            for p in points
        ],
    }
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    profiles = [
        f"-- worker at {p.latency_ms:g} ms --\n{p.worker.extra['profile']}\n"
        for p in points
        if p.worker.extra.get("profile")
    ]
    if profiles:
        (RESULTS_DIR / f"commands-{stamp}.pyspy.txt").write_text("\n".join(profiles))
    log(f"wrote {out.relative_to(RESULTS_DIR.parent.parent)}")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        return asyncio.run(run(opts))
    except (RuntimeError, OSError) as exc:
        log(f"benchmark failed: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
