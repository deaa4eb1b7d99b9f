"""The emulated REST API over real HTTP: sessions, errors, lockout, tracker reads."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from datetime import datetime

import httpx
import orjson
import pytest

from bridgelab.emulator import Emulator
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import creds, eventually

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _payload(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    decoded = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert isinstance(decoded, dict)
    return decoded


@pytest.mark.parametrize("camel", [False, True], ids=["app_id", "appId"])
async def test_session_issued_with_either_header_spelling(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient, camel: bool
) -> None:
    """Both credential spellings get a JWT whose payload and expiry match the docs."""
    async with make_emulator(session_ttl_seconds=3) as emu:
        before = time.time()
        resp = await http.post(
            f"{emu.base_url}/auth/session", headers=creds(emu, camel=camel)
        )
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] is True
    assert body["message"] == "Session successfully generated"
    token, expires_at = body["data"]["session"], body["data"]["expiresAt"]
    payload = _payload(token)
    assert set(payload) == {"sub", "iat", "exp"}
    assert payload["sub"] == {
        "appId": emu.config.app_id,
        "appSecret": emu.config.app_secret,
    }
    iat, exp = payload["iat"], payload["exp"]
    assert isinstance(iat, int)
    assert isinstance(exp, int)
    assert exp - iat == 3
    assert ISO_MS.match(expires_at)
    precise = datetime.fromisoformat(expires_at).timestamp()
    assert before + 3 <= precise + 0.001 <= time.time() + 3 + 0.002
    assert int(precise) == exp  # exp is the floor of the precise expiry


async def test_default_ttl_is_six_hours(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Without configuration a session lasts 21600 s, as documented."""
    resp = await http.post(f"{emu.base_url}/auth/session", headers=creds(emu))
    payload = _payload(resp.json()["data"]["session"])
    exp, iat = payload["exp"], payload["iat"]
    assert isinstance(exp, int)
    assert isinstance(iat, int)
    assert exp - iat == 21_600


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"app_id": "demo-app", "app_secret": "wrong"},
        {"appId": "nope", "appSecret": "DEMO0SECRET0NOT0FOR0PRODUCTION00"},
    ],
    ids=["missing", "bad-secret", "bad-id"],
)
async def test_bad_credentials_get_401_long_envelope(
    emu: Emulator, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Missing or wrong credentials get the documented long-form 401 body."""
    resp = await http.post(f"{emu.base_url}/auth/session", headers=headers)
    assert resp.status_code == 401
    assert resp.json() == {
        "status": False,
        "message": "Invalid app_id or app_secret",
        "data": {
            "statusCode": 401,
            "message": "Invalid app_id or app_secret",
            "isOperational": True,
        },
    }
    assert emu.stats()["auth"]["failures"] == 1


async def test_strict_source_header(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """With strict_source_header the x-sendstack-source header is required."""
    async with make_emulator(strict_source_header=True) as emu:
        url = f"{emu.base_url}/auth/session"
        without = await http.post(url, headers=creds(emu))
        with_it = await http.post(
            url, headers={**creds(emu), "x-sendstack-source": "control.sendstack"}
        )
    assert without.status_code == 401
    assert with_it.status_code == 200


async def test_lockout_after_threshold_until_window_passes(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """20 failures bring 429 (even for good credentials) until the window slides."""
    async with make_emulator(lockout_window_seconds=1.0) as emu:
        url = f"{emu.base_url}/auth/session"
        bad = {"app_id": emu.config.app_id, "app_secret": "wrong"}
        codes = [(await http.post(url, headers=bad)).status_code for _ in range(20)]
        last_failure = time.monotonic()
        assert codes == [401] * 20
        locked = await http.post(url, headers=creds(emu))
        assert locked.status_code == 429
        assert locked.json()["status"] is False
        assert locked.json()["data"]["statusCode"] == 429
        assert int(locked.headers["retry-after"]) >= 1
        # Still locked on the REST reads too, and 429s are not failures.
        reads = await http.get(f"{emu.base_url}/tracker/devices", headers=creds(emu))
        assert reads.status_code == 429
        await asyncio.sleep(max(0.0, last_failure + 1.05 - time.monotonic()))
        unlocked = await http.post(url, headers=creds(emu))
        assert unlocked.status_code == 200
        auth = emu.stats()["auth"]
    assert auth == {"failures": 20, "lockouts": 1, "rejected_429": 2}


async def test_session_fault_5xx_then_recovers(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """An armed 5xx fault fails the next N session calls, then they succeed."""
    emu.set_session_fault("5xx", count=2)
    url = f"{emu.base_url}/auth/session"
    codes = [(await http.post(url, headers=creds(emu))).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert emu.stats()["faults"]["session"]["5xx"] == 2
    assert emu.stats()["sessions"]["issued"] == 1


async def test_session_fault_429_has_retry_after(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """An armed 429 fault answers 429 with Retry-After and no session."""
    emu.set_session_fault("429", count=1)
    url = f"{emu.base_url}/auth/session"
    first = await http.post(url, headers=creds(emu))
    second = await http.post(url, headers=creds(emu))
    assert first.status_code == 429
    assert first.headers["retry-after"] == "1"
    assert first.json()["status"] is False
    assert second.status_code == 200


async def test_session_fault_drop_executes_then_drops(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """The drop fault issues the session but closes the connection with no reply."""
    emu.set_session_fault("drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(f"{emu.base_url}/auth/session", headers=creds(emu))
    assert emu.stats()["sessions"]["issued"] == 1


async def test_unknown_route_and_wrong_method(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Unknown paths get a short-form 404; a GET on the session path gets 405."""
    missing = await http.get(f"{emu.base_url}/nope", headers=creds(emu))
    wrong = await http.get(f"{emu.base_url}/auth/session", headers=creds(emu))
    assert missing.status_code == 404
    assert missing.json() == {"status": False, "message": "Route not found"}
    assert wrong.status_code == 405


async def test_tracker_reads(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Devices, latest positions and bounded history are served in the envelope."""
    async with make_emulator(
        devices=4, max_frames_per_second=20, report_interval_seconds=0.05
    ) as emu:
        h = creds(emu)
        await eventually(lambda: len(emu.fleet.latest_positions()) == 4)
        await asyncio.sleep(0.4)
        devices = (await http.get(f"{emu.base_url}/tracker/devices", headers=h)).json()
        positions = (
            await http.get(f"{emu.base_url}/tracker/positions", headers=h)
        ).json()
        hist_url = f"{emu.base_url}/tracker/positions/history"
        full = (await http.get(hist_url, params={"deviceId": 1}, headers=h)).json()
        assert devices["status"] is True
        assert devices["data"]["totalCount"] == 4
        assert [d["id"] for d in devices["data"]["devices"]] == [1, 2, 3, 4]
        assert {"name", "uniqueId", "status", "lastUpdate", "positionId"} <= set(
            devices["data"]["devices"][0]
        )
        latest = positions["data"]["positions"]
        assert sorted(p["deviceId"] for p in latest) == [1, 2, 3, 4]
        history = full["data"]["positions"]
        assert len(history) >= 2
        assert all(p["deviceId"] == 1 for p in history)
        middle = history[len(history) // 2]["fixTime"]
        since = (
            await http.get(hist_url, params={"deviceId": 1, "from": middle}, headers=h)
        ).json()["data"]["positions"]
        assert since
        assert all(p["fixTime"] >= middle for p in since)
        assert len(since) < len(history)
        until = (
            await http.get(hist_url, params={"deviceId": 1, "to": middle}, headers=h)
        ).json()["data"]["positions"]
        assert all(p["fixTime"] <= middle for p in until)


async def test_tracker_read_errors(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Reads need credentials; history validates deviceId and dates."""
    hist_url = f"{emu.base_url}/tracker/positions/history"
    h = creds(emu)
    no_auth = await http.get(f"{emu.base_url}/tracker/devices")
    missing = await http.get(hist_url, headers=h)
    bad_id = await http.get(hist_url, params={"deviceId": "x"}, headers=h)
    unknown = await http.get(hist_url, params={"deviceId": 999}, headers=h)
    bad_date = await http.get(
        hist_url, params={"deviceId": 1, "from": "yesterday"}, headers=h
    )
    assert no_auth.status_code == 401
    assert no_auth.json()["message"] == "Invalid app_id or app_secret"
    assert missing.status_code == 400
    assert missing.json() == {"status": False, "message": '"deviceId" is required'}
    assert bad_id.status_code == 400
    assert unknown.status_code == 404
    assert bad_date.status_code == 400
