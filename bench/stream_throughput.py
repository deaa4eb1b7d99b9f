"""Stream throughput benchmark: the bridge vs a raw aiokafka producer, one run.

``make bench`` or ``.venv/bin/python -m bench.stream_throughput [flags]``

What it does (design: reliability-and-benchmarks.md §2.2-2.3, ratio B1):

1. **Bridge.** A fresh Tansu broker (or ``--bootstrap``), four topics created
   explicitly (``--partitions`` each), the emulator in load mode with
   ``--devices`` devices in its own process, and the bridge as a separate
   process (``python -m bridge stream``, configured by ``BRIDGE_*``
   variables). After ``--warmup`` seconds the bridge's
   ``bridge_records_published_total`` (``/metrics``, counted on Kafka's ack)
   and the topics' end offsets are read, again after ``--duration`` seconds;
   records/s is the difference over the window. ``bridge_buffer_records`` is
   sampled twice a second: a buffer that sits full means the bridge waits on
   Kafka's acks rather than on its CPU. CPU seconds (user + system,
   psutil) of every process are taken at the same instants; the RSS of the
   bridge is sampled every 100 ms from spawn to exit.
2. **Sample.** A few thousand of the records the bridge wrote in the window
   (topic mix kept: value, key, headers) are read back.
3. **Raw baseline.** A fresh Tansu again (memory storage grows), same topic
   layout, and a subprocess that replays those records with a plain
   ``AIOKafkaProducer`` and the bridge's own producer settings (built by
   ``bridge.adapters.kafka_client.producer_settings`` from the same variables: acks=all,
   idempotence off, linger, batch size, compression), pipelined with the same
   bound on records in flight as the bridge's buffer. Same warm-up and window.

The measured process (bridge, then raw producer) runs alone on one CPU and
everything else on the other when the machine has two or more
(``os.sched_setaffinity``). The emulator must produce faster than the bridge
consumes: its CPU and its per-socket queue fill are reported, and the run says
which side limited the throughput.

Prints a table and writes ``bench/results/stream-<timestamp>.json``. Exits 0
when the run completed (whatever PASS/FAIL says), 2 when the harness failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from bench import _profile
from bench._procs import (
    MB,
    Broker,
    OffsetProbe,
    Pinning,
    Sampler,
    Watched,
    cpu_busy,
    create_topics,
    free_port,
    pin_self,
    spawn,
    start_tansu,
    stop_process,
    tail,
)
from bridge.adapters.kafka_client import producer_settings
from bridge.config import KafkaSettings, Settings

TARGET_RATIO = 0.6
TARGET_RSS_MB = 150.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PY = sys.executable
KINDS = ("positions", "device_status", "events", "dead_letter")
PUBLISHED = "bridge_records_published_total"


def log(msg: str) -> None:
    """Progress goes to stderr; the result table to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- options -------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    devices: int
    bootstrap: str | None
    linger_ms: int
    compression: str
    max_batch_bytes: int
    partitions: int
    frame_items: int
    sample_records: int
    pin: bool
    keep_logs: bool
    profile: bool
    bridge_module: str | None
    # BRIDGE_* variables applied last by bridge_env (bench/journal_stream.py).
    extra_env: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.stream_throughput",
        description="Bridge vs raw aiokafka producer: throughput, CPU, RSS.",
    )
    p.add_argument("--duration", type=float, default=20.0, help="window, s")
    p.add_argument("--warmup", type=float, default=5.0, help="discarded, s")
    p.add_argument("--devices", type=int, default=1000, help="emulated devices")
    p.add_argument(
        "--bootstrap", help="an external Kafka (host:port,...) instead of Tansu"
    )
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument(
        "--compression",
        default="none",
        choices=("none", "gzip", "snappy", "lz4", "zstd"),
    )
    p.add_argument("--max-batch-bytes", type=int, default=65_536)
    p.add_argument("--partitions", type=int, default=3, help="per topic")
    p.add_argument(
        "--frame-items",
        type=int,
        default=50,
        help="items per emulator frame in load mode (bigger = cheaper emulator)",
    )
    p.add_argument(
        "--sample-records",
        type=int,
        default=5_000,
        help="records captured from the bridge run and replayed by the baseline",
    )
    p.add_argument("--no-pin", action="store_true", help="no CPU affinity")
    p.add_argument("--keep-logs", action="store_true", help="keep process logs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the bridge with py-spy during the window and report hot "
        "spots (perturbs the bridge's figures a little)",
    )
    p.add_argument(
        "--bridge-module",
        metavar="MODULE",
        help="experiments: run the bridge as `python -m MODULE` (e.g. a patched "
        "launcher on PYTHONPATH) instead of `python -m bridge stream`",
    )
    a = p.parse_args(argv)
    if a.duration <= 0 or a.warmup < 0 or a.devices < 1 or a.frame_items < 1:
        p.error(
            "need --duration > 0, --warmup >= 0, --devices >= 1, --frame-items >= 1"
        )
    return Options(
        duration=a.duration,
        warmup=a.warmup,
        devices=a.devices,
        bootstrap=a.bootstrap,
        linger_ms=a.linger_ms,
        compression=a.compression,
        max_batch_bytes=a.max_batch_bytes,
        partitions=a.partitions,
        frame_items=a.frame_items,
        sample_records=a.sample_records,
        pin=not a.no_pin,
        keep_logs=a.keep_logs,
        profile=a.profile,
        bridge_module=a.bridge_module,
    )


# -- shared pieces -------------------------------------------------------------


@dataclass(frozen=True)
class TopicSet:
    positions: str
    device_status: str
    events: str
    dead_letter: str

    @classmethod
    def fresh(cls, tag: str) -> TopicSet:
        u = uuid.uuid4().hex[:8]
        return cls(*(f"bench.{tag}.{u}.{k.replace('_', '-')}" for k in KINDS))

    @property
    def all(self) -> list[str]:
        return [self.positions, self.device_status, self.events, self.dead_letter]

    def kind_of(self, topic: str) -> str:
        return KINDS[self.all.index(topic)]

    def topic_of(self, kind: str) -> str:
        return self.all[KINDS.index(kind)]


# The bridges' journals, removed when the bench exits.
_JOURNALS = tempfile.TemporaryDirectory(prefix="bench-journals-")


def bridge_env(
    opts: Options, emu: Mapping[str, Any], bootstrap: str, topics: TopicSet, port: int
) -> dict[str, str]:
    """The bridge's configuration: production defaults except what we compare."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_SENDSTACK_BASE_URL": emu["base_url"],
            "BRIDGE_SENDSTACK_APP_ID": emu["app_id"],
            "BRIDGE_SENDSTACK_APP_SECRET": emu["app_secret"],
            "BRIDGE_STREAM_URL": emu["ws_url"],
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BRIDGE_KAFKA_ACKS": "all",
            # Tansu has no idempotent producer; the baseline has it off too.
            "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "BRIDGE_KAFKA_COMPRESSION": opts.compression,
            "BRIDGE_KAFKA_LINGER_MS": str(opts.linger_ms),
            "BRIDGE_KAFKA_MAX_BATCH_BYTES": str(opts.max_batch_bytes),
            "BRIDGE_KAFKA_TOPIC_POSITIONS": topics.positions,
            "BRIDGE_KAFKA_TOPIC_DEVICE_STATUS": topics.device_status,
            "BRIDGE_KAFKA_TOPIC_EVENTS": topics.events,
            "BRIDGE_KAFKA_TOPIC_DEAD_LETTER": topics.dead_letter,
            "BRIDGE_OPS_HOST": "127.0.0.1",
            "BRIDGE_OPS_PORT": str(port),
            "BRIDGE_LOG_LEVEL": "info",
            "BRIDGE_LOG_FORMAT": "json",
            # The journal is on, as in production; each process its own.
            "BRIDGE_JOURNAL_DIR": tempfile.mkdtemp(prefix="j-", dir=_JOURNALS.name),
        }
    )
    env.update(opts.extra_env)
    return env


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


class Harness:
    """Processes of the harness side (broker, emulator) and this process."""

    def __init__(self) -> None:
        self.me = psutil.Process()

    def cpu_seconds(self) -> float:
        t = self.me.cpu_times()
        return float(t.user + t.system)


@dataclass
class Snap:
    """Counters and CPU times at one instant."""

    t: float
    cpu: dict[str, float]
    percpu: Any
    records: float = 0.0  # acked records (bridge: /metrics; raw: its own count)
    by_kind: dict[str, float] = field(default_factory=dict)
    offsets: int = 0  # sum of end offsets of the phase's topics


def cpu_of(procs: Mapping[str, Watched], harness: Harness) -> dict[str, float]:
    out = {name: w.cpu_seconds() for name, w in procs.items()}
    out["harness"] = harness.cpu_seconds()
    return out


@dataclass
class PhaseResult:
    """One measured window of one contender."""

    name: str
    window_s: float
    records: float
    records_per_s: float
    cpu_s: dict[str, float]  # CPU seconds of each process over the window
    cpu_util: dict[str, float]  # the same, as a fraction of one core
    cpu_s_per_100k: float
    per_cpu_busy: list[float]
    peak_rss_mb: float
    rss_end_mb: float
    rss_samples: int
    offsets_delta: int
    extra: dict[str, Any] = field(default_factory=dict)


def phase_result(
    name: str,
    s0: Snap,
    s1: Snap,
    measured: Watched,
    extra: dict[str, Any],
) -> PhaseResult:
    window = s1.t - s0.t
    records = s1.records - s0.records
    cpu = {k: s1.cpu[k] - s0.cpu[k] for k in s0.cpu}
    main_cpu = cpu[measured.name]
    return PhaseResult(
        name=name,
        window_s=window,
        records=records,
        records_per_s=records / window if window > 0 else 0.0,
        cpu_s=cpu,
        cpu_util={k: v / window for k, v in cpu.items()},
        cpu_s_per_100k=main_cpu / records * 100_000 if records else math.inf,
        per_cpu_busy=cpu_busy(s0.percpu, s1.percpu),
        peak_rss_mb=measured.peak_rss / MB,
        rss_end_mb=measured.last_rss / MB,
        rss_samples=measured.samples,
        offsets_delta=s1.offsets - s0.offsets,
        extra=extra,
    )


# -- the bridge phase ----------------------------------------------------------


async def scrape(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    """``bridge_records_published_total`` by kind."""
    resp = await http.get(url)
    resp.raise_for_status()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        if family.name + "_total" == PUBLISHED or family.name == PUBLISHED:
            for s in family.samples:
                if s.name == PUBLISHED:
                    out[s.labels.get("kind", "")] = s.value
    return out


async def wait_flowing(
    http: httpx.AsyncClient, url: str, bridge: Watched, wait_s: float
) -> None:
    """Until the bridge has had records acked (its first produce went through)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if bridge.popen.poll() is not None:
            raise RuntimeError(f"bridge exited with {bridge.popen.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if sum((await scrape(http, url)).values()) > 0:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no record acked within {wait_s}s")


_CLI = ("python -m bridge stream", ("-m", "bridge", "stream"))


async def start_bridge(
    http: httpx.AsyncClient,
    metrics_url: str,
    env: dict[str, str],
    logdir: Path,
    pinning: Pinning,
    sampler: Sampler,
    launcher: tuple[str, Sequence[str]],
) -> tuple[Watched, str]:
    """Spawn the bridge on the measured CPU and wait until it publishes."""
    label, args = launcher
    bridge = spawn("bridge", [PY, *args], env=env, logdir=logdir, cpus=pinning.measured)
    sampler.watch(bridge)
    try:
        await wait_flowing(http, metrics_url, bridge, 60.0)
    except BaseException:
        stop_process(bridge, timeout=5.0)  # the caller never gets to stop it
        raise
    return bridge, label


async def poll_queue(
    http: httpx.AsyncClient, admin_url: str, cap: int, out: list[float]
) -> None:
    """Fill of the emulator's per-socket send queue (0..1), twice a second."""
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = await http.get(f"{admin_url}/stats")
            conns = [c for c in resp.json()["connections"] if c["state"] == "open"]
            if conns:
                out.append(max(c["queue_depth"] for c in conns) / cap)
        await asyncio.sleep(0.5)


async def poll_buffer(
    http: httpx.AsyncClient, url: str, cap: int, out: list[float]
) -> None:
    """Fill of the bridge's record buffer (0..1, ``bridge_buffer_records``)."""
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = await http.get(url)
            for family in text_string_to_metric_families(resp.text):
                if family.name == "bridge_buffer_records":
                    out.extend(s.value / cap for s in family.samples)
        await asyncio.sleep(0.5)


def shutdown_acked(logdir: Path) -> int | None:
    """``acked`` of the bridge's ``shutdown_complete`` log line."""
    lines: list[str] = []
    for name in ("bridge.stdout.log", "bridge.stderr.log"):
        path = logdir / name
        if path.exists():
            lines += path.read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if "shutdown_complete" in line:
            with contextlib.suppress(ValueError):
                acked = orjson.loads(line).get("acked")
                return int(acked) if acked is not None else None
            m = re.search(r"acked[=\": ]+(\d+)", line)
            return int(m.group(1)) if m else None
    return None


@dataclass
class BridgeRun:
    result: PhaseResult
    producer_kwargs: dict[str, Any]
    sample: list[dict[str, Any]]
    emulator: dict[str, Any]
    hotspots: _profile.Hotspots | None
    max_in_flight: int  # the bridge's record buffer bound, for the baseline


async def bridge_phase(
    opts: Options,
    broker: Broker,
    pinning: Pinning,
    logdir: Path,
    harness: Harness,
    profile_out: Path | None,
) -> BridgeRun:
    topics = TopicSet.fresh("bridge")
    await create_topics(broker.bootstrap, topics.all, opts.partitions)
    log(f"topics created ({opts.partitions} partitions each): {topics.positions} ...")
    sampler = Sampler(interval=0.1)
    sampler.start()
    emulator = spawn(
        "emulator",
        [
            PY,
            "-m",
            "bench._emulator",
            "--devices",
            str(opts.devices),
            "--frame-items",
            str(opts.frame_items),
        ],
        env=None,
        logdir=logdir,
        cpus=pinning.harness,
        stdout_pipe=True,
    )
    bridge: Watched | None = None
    probe = OffsetProbe(broker.bootstrap, topics.all)
    try:
        emu = await read_json_line(emulator, 30.0)
        sampler.watch(emulator)
        log(
            f"emulator ready: {opts.devices} devices, load mode, "
            f"{opts.frame_items} items/frame"
        )
        port = free_port()
        env = bridge_env(opts, emu, broker.bootstrap, topics, port)
        settings = Settings.from_env(env)
        producer_kwargs = producer_settings(settings.require(KafkaSettings))
        await probe.start()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient(timeout=5.0) as http:
            how = (
                _CLI
                if opts.bridge_module is None
                else (f"python -m {opts.bridge_module}", ("-m", opts.bridge_module))
            )
            bridge, launcher = await start_bridge(
                http, metrics_url, env, logdir, pinning, sampler, how
            )
            procs: dict[str, Watched] = {"bridge": bridge, "emulator": emulator}
            if broker.watched is not None:
                procs["tansu"] = broker.watched
            log(f"bridge is publishing; warming up {opts.warmup:g}s")
            await asyncio.sleep(opts.warmup)

            snap_offsets: list[dict[Any, int]] = []

            async def snap() -> Snap:
                cpu = cpu_of(procs, harness)
                percpu = psutil.cpu_times(percpu=True)
                by_kind = await scrape(http, metrics_url)
                t = time.monotonic()
                offsets = await probe.per_partition()
                s = Snap(t, cpu, percpu, sum(by_kind.values()), by_kind)
                s.offsets = sum(offsets.values())
                snap_offsets.append(offsets)
                return s

            s0 = await snap()
            fills: list[float] = []
            buffer_fills: list[float] = []
            pollers = [
                asyncio.create_task(
                    poll_queue(
                        http, emu["admin_url"], int(emu["send_queue_frames"]), fills
                    )
                ),
                asyncio.create_task(
                    poll_buffer(
                        http, metrics_url, settings.buffer.max_records, buffer_fills
                    )
                ),
            ]
            spy = (
                None
                if profile_out is None
                else _profile.start(
                    bridge.pid, opts.duration, profile_out, pinning.harness
                )
            )
            log(f"measuring {opts.duration:g}s" + (" (py-spy on)" if spy else ""))
            await asyncio.sleep(opts.duration)
            s1 = await snap()
            for poller in pollers:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
        hotspots = None
        if spy is not None and profile_out is not None:
            hotspots = await asyncio.to_thread(_profile.finish, spy, profile_out)
        log("stopping the bridge (SIGTERM)")
        code = stop_process(bridge, timeout=30.0)
        await sampler.stop()
        acked_total = shutdown_acked(logdir)
        final_offsets = sum((await probe.exact_per_partition()).values())
        stop_process(emulator, timeout=10.0)
        by_kind = {k: v - s0.by_kind.get(k, 0.0) for k, v in s1.by_kind.items()}
        extra: dict[str, Any] = {
            "records_by_kind": by_kind,
            "offsets_vs_metrics": (
                (s1.offsets - s0.offsets) / (s1.records - s0.records) - 1.0
                if s1.records > s0.records
                else None
            ),
            "whole_run_acked_from_log": acked_total,
            "whole_run_end_offsets": final_offsets,
            "bridge_exit_code": code,
            "bridge_launcher": launcher,
            "emulator_queue_fill_mean": statistics.fmean(fills) if fills else None,
            "emulator_queue_fill_samples": len(fills),
            "buffer_fill_mean": (
                statistics.fmean(buffer_fills) if buffer_fills else None
            ),
            "topics": asdict(topics),
        }
        result = phase_result("bridge", s0, s1, bridge, extra)
        log(
            f"bridge: {result.records_per_s:,.0f} rec/s, "
            f"{result.cpu_s_per_100k:.2f} CPU-s/100k, "
            f"peak RSS {result.peak_rss_mb:.1f} MB"
        )
        sample = await capture_sample(
            broker.bootstrap,
            topics,
            snap_offsets[0],
            snap_offsets[1],
            opts.sample_records,
        )
        log(f"captured {len(sample)} records for the baseline")
        return BridgeRun(
            result,
            producer_kwargs,
            sample,
            emu,
            hotspots,
            settings.buffer.max_records,
        )
    finally:
        await sampler.stop()
        with contextlib.suppress(Exception):
            await probe.stop()
        for w in (bridge, emulator):
            if w is not None:
                stop_process(w, timeout=10.0)


async def capture_sample(
    bootstrap: str,
    topics: TopicSet,
    start: Mapping[Any, int],
    end: Mapping[Any, int],
    n: int,
) -> list[dict[str, Any]]:
    """About ``n`` records from the window, each partition in proportion."""
    total = sum(end[tp] - start[tp] for tp in start)
    if total <= 0:
        raise RuntimeError("the bridge wrote nothing in the window")
    quota = {
        tp: math.ceil(n * (end[tp] - start[tp]) / total)
        for tp in start
        if end[tp] > start[tp]
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    got: dict[Any, list[dict[str, Any]]] = {tp: [] for tp in quota}
    try:
        consumer.assign(list(quota))
        for tp in quota:
            consumer.seek(tp, start[tp])
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and any(
            len(got[tp]) < q for tp, q in quota.items()
        ):
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for tp, msgs in batches.items():
                room = quota[tp] - len(got[tp])
                for m in msgs[: max(0, room)]:
                    got[tp].append(
                        {
                            "kind": topics.kind_of(m.topic),
                            "key": None if m.key is None else b64(m.key),
                            "value": b64(m.value),
                            "headers": [(h, b64(v)) for h, v in m.headers or ()],
                        }
                    )
                if len(got[tp]) >= quota[tp]:
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    sample = [r for rs in got.values() for r in rs]
    random.Random(0).shuffle(sample)  # interleave topics and partitions
    return sample


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- the raw phase -------------------------------------------------------------


async def raw_phase(
    opts: Options,
    broker: Broker,
    pinning: Pinning,
    logdir: Path,
    harness: Harness,
    producer_kwargs: dict[str, Any],
    sample: list[dict[str, Any]],
    max_in_flight: int,
) -> PhaseResult:
    topics = TopicSet.fresh("raw")
    await create_topics(broker.bootstrap, topics.all, opts.partitions)
    kwargs = dict(producer_kwargs, bootstrap_servers=broker.bootstrap)
    spec = {
        "producer": kwargs,
        "max_in_flight": max_in_flight,
        "chunk": max(1, max_in_flight // 10),
        "records": [
            {
                "topic": topics.topic_of(r["kind"]),
                "key": r["key"],
                "value": r["value"],
                "headers": r["headers"],
            }
            for r in sample
        ],
    }
    spec_path = logdir / "raw-spec.json"
    spec_path.write_bytes(orjson.dumps(spec))
    sampler = Sampler(interval=0.1)
    sampler.start()
    raw = spawn(
        "raw",
        [PY, "-m", "bench._raw_producer", str(spec_path)],
        env=None,
        logdir=logdir,
        cpus=pinning.measured,
        stdout_pipe=True,
        stdin_pipe=True,
    )
    sampler.watch(raw)
    probe = OffsetProbe(broker.bootstrap, topics.all)
    procs: dict[str, Watched] = {"raw": raw}
    if broker.watched is not None:
        procs["tansu"] = broker.watched
    try:
        await read_json_line(raw, 30.0)
        await probe.start()
        log(f"raw producer running; warming up {opts.warmup:g}s")
        await asyncio.sleep(opts.warmup)

        async def mark() -> Snap:
            cpu = cpu_of(procs, harness)
            percpu = psutil.cpu_times(percpu=True)
            answer = await command(raw, "mark")
            s = Snap(float(answer["t"]), cpu, percpu, float(answer["acked"]))
            s.offsets = sum((await probe.per_partition()).values())
            return s

        s0 = await mark()
        log(f"measuring {opts.duration:g}s")
        await asyncio.sleep(opts.duration)
        s1 = await mark()
        final = await command(raw, "stop", wait_s=60.0)
        code = raw.popen.wait(timeout=30)
        await sampler.stop()
        end_offsets = sum((await probe.exact_per_partition()).values())
        extra: dict[str, Any] = {
            "offsets_vs_acked": (
                (s1.offsets - s0.offsets) / (s1.records - s0.records) - 1.0
                if s1.records > s0.records
                else None
            ),
            "whole_run_acked": final["acked"],
            "whole_run_failed": final["failed"],
            "whole_run_errors": final["errors"],
            "whole_run_end_offsets": end_offsets,
            "exit_code": code,
            "max_in_flight": max_in_flight,
            "distinct_records": len(sample),
        }
        result = phase_result("raw", s0, s1, raw, extra)
        log(
            f"raw: {result.records_per_s:,.0f} rec/s, "
            f"{result.cpu_s_per_100k:.2f} CPU-s/100k, "
            f"peak RSS {result.peak_rss_mb:.1f} MB"
        )
        return result
    finally:
        await sampler.stop()
        with contextlib.suppress(Exception):
            await probe.stop()
        stop_process(raw, timeout=10.0)


async def command(w: Watched, cmd: str, wait_s: float = 10.0) -> dict[str, Any]:
    assert w.popen.stdin is not None
    w.popen.stdin.write(cmd.encode() + b"\n")
    w.popen.stdin.flush()
    return await read_json_line(w, wait_s)


# -- verdicts and report -------------------------------------------------------


def limiter(bridge: PhaseResult, pinning: Pinning) -> tuple[str, bool]:
    """Who limited the bridge's throughput, and whether the emulator did."""
    fill = bridge.extra.get("emulator_queue_fill_mean")
    b_util = bridge.cpu_util.get("bridge", 0.0)
    e_util = bridge.cpu_util.get("emulator", 0.0)
    harness_busy = (
        max(bridge.per_cpu_busy[c] for c in pinning.harness)
        if pinning.enabled
        else None
    )
    if (
        fill is not None
        and fill < 0.2
        and (e_util >= 0.8 or (harness_busy or 0) >= 0.9)
    ):
        return (
            f"EMULATOR-BOUND: its send queue was {fill:.0%} full on average with "
            f"the emulator at {e_util:.0%} of a core (harness CPU "
            f"{harness_busy or 0:.0%} busy); the bridge figure is a lower bound",
            True,
        )
    if b_util >= 0.85:
        why = f"the bridge: CPU-bound on its core ({b_util:.0%} of a core)"
    else:
        why = (
            f"the bridge, but not CPU-bound ({b_util:.0%} of a core): "
            "waiting on Kafka acks or its own buffer"
        )
    buffer = bridge.extra.get("buffer_fill_mean")
    if buffer is not None:
        why += f"; its record buffer was {buffer:.0%} full on average"
    if fill is not None:
        why += (
            f"; the emulator kept its queue {fill:.0%} full (at {e_util:.0%} of a core)"
        )
    return why, False


def warnings(bridge: PhaseResult, raw: PhaseResult, pinning: Pinning) -> list[str]:
    """Reasons to distrust the run (design §2.3: harness CPU over ~80 %)."""
    out: list[str] = []
    if pinning.enabled:
        for phase in (bridge, raw):
            busy = max(phase.per_cpu_busy[c] for c in pinning.harness)
            if busy > 0.8:
                out.append(
                    f"WARNING: the harness CPU was {busy:.0%} busy in the "
                    f"{phase.name} window (> 80 %): the harness may have limited it"
                )
        for phase, name in ((bridge, "bridge"), (raw, "raw")):
            own = phase.cpu_util.get(name, 0.0)
            busy = max(phase.per_cpu_busy[c] for c in pinning.measured)
            if busy - own > 0.08:
                out.append(
                    f"WARNING: in the {name} window its CPU was {busy:.0%} busy but "
                    f"{name} used {own:.0%}: other processes on this machine "
                    "took the rest, so the run is noisy"
                )
    r_util = raw.cpu_util.get("raw", 0.0)
    if r_util < 0.85:
        out.append(
            f"WARNING: the raw producer used only {r_util:.0%} of its core: the "
            "baseline was limited by the broker or the harness, not by aiokafka"
        )
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(
    opts: Options,
    bridge: PhaseResult,
    raw: PhaseResult,
    pinning: Pinning,
    why: str,
    emulator_bound: bool,
) -> str:
    ratio = bridge.records_per_s / raw.records_per_s if raw.records_per_s else 0.0
    cpu_ratio = (
        bridge.cpu_s_per_100k / raw.cpu_s_per_100k if raw.cpu_s_per_100k else math.inf
    )
    rss_ratio = bridge.peak_rss_mb / raw.peak_rss_mb if raw.peak_rss_mb else math.inf
    tput_verdict = verdict(ratio >= TARGET_RATIO)
    if emulator_bound:
        tput_verdict += " (emulator-bound)"
    rss_label = f"peak RSS, MB ({opts.devices:,} devices)"
    rows = [
        ("metric", "bridge", "raw baseline", "ratio", "target", "result"),
        (
            "throughput, records/s",
            f"{bridge.records_per_s:,.0f}",
            f"{raw.records_per_s:,.0f}",
            f"{ratio:.2f}",
            f">= {TARGET_RATIO:.2f}",
            tput_verdict,
        ),
        (
            "CPU-s per 100k records",
            f"{bridge.cpu_s_per_100k:.2f}",
            f"{raw.cpu_s_per_100k:.2f}",
            f"{cpu_ratio:.2f}x",
            "(info)",
            "-",
        ),
        (
            rss_label,
            f"{bridge.peak_rss_mb:.1f}",
            f"{raw.peak_rss_mb:.1f}",
            f"{rss_ratio:.2f}x",
            f"<= {TARGET_RSS_MB:.0f} (bridge)",
            verdict(bridge.peak_rss_mb <= TARGET_RSS_MB),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    b, rw = bridge, raw
    off_b = b.extra.get("offsets_vs_metrics")
    off_r = rw.extra.get("offsets_vs_acked")
    notes = [
        "",
        f"window {b.window_s:.1f}s after {opts.warmup:g}s warm-up; acks=all, "
        f"idempotence off, linger_ms={opts.linger_ms}, "
        f"max_batch_size={opts.max_batch_bytes}, compression={opts.compression}, "
        f"{opts.partitions} partitions/topic",
        f"pinning: {pinning.note}",
        f"bridge: launched as `{b.extra['bridge_launcher']}`; window: "
        f"{b.records:,.0f} records acked (/metrics), topic end offsets moved "
        f"{b.offsets_delta:,} ({_pct(off_b)}); whole run: "
        + _match(
            b.extra.get("whole_run_acked_from_log"),
            b.extra.get("whole_run_end_offsets"),
            "acked (shutdown log)",
        ),
        f"raw:    window: {rw.records:,.0f} records acked, end offsets moved "
        f"{rw.offsets_delta:,} ({_pct(off_r)}); whole run: "
        + _match(
            rw.extra.get("whole_run_acked"),
            rw.extra.get("whole_run_end_offsets"),
            "acked",
        )
        + f"; replays {rw.extra['distinct_records']:,} captured bridge records, "
        f"<= {rw.extra['max_in_flight']:,} in flight",
        "  (window offsets: Tansu reports the last batch's base offset as the end,"
        " so they are exact only to one batch per partition)",
        "CPU use over the window (fraction of one core): "
        + ", ".join(f"{k} {v:.0%}" for k, v in b.cpu_util.items())
        + f" | per CPU: {_busy(b)}",
        "  raw window: "
        + ", ".join(f"{k} {v:.0%}" for k, v in rw.cpu_util.items())
        + f" | per CPU: {_busy(rw)}",
        f"limited by: {why}",
        *warnings(bridge, raw, pinning),
    ]
    return "\n".join(lines + notes)


def _busy(r: PhaseResult) -> str:
    return " / ".join(f"CPU{i} {x:.0%}" for i, x in enumerate(r.per_cpu_busy))


def _match(acked: int | None, records: int | None, what: str) -> str:
    if acked is None or records is None:
        return f"{acked} {what} vs {records} records in the topics"
    word = "match" if acked == records else f"MISMATCH ({records - acked:+,})"
    return f"{acked:,} {what} vs {records:,} records in the topics: {word}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2%} vs acked"


def environment(broker_version: str, pinning: Pinning) -> dict[str, Any]:
    def ver(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "event_loop": "asyncio",
        "broker": broker_version,
        "pinning": pinning.note,
        "packages": {
            p: ver(p)
            for p in (
                "aiokafka",
                "websockets",
                "orjson",
                "prometheus-client",
                "structlog",
            )
        },
    }


# -- main ----------------------------------------------------------------------


async def run(opts: Options, logdir: Path) -> int:
    pinning = Pinning.plan(opts.pin)
    pin_self(pinning.harness)
    log(pinning.note)
    harness = Harness()
    broker: Broker | None = None
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    try:
        broker = (
            Broker(opts.bootstrap, None, "external")
            if opts.bootstrap
            else start_tansu(logdir, pinning.harness, "bridge")
        )
        log(f"broker {broker.version} at {broker.bootstrap}")
        profile_out = (
            RESULTS_DIR / f"stream-{stamp}.pyspy.txt" if opts.profile else None
        )
        if profile_out is not None:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        b = await bridge_phase(opts, broker, pinning, logdir, harness, profile_out)
        if not broker.external:
            assert broker.watched is not None
            stop_process(broker.watched)
            broker = start_tansu(logdir, pinning.harness, "raw")
            log(f"fresh broker for the baseline at {broker.bootstrap}")
        r = await raw_phase(
            opts,
            broker,
            pinning,
            logdir,
            harness,
            b.producer_kwargs,
            b.sample,
            b.max_in_flight,
        )
    except (
        RuntimeError,
        OSError,
        subprocess.SubprocessError,
        KafkaError,
        httpx.HTTPError,
    ) as exc:
        for name in ("bridge", "raw", "emulator"):
            text = tail(logdir / f"{name}.stderr.log")
            if text:
                print(f"--- {name} stderr (tail) ---\n{text}", file=sys.stderr)
        log(f"harness failed: {exc}")
        return 2
    finally:
        if broker is not None and broker.watched is not None:
            stop_process(broker.watched)
    why, emulator_bound = limiter(b.result, pinning)
    table = render(opts, b.result, r, pinning, why, emulator_bound)
    print(table)
    if b.hotspots is not None:
        print()
        print(b.hotspots.render())
    ratio = b.result.records_per_s / r.records_per_s if r.records_per_s else 0.0
    doc = {
        "benchmark": "stream_throughput",
        "started_at": started.isoformat(),
        "options": asdict(opts),
        "environment": environment(broker.version, pinning),
        "producer_settings": {
            k: v for k, v in b.producer_kwargs.items() if "password" not in k
        },
        "emulator": {
            k: b.emulator[k] for k in ("devices", "frame_items", "send_queue_frames")
        },
        "bridge": asdict(b.result),
        "raw": asdict(r),
        "summary": {
            "throughput_ratio": ratio,
            "throughput_target": TARGET_RATIO,
            "throughput_pass": ratio >= TARGET_RATIO,
            "cpu_s_per_100k_bridge": b.result.cpu_s_per_100k,
            "cpu_s_per_100k_raw": r.cpu_s_per_100k,
            "peak_rss_mb_bridge": b.result.peak_rss_mb,
            "peak_rss_target_mb": TARGET_RSS_MB,
            "peak_rss_pass": b.result.peak_rss_mb <= TARGET_RSS_MB,
            "limited_by": why,
            "emulator_bound": emulator_bound,
            "warnings": warnings(b.result, r, pinning),
            "whole_run_delivery_match": {
                "bridge": b.result.extra["whole_run_acked_from_log"]
                == b.result.extra["whole_run_end_offsets"],
                "raw": r.extra["whole_run_acked"] == r.extra["whole_run_end_offsets"],
            },
        },
        "table": table,
        "hotspots": None if b.hotspots is None else asdict(b.hotspots),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"stream-{stamp}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"\nresults: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    code = asyncio.run(run(opts, logdir))
    if opts.keep_logs or code != 0:
        print(f"process logs: {logdir}", file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
