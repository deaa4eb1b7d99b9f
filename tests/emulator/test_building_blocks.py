"""The emulator's pure parts: JWT, lockout, ledger, config, fleet, faults."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import orjson
import pytest

from bridge.errors import ConfigError
from bridgelab.emulator import EmulatorConfig, jwt
from bridgelab.emulator.faults import SessionFaults
from bridgelab.emulator.fleet import EVENT_KINDS, Fleet, iso_ms, load_fixtures
from bridgelab.emulator.ledger import SeqLedger, merge_ranges, ranges_to_set
from bridgelab.emulator.sessions import FailureLimiter, SessionStore

KEY = b"k" * 32


def test_jwt_round_trip_and_compact_header() -> None:
    """A token decodes to its payload and has the docs' exact header segment."""
    payload = {"sub": {"appId": "1", "appSecret": "S"}, "iat": 100, "exp": 200}
    token = jwt.encode(payload, KEY)
    head = token.split(".")[0]
    assert base64.urlsafe_b64decode(head + "==") == b'{"alg":"HS256","typ":"JWT"}'
    assert jwt.decode(token, KEY, now=150) == payload


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: "garbage",
        lambda t: t.split(".")[0] + ".e30.",
        lambda t: "a.b.c",
    ],
)
def test_jwt_rejects_tampered_or_garbage_tokens(mangle: Callable[[str], str]) -> None:
    """A wrong signature or a non-JWT string raises JwtError."""
    token = jwt.encode({"exp": 10**10}, KEY)
    with pytest.raises(jwt.JwtError):
        jwt.decode(mangle(token), KEY)


def test_jwt_rejects_expired_and_foreign_key() -> None:
    """An expired token or one signed with another key is refused."""
    token = jwt.encode({"exp": 100}, KEY)
    with pytest.raises(jwt.JwtError, match="expired"):
        jwt.decode(token, KEY, now=100)
    with pytest.raises(jwt.JwtError, match="signature"):
        jwt.decode(token, b"other", verify_exp=False)


def test_session_store_single_session_replaces_older_sessions() -> None:
    """In single-session mode a newer token ends the older ones."""
    now = [1_000.0]
    store = SessionStore(KEY, 60, single_session=True, clock=lambda: now[0])
    first = store.issue("app", "secret")
    now[0] += 1.0
    second = store.issue("app", "secret")
    assert second.replaced == [first.session]
    assert store.lookup(first.token) == (None, "session replaced")
    assert store.lookup(second.token)[0] is second.session


def test_session_store_same_second_reissue_is_the_same_session() -> None:
    """Two issues in one second yield one token whose expiry moves to the later one."""
    now = [1_000.2]
    store = SessionStore(KEY, 10, clock=lambda: now[0])
    first = store.issue("app", "secret")
    now[0] = 1_000.7
    second = store.issue("app", "secret")
    assert first.token == second.token
    assert second.session.expires_at == pytest.approx(1_010.7)
    assert store.issued_count == 2


def test_failure_limiter_slides_and_releases() -> None:
    """N failures in the window lock a key out until the oldest one ages out."""
    now = [0.0]
    limiter = FailureLimiter(3, 10.0, clock=lambda: now[0])
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        assert limiter.retry_after("ip") is None
        limiter.record_failure("ip")
    assert limiter.retry_after("ip") == pytest.approx(8.0)
    assert limiter.retry_after("other") is None
    now[0] = 10.01
    assert limiter.retry_after("ip") is None
    assert (limiter.failures_total, limiter.lockouts_total) == (3, 1)


def test_ledger_keeps_contiguous_frames_as_one_range() -> None:
    """A million seqs in consecutive frames are one range; gaps start new ones."""
    ledger = SeqLedger()
    for first in range(1, 1_000_001, 10):
        ledger.add(first, first + 9)
    ledger.add(1_000_021, 1_000_030)
    assert ledger.ranges() == [(1, 1_000_000), (1_000_021, 1_000_030)]
    assert ledger.count == 1_000_010
    assert len(ledger.seqs()) == 1_000_010


def test_merge_ranges_unions_overlaps() -> None:
    """Overlapping and adjacent runs from several sockets merge into one list."""
    assert merge_ranges([(5, 9), (1, 3), (4, 4), (20, 21), (8, 12)]) == [
        (1, 12),
        (20, 21),
    ]
    assert ranges_to_set([(1, 3), (7, 7)]) == {1, 2, 3, 7}


def test_config_lists_every_problem() -> None:
    """Invalid settings are all reported at once as a ConfigError."""
    with pytest.raises(ConfigError) as info:
        EmulatorConfig(http_port=70_000, devices=0, ws_path="stream", events_ratio=2.0)
    assert len(info.value.problems) == 4


def test_iso_ms_format() -> None:
    """Timestamps are ISO-8601 UTC with milliseconds and Z."""
    assert iso_ms(1_749_927_941_207) == "2025-06-14T19:05:41.207Z"


def test_fleet_batches_are_contiguous_and_cover_all_event_kinds() -> None:
    """Bursts hold contiguous seqs; all six event kinds appear with the right types."""
    fleet = Fleet(
        load_fixtures(),
        devices=5,
        seed=3,
        events_ratio=0.5,
        status_ratio=0.05,
        clock=time.time,
    )
    types: set[str] = set()
    last = 0
    for _ in range(200):
        batch = fleet.burst(10)
        items = batch.positions + batch.devices + batch.events
        seqs = sorted(i["attributes"]["seq"] for i in items)
        assert seqs == list(range(batch.first_seq, batch.last_seq + 1))
        assert batch.first_seq == last + 1
        last = batch.last_seq
        types |= {e["type"] for e in batch.events}
        frame = orjson.loads(batch.encode(fleet.fixtures.frame_keys))
        assert set(frame) <= {"positions", "devices", "events"}
    assert types == {
        "deviceOverspeed",
        "alarm",
        "deviceStopped",
        "deviceInactive",
        "geofenceEnter",
        "geofenceExit",
    }
    assert len(EVENT_KINDS) == 6
    assert fleet.generated_count == last


def test_session_faults_count_down() -> None:
    """An armed session fault fires exactly ``count`` times, then turns off."""
    faults = SessionFaults()
    faults.set("5xx", 2, 502)
    assert [faults.take() for _ in range(3)] == ["5xx", "5xx", "off"]
    assert faults.status == 502
    with pytest.raises(ValueError, match="mode"):
        faults.set("teapot", 1, None)  # type: ignore[arg-type]
