"""The admin API over real HTTP, and where it listens."""

from __future__ import annotations

import asyncio
import socket

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosedError

from bridgelab.emulator import Emulator
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import creds, eventually, new_session, open_stream, seqs_of


def _non_loopback_ipv4() -> str | None:
    """This host's primary IPv4 address, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing lookup only
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_admin_binds_loopback_even_when_the_rest_is_public(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """With host 0.0.0.0 the REST port is public but admin stays on 127.0.0.1."""
    async with make_emulator(host="0.0.0.0") as emu:  # noqa: S104 - the point
        assert {host for host, _ in emu.admin_sockets} == {"127.0.0.1"}
        assert emu.admin_url.startswith("http://127.0.0.1:")
        assert emu.base_url.startswith("http://127.0.0.1:")
        stats = await http.get(f"{emu.admin_url}/stats")
        assert stats.status_code == 200
        address = _non_loopback_ipv4()
        if address is not None:
            public = await http.post(
                f"http://{address}:{emu.http_port}/api/v1/auth/session",
                headers=creds(emu),
            )
            assert public.status_code == 200
            with pytest.raises(ConnectionRefusedError):  # nothing listens there
                await asyncio.open_connection(address, emu.admin_port)


async def test_admin_stats_and_ledger(emu: Emulator, http: httpx.AsyncClient) -> None:
    """/admin/stats and /admin/ledger report what a client actually received."""
    token = await new_session(emu, http)
    async with open_stream(emu, token) as ws:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout=5))
    first_seqs = seqs_of(frame)
    await eventually(lambda: emu.stats()["open_connections"] == 0)
    stats = (await http.get(f"{emu.admin_url}/stats")).json()
    ledger = (await http.get(f"{emu.admin_url}/ledger")).json()
    one = (await http.get(f"{emu.admin_url}/ledger", params={"conn": 1})).json()
    assert stats["sessions"]["issued"] == 1
    assert stats["generated"] >= stats["written"]["unique"] >= len(first_seqs)
    assert stats["connections"][0]["session_id"] not in token
    assert token not in orjson.dumps(stats).decode()
    assert ledger["ok"] is True
    assert ledger["ranges"][0][0] == min(first_seqs)
    assert ledger["count"] == stats["written"]["unique"]
    assert one["ranges"] == ledger["ranges"]


async def test_admin_stream_faults_over_http(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """The fault endpoints deliver odd frames, then drop the socket (1006)."""
    async with make_emulator(start_paused=True) as emu:
        token = await new_session(emu, http)
        async with open_stream(emu, token, max_size=None) as ws:
            async with asyncio.timeout(5):
                await emu.wait_for_connections(1)
            base = emu.admin_url
            malformed = await http.post(f"{base}/faults/malformed")
            unknown = await http.post(f"{base}/faults/unknown", params={"conn": 1})
            oversize = await http.post(
                f"{base}/faults/oversize", params={"bytes": 4096}
            )
            assert [r.json()["affected"] for r in (malformed, unknown, oversize)] == [
                1,
                1,
                1,
            ]
            frames = [await asyncio.wait_for(ws.recv(), timeout=5) for _ in range(4)]
            assert len(frames[3]) > 4096
            dropped = await http.post(f"{base}/faults/drop")
            assert dropped.json() == {"ok": True, "affected": 1}
            with pytest.raises(ConnectionClosedError) as info:
                await asyncio.wait_for(ws.recv(), timeout=5)
            assert info.value.rcvd is None
        none_left = await http.post(f"{base}/faults/half-open")
        assert none_left.json()["affected"] == 0


async def test_admin_session_faults_and_expiry(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """/admin/faults/session arms failures; /admin/sessions/expire ends sessions."""
    base = emu.admin_url
    token = await new_session(emu, http)
    armed = await http.post(f"{base}/faults/session", json={"mode": "5xx", "count": 1})
    assert armed.json() == {"ok": True, "mode": "5xx", "count": 1}
    url = f"{emu.base_url}/auth/session"
    assert (await http.post(url, headers=creds(emu))).status_code == 503
    await http.post(f"{base}/faults/session", json={"mode": "429", "count": 5})
    await http.post(f"{base}/faults/session", json={"mode": "off"})
    assert (await http.post(url, headers=creds(emu))).status_code == 200
    async with open_stream(emu, token) as ws:
        async with asyncio.timeout(5):
            await emu.wait_for_connections(1)
        expired = await http.post(f"{base}/sessions/expire")
        assert expired.json() == {"ok": True, "closed": 1}
        with pytest.raises(ConnectionClosedError) as info:
            async for _ in ws:
                pass
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4001


async def test_admin_fleet_controls(emu: Emulator, http: httpx.AsyncClient) -> None:
    """POST /admin/fleet pauses, resumes and re-rates generation."""
    base = emu.admin_url
    paused = await http.post(f"{base}/fleet", json={"paused": True})
    assert paused.json()["fleet"]["paused"] is True
    before = emu.generated_count
    await asyncio.sleep(0.7)
    assert emu.generated_count == before
    rerated = await http.post(
        f"{base}/fleet",
        json={"paused": False, "max_frames_per_second": 0, "frame_items": 3},
    )
    assert rerated.json()["fleet"] == {
        "paused": False,
        "max_frames_per_second": None,
        "frame_items": 3,
        "devices": 10,
    }
    token = await new_session(emu, http)
    async with open_stream(emu, token) as ws:
        frames = [orjson.loads(await ws.recv()) for _ in range(200)]
    assert len(seqs_of(frames[-1])) in (3, 4)  # a burst may add one trailing event


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/nope", {}, 404),
        ("GET", "/faults/drop", {}, 404),
        ("POST", "/faults/oversize", {"params": {"bytes": "big"}}, 400),
        ("POST", "/faults/oversize", {"params": {"bytes": 0}}, 400),
        ("POST", "/faults/session", {"json": {"mode": "teapot"}}, 400),
        ("POST", "/faults/session", {"json": {"mode": "5xx", "count": -1}}, 400),
        ("POST", "/faults/session", {"content": b"not json"}, 400),
        ("POST", "/fleet", {"json": {"max_frames_per_second": "fast"}}, 400),
        ("POST", "/fleet", {"json": {"paused": "yes"}}, 400),
    ],
)
async def test_admin_rejects_bad_requests(
    emu: Emulator,
    http: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
) -> None:
    """Unknown endpoints are 404 and invalid parameters 400, with an error message."""
    resp = await http.request(method, f"{emu.admin_url}{path}", **kwargs)  # type: ignore[arg-type]
    assert resp.status_code == status
    assert resp.json()["ok"] is False
