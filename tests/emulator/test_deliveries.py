"""The emulated delivery endpoints over real HTTP: replies, errors, faults, records."""

from __future__ import annotations

import asyncio
import copy
import re
import time
from typing import Any

import httpx
import orjson
import pytest

from bridge.core.commands import EXAMPLES
from bridgelab.emulator import Emulator
from bridgelab.emulator.deliveries import KINDS, PARTNERS
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import creds

HEX24 = re.compile(r"^[0-9a-f]{24}$")
CODE6 = re.compile(r"^[A-Z0-9]{6}$")
PARTNER = PARTNERS[0]["id"]

# The contract's booking example (api doc §14.6 plus externalOrderId).
BOOKING: dict[str, Any] = copy.deepcopy(dict(EXAMPLES["book_delivery"]))
BOOKING["externalOrderId"] = "ORD-1"
BOOKING["drops"][0]["dropoff_house_number"] = 3


def hdrs(emu: Emulator, key: str | None = None) -> dict[str, str]:
    """Credentials, plus an Idempotency-Key when given."""
    out = creds(emu)
    if key is not None:
        out["Idempotency-Key"] = key
    return out


def booking(**changes: Any) -> dict[str, Any]:
    """A copy of BOOKING with top-level changes (None deletes a key)."""
    body = copy.deepcopy(BOOKING)
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


async def book(
    emu: Emulator, http: httpx.AsyncClient, key: str | None = None, **changes: Any
) -> dict[str, Any]:
    """Book through the real endpoint and return the created delivery."""
    resp = await http.post(
        f"{emu.base_url}/deliveries", json=booking(**changes), headers=hdrs(emu, key)
    )
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


def short(message: str) -> dict[str, Any]:
    """The short error form of api doc §3."""
    return {"status": False, "message": message}


# --------------------------------------------------------------------------
# Bookings


async def test_booking_creates_a_delivery_with_documented_ids(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """New Booking answers the created delivery with 24-hex ids and 6-char codes."""
    two = booking(
        drops=[BOOKING["drops"][0], {"address": "x", "lat": 6.4, "long": 3.3}]
    )
    resp = await http.post(f"{emu.base_url}/deliveries", json=two, headers=hdrs(emu))
    assert resp.status_code == 201
    body = resp.json()
    assert (body["status"], body["message"]) == (True, "Delivery created successfully")
    data = body["data"]
    assert HEX24.match(data["id"])
    assert CODE6.match(data["batchId"])
    assert data["trackingUrl"].endswith(f"?batchId={data['batchId']}")
    assert "externalOrderId" not in data  # the documented reply has no such field
    assert data["totalAmount"] == 2 * emu.config.drop_price
    assert data["pickup"]["pickupDate"] == "2025-06-17T00:00:00.000Z"
    assert len(data["drops"]) == 2
    first = data["drops"][0]
    assert HEX24.match(first["id"])
    assert CODE6.match(first["trackingId"])
    assert first["trackingId"] != data["batchId"]
    assert (first["deliveryId"], first["batchId"]) == (data["id"], data["batchId"])
    assert (first["status"], first["podPaymentStatus"]) == ("PENDING", "PENDING")
    assert first["customFields"] == {
        "pickup": {"pickup_house_number": 12},
        "drop": {"dropoff_house_number": 3},
    }
    assert (
        emu.deliveries.store.balance == emu.config.wallet_balance - data["totalAmount"]
    )


async def test_booking_with_a_partner_is_assigned(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """A drop booked with assignedPartner starts ASSIGNED to that partner."""
    drop = {**BOOKING["drops"][0], "assignedPartner": PARTNER}
    data = await book(emu, http, drops=[drop])
    assert data["drops"][0]["status"] == "ASSIGNED"
    assert data["drops"][0]["assignedTo"]["deliveryCompanyId"] == PARTNER


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pickup": None}, '"pickup" is required'),
        ({"drops": None}, '"drops" is required'),
        ({"orderType": None}, '"orderType" is required'),
        ({"drops": []}, '"drops" must contain at least 1 items'),
        (
            {"pickup": {**BOOKING["pickup"], "address": None}},
            '"pickup.address" is required',
        ),
        ({"drops": [{"address": "x"}]}, '"drops[0]" must contain locationCode'),
        (
            {"drops": [{"address": "x", "locationCode": "R", "assignedPartner": "n"}]},
            "Invalid partnerId",
        ),
    ],
)
async def test_booking_validation_errors_use_the_short_form(
    emu: Emulator, http: httpx.AsyncClient, change: dict[str, Any], message: str
) -> None:
    """A bad booking gets 400 in the short error form and books nothing."""
    body = booking(**change)
    if "pickup" in change and change["pickup"] is not None:
        body["pickup"] = {k: v for k, v in change["pickup"].items() if v is not None}
    resp = await http.post(
        f"{emu.base_url}/deliveries", json=body, headers=hdrs(emu, "k")
    )
    assert resp.status_code == 400
    assert resp.json()["status"] is False
    assert resp.json()["message"].startswith(message)
    assert set(resp.json()) == {"status", "message"}
    assert emu.executions("k") == 0
    assert emu.deliveries.store.deliveries == {}


async def test_low_wallet_balance_is_422(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """A booking costing more than the wallet holds gets 422 and books nothing."""
    async with make_emulator(wallet_balance=1000.0) as emu:
        resp = await http.post(
            f"{emu.base_url}/deliveries", json=booking(), headers=hdrs(emu, "k")
        )
        assert (resp.status_code, resp.json()) == (422, short("Low wallet balance"))
        assert emu.executions("k") == 0
        assert emu.deliveries.store.balance == 1000.0
        emu.deliveries.set_wallet_balance(emu.config.drop_price)
        assert (await book(emu, http))["totalAmount"] == emu.config.drop_price
        balance = await http.get(f"{emu.base_url}/wallet/balance", headers=hdrs(emu))
        assert balance.json()["data"]["balance"] == 0


async def test_payment_link_bookings_skip_the_wallet(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """paymentSource = a phone number books without touching the wallet (§13)."""
    async with make_emulator(wallet_balance=0.0) as emu:
        data = await book(emu, http, paymentSource="08020000001")
        assert data["paymentStatus"] == "PENDING"
        assert emu.deliveries.store.balance == 0.0


# --------------------------------------------------------------------------
# Reads


async def test_fetch_deliveries_filters_and_pages(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Fetch Deliveries lists drops newest first, filtered by each documented key."""
    one = await book(emu, http, externalOrderId="A")
    two = await book(emu, http, externalOrderId="B", bookingName="Zed")
    url = f"{emu.base_url}/deliveries"

    async def ids(**params: Any) -> list[str]:
        resp = await http.get(url, params=params, headers=hdrs(emu))
        assert resp.status_code == 200, resp.text
        assert resp.json()["message"] == "Deliveries successfully retrieved"
        return [d["id"] for d in resp.json()["data"]["drops"]]

    first, second = one["drops"][0]["id"], two["drops"][0]["id"]
    assert await ids() == [second, first]
    assert await ids(externalOrderId="A") == [first]
    assert await ids(externalOrderId="C") == []
    assert await ids(batchId=two["batchId"]) == [second]
    assert await ids(trackingId=one["drops"][0]["trackingId"]) == [first]
    assert await ids(customer="Zed") == [second]
    assert await ids(page=2, limit=1) == [first]
    listed = await http.get(url, params={"externalOrderId": "A"}, headers=hdrs(emu))
    drop = listed.json()["data"]["drops"][0]
    assert "externalOrderId" not in drop  # filtered by it, not echoed (§14.8)
    assert (drop["deliveryId"], drop["pickupName"]) == (one["id"], "Adaeze")
    assert listed.json()["data"]["totalCount"] == 1
    bad = await http.get(url, params={"page": "x"}, headers=hdrs(emu))
    assert (bad.status_code, bad.json()) == (400, short('"page" must be a number'))


async def test_track_by_batch_or_tracking_id(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Track Delivery Status finds the booking by either code; 400/404 otherwise."""
    data = await book(emu, http)
    url = f"{emu.base_url}/deliveries/track"
    for params in (
        {"batchId": data["batchId"]},
        {"trackingId": data["drops"][0]["trackingId"]},
    ):
        resp = await http.get(url, params=params, headers=hdrs(emu))
        assert resp.status_code == 200
        body = resp.json()
        assert body["message"] == "Deliveries successfully retrieved"
        assert body["data"]["id"] == data["id"]
        assert body["data"]["drops"][0]["statusTimestamps"][0]["status"] == "PENDING"
    missing = await http.get(url, headers=hdrs(emu))
    assert (missing.status_code, missing.json()) == (
        400,
        short('"batchId" or "trackingId" is required'),
    )
    unknown = await http.get(url, params={"batchId": "NOPE00"}, headers=hdrs(emu))
    assert (unknown.status_code, unknown.json()) == (404, short("Delivery not found"))


async def test_wallet_transactions_and_locations(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Wallet reads show bookings' debits; locations come per country (§14.1-2)."""
    await book(emu, http)
    tx = await http.get(f"{emu.base_url}/wallet/transactions", headers=hdrs(emu))
    assert tx.status_code == 200
    assert tx.json()["data"]["totalCount"] == 1
    assert tx.json()["data"]["transactions"][0]["amount"] == emu.config.drop_price
    loc = await http.get(
        f"{emu.base_url}/locations", params={"country": "NG"}, headers=hdrs(emu)
    )
    assert loc.json()["message"] == "Locations fetched successfully"
    assert loc.json()["data"][0]["locals"][0]["locationCode"] == "K9PZ"
    bad = await http.get(f"{emu.base_url}/locations", headers=hdrs(emu))
    assert (bad.status_code, bad.json()) == (400, short('"country" is required'))


async def test_price_estimate_offers_and_long_form_error(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Estimates list partner offers; a bad request gets the long form (§3, §14.4)."""
    url = f"{emu.base_url}/deliveries/offers"
    place = {"address": "x", "locationCode": "K9PZ"}
    resp = await http.post(
        url, json={"pickup": place, "drop": {**place, "weight": 2}}, headers=hdrs(emu)
    )
    assert resp.status_code == 200
    assert resp.json()["message"] == "Available Delivery Offers Returned"
    offers = resp.json()["data"]
    assert [o["id"] for o in offers] == [p["id"] for p in PARTNERS]
    assert offers[0]["scope"] == "intracity_scheduled"
    bad = await http.post(url, json={"pickup": place}, headers=hdrs(emu))
    assert bad.status_code == 400
    assert bad.json() == {
        "status": False,
        "message": '"drop" is required',
        "data": {"statusCode": 400, "message": '"drop" is required'},
    }


# --------------------------------------------------------------------------
# Changes


async def test_update_delivery_details(emu: Emulator, http: httpx.AsyncClient) -> None:
    """PUT /deliveries/drops/:id changes the given fields and answers the drop."""
    drop_id = (await book(emu, http))["drops"][0]["id"]
    url = f"{emu.base_url}/deliveries/drops/{drop_id}"
    resp = await http.put(url, json={"note": "Gate 2"}, headers=hdrs(emu))
    assert resp.status_code == 200
    assert resp.json()["message"] == "Delivery updated successfully"
    assert resp.json()["data"]["note"] == "Gate 2"
    for body, message in (
        ({}, '"value" must have at least 1 key'),
        ({"colour": "red"}, '"colour" is not allowed'),
        ({"note": 5}, '"note" must be a string'),
    ):
        bad = await http.put(url, json=body, headers=hdrs(emu))
        assert (bad.status_code, bad.json()) == (400, short(message))
    unknown = await http.put(
        f"{emu.base_url}/deliveries/drops/{'0' * 24}",
        json={"note": "x"},
        headers=hdrs(emu),
    )
    assert (unknown.status_code, unknown.json()) == (400, short("Invalid dropId"))


async def test_cancel_drops(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Cancel Drops marks drops CANCELLED; unknown ids get "Invalid dropId"."""
    data = await book(emu, http)
    url = f"{emu.base_url}/drops/cancel"
    drop_id = data["drops"][0]["id"]
    resp = await http.post(
        url, json={"dropIds": [drop_id], "note": "changed plans"}, headers=hdrs(emu)
    )
    assert (resp.status_code, resp.json()) == (
        200,
        {"status": True, "message": "Deliveries cancelled", "data": {}},
    )
    assert emu.deliveries.store.drops[drop_id]["status"] == "CANCELLED"
    for body, message in (
        ({}, '"dropIds" is required'),
        ({"dropIds": [drop_id, "f" * 24]}, "Invalid dropId"),
    ):
        bad = await http.post(url, json=body, headers=hdrs(emu))
        assert (bad.status_code, bad.json()) == (400, short(message))


async def test_reschedule_delivery(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Reschedule moves the pickup date; bad dates and ids are 400."""
    data = await book(emu, http)
    url = f"{emu.base_url}/deliveries/{data['id']}/reschedule"
    resp = await http.post(url, json={"pickupDate": "2025-06-20"}, headers=hdrs(emu))
    assert resp.status_code == 200
    assert resp.json()["message"] == "Rescheduled delivery"
    assert resp.json()["data"]["pickup"]["pickupDate"] == "2025-06-20T00:00:00.000Z"
    for target, body, message in (
        (url, {}, '"pickupDate" is required'),
        (
            url,
            {"pickupDate": "20/06/2025"},
            '"pickupDate" must be in YYYY-MM-DD format',
        ),
        (
            f"{emu.base_url}/deliveries/{'a' * 24}/reschedule",
            {"pickupDate": "2025-06-20"},
            "Invalid deliveryId",
        ),
    ):
        bad = await http.post(target, json=body, headers=hdrs(emu))
        assert (bad.status_code, bad.json()) == (400, short(message))


async def test_update_delivery_window(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Update Delivery Window sets both windows and lists the drops it changed."""
    drop = (await book(emu, http))["drops"][0]
    window = {
        "date": "2025-06-18 00:00:00",
        "start": "2025-06-18 08:00:00",
        "end": "2025-06-18 12:00:00",
    }
    body = {
        "estimatedPickupWindow": window,
        "estimatedDropoffWindow": window,
        "dropIds": [drop["id"]],
    }
    url = f"{emu.base_url}/drops/updateDeliveryWindow"
    resp = await http.post(url, json=body, headers=hdrs(emu))
    assert resp.status_code == 200
    assert resp.json()["message"] == "Delivery window updated"
    assert resp.json()["data"] == [
        {
            "id": drop["id"],
            "status": "PENDING",
            "paymentStatus": "PAID",
            "trackingId": drop["trackingId"],
        }
    ]
    bad = await http.post(
        url, json={**body, "estimatedDropoffWindow": None}, headers=hdrs(emu)
    )
    assert bad.status_code == 400
    odd = await http.post(
        url,
        json={**body, "estimatedPickupWindow": {**window, "end": "noon"}},
        headers=hdrs(emu),
    )
    assert odd.json() == short(
        '"estimatedPickupWindow.end" must be in YYYY-MM-DD HH:mm:ss format'
    )


@pytest.mark.parametrize("how", ["POST", "GET-body", "GET-query"])
async def test_assign_drop_accepts_get_and_post(
    emu: Emulator, http: httpx.AsyncClient, how: str
) -> None:
    """Assign Drop works as POST and as GET (the docs show both, §17.4)."""
    drop_id = (await book(emu, http))["drops"][0]["id"]
    url = f"{emu.base_url}/drops/assign"
    body = {"partnerId": PARTNER, "dropIds": [drop_id]}
    if how == "POST":
        resp = await http.post(url, json=body, headers=hdrs(emu))
    elif how == "GET-body":
        resp = await http.request(
            "GET", url, content=orjson.dumps(body), headers=hdrs(emu)
        )
    else:
        resp = await http.get(
            url, params={"partnerId": PARTNER, "dropIds": drop_id}, headers=hdrs(emu)
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["message"] == "Drop assigned successfully"
    assert resp.json()["data"][0]["status"] == "ASSIGNED"
    bad = await http.post(
        url, json={"partnerId": "nobody", "dropIds": [drop_id]}, headers=hdrs(emu)
    )
    assert (bad.status_code, bad.json()) == (400, short("Invalid partnerId"))


async def test_add_private_note(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Private notes are stored; this endpoint says "Invalid drop Id" (§17.11)."""
    drop_id = (await book(emu, http))["drops"][0]["id"]
    url = f"{emu.base_url}/drops/internalNotes"
    resp = await http.post(
        url, json={"dropIds": [drop_id], "note": "Fragile"}, headers=hdrs(emu)
    )
    assert resp.json() == {
        "status": True,
        "message": "Note added successfully",
        "data": {},
    }
    assert emu.deliveries.store.drops[drop_id]["internalNotes"][0]["note"] == "Fragile"
    for body, message in (
        ({"dropIds": [drop_id]}, '"note" is required'),
        ({"dropIds": ["b" * 24], "note": "x"}, "Invalid drop Id"),
    ):
        bad = await http.post(url, json=body, headers=hdrs(emu))
        assert (bad.status_code, bad.json()) == (400, short(message))


async def test_generate_pod_account_has_an_empty_reply(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Generate POD answers 200 with an empty body, as documented (§14.7)."""
    drop_id = (await book(emu, http))["drops"][0]["id"]
    url = f"{emu.base_url}/drops/payOnDelivery"
    resp = await http.post(url, json={"dropId": drop_id}, headers=hdrs(emu))
    assert (resp.status_code, resp.content) == (200, b"")
    assert "accountNumber" in emu.deliveries.store.drops[drop_id]["podAccount"]
    bad = await http.post(url, json={"dropId": "c" * 24}, headers=hdrs(emu))
    assert (bad.status_code, bad.json()) == (400, short("Invalid dropId"))


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"eventType": "OVER_SPEEDING_WARNING", "eventConfig": {"speedLimit": 80}},
            200,
            "Tracker event successfully created",
        ),
        (
            {"eventType": "OVER_SPEEDING_WARNING"},
            400,
            '"eventConfig.speedLimit" is required',
        ),
        (
            {"eventType": "NO_MOVEMENT_ALERT", "eventConfig": {"speedLimit": 1}},
            400,
            '"eventConfig.minimumParkingDuration" is required',
        ),
        ({"eventType": "GEOFENCE_OUT"}, 400, '"geofenceIds" is required'),
        (
            {"eventType": "GEOFENCE_OUT", "geofenceIds": ["g1"]},
            200,
            "Tracker event successfully created",
        ),
        ({}, 400, '"eventType" is required'),
    ],
)
async def test_create_tracker_event(
    emu: Emulator,
    http: httpx.AsyncClient,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    """Tracker events need the config of their type (§15.3)."""
    resp = await http.post(
        f"{emu.base_url}/tracker/event",
        json={"trackerId": "6651bb20cd34ef56a1b2c3d4", **body},
        headers=hdrs(emu),
    )
    assert (resp.status_code, resp.json()["message"]) == (status, message)
    assert len(emu.deliveries.store.tracker_events) == (status == 200)


BAD_REQUESTS: list[tuple[str, str, object, str]] = [
    # (method, path, JSON body or raw bytes, message of the short 400)
    ("POST", "/deliveries", b"{", "Invalid JSON payload"),
    ("POST", "/deliveries", [1], '"value" must be of type object'),
    ("POST", "/deliveries", booking(pickup="x"), '"pickup" must be of type object'),
    (
        "POST",
        "/deliveries",
        booking(pickup={"address": "a", "pickupName": "n", "pickupNumber": "1"}),
        '"pickup" must contain locationCode, lat and long, or country and city',
    ),
    (
        "POST",
        "/deliveries",
        booking(pickup={**BOOKING["pickup"], "pickupDate": "17/06/2025"}),
        '"pickup.pickupDate" must be in YYYY-MM-DD format',
    ),
    ("POST", "/deliveries", booking(drops=["x"]), '"drops[0]" must be of type object'),
    (
        "POST",
        "/deliveries",
        booking(drops=[{"locationCode": "R4QN"}]),
        '"drops[0].address" is required',
    ),
    ("POST", "/drops/payOnDelivery", {}, '"dropId" is required'),
    (
        "POST",
        "/drops/cancel",
        {"dropIds": "x"},
        '"dropIds" must be a non-empty array of strings',
    ),
    ("POST", "/drops/assign", {"dropIds": ["a"]}, '"partnerId" is required'),
    ("POST", "/drops/internalNotes", {"note": "x"}, '"dropIds" is required'),
    (
        "POST",
        "/drops/internalNotes",
        {"dropIds": ["a"], "note": 5},
        '"note" must be a non-empty string',
    ),
    (
        "POST",
        "/drops/updateDeliveryWindow",
        {"dropIds": ["a"]},
        '"estimatedPickupWindow" is required',
    ),
    (
        "POST",
        "/tracker/event",
        {"trackerId": "t", "eventType": "X", "eventConfig": 5},
        '"eventConfig" must be of type object',
    ),
    ("GET", "/deliveries?page=0", None, '"page" must be greater than or equal to 1'),
    ("GET", "/deliveries?limit=5000", None, '"limit" must be between 1 and 1000'),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), BAD_REQUESTS)
async def test_validation_errors_are_short_form_400s(
    emu: Emulator,
    http: httpx.AsyncClient,
    method: str,
    path: str,
    body: object,
    message: str,
) -> None:
    """Each malformed request gets 400 with its Joi-style message, executing nothing."""
    raw = body if isinstance(body, bytes) else None
    resp = await http.request(
        method,
        f"{emu.base_url}{path}",
        content=raw,
        json=None if raw is not None or body is None else body,
        headers=hdrs(emu, "bad"),
    )
    assert (resp.status_code, resp.json()) == (400, short(message))
    assert emu.executions("bad") == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pickup": "x", "drop": {}}, '"pickup" must be of type object'),
        ({"pickup": {}, "drop": {}}, '"pickup.address" is required'),
        (
            {"pickup": {"address": "a", "locationCode": "K"}, "drop": {"address": "b"}},
            '"drop" must contain locationCode, lat and long, or country and city',
        ),
    ],
)
async def test_estimate_validation_uses_the_long_form(
    emu: Emulator, http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    """Every estimate 400 has data.statusCode and no isOperational (§3)."""
    resp = await http.post(
        f"{emu.base_url}/deliveries/offers", json=body, headers=hdrs(emu)
    )
    assert resp.status_code == 400
    assert resp.json() == {
        "status": False,
        "message": message,
        "data": {"statusCode": 400, "message": message},
    }


# --------------------------------------------------------------------------
# Credentials and routing


async def test_bad_credentials_are_401_long_form_and_lock_out(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Wrong app credentials get the long 401 and count toward the 429 lockout."""
    async with make_emulator(lockout_threshold=3) as emu:
        url = f"{emu.base_url}/wallet/balance"
        wrong = {"app_id": emu.config.app_id, "app_secret": "nope"}
        for _ in range(3):
            resp = await http.get(url, headers=wrong)
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
        locked = await http.get(url, headers=hdrs(emu))
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0
        assert emu.stats()["auth"]["lockouts"] == 1


async def test_unknown_paths_and_methods(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Unknown paths stay 404 and a known path with another method is 405."""
    missing = await http.get(f"{emu.base_url}/drops/unknown", headers=hdrs(emu))
    assert (missing.status_code, missing.json()) == (404, short("Route not found"))
    outside = await http.get(f"http://127.0.0.1:{emu.http_port}/deliveries")
    assert outside.status_code == 404
    wrong = await http.delete(f"{emu.base_url}/deliveries", headers=hdrs(emu))
    assert (wrong.status_code, wrong.json()) == (
        405,
        short("Method DELETE not allowed"),
    )


# --------------------------------------------------------------------------
# Recording and idempotency


async def test_every_request_is_recorded_and_not_deduped(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Two bookings with one Idempotency-Key both execute: no dedupe by default."""
    first = await book(emu, http, key="cmd-7")
    second = await book(emu, http, key="cmd-7")
    assert first["id"] != second["id"]
    assert emu.executions("cmd-7") == 2
    assert emu.executions("other") == 0
    records = emu.deliveries.requests("cmd-7")
    assert [(r.method, r.path, r.kind, r.executed, r.status) for r in records] == [
        ("POST", "/deliveries", "book_delivery", True, 201),
        ("POST", "/deliveries", "book_delivery", True, 201),
    ]
    assert records[0].body_sha256 == records[1].body_sha256
    resp = await http.get(f"{emu.admin_url}/requests", params={"key": "cmd-7"})
    body = resp.json()
    assert (body["executions"], body["count"]) == (2, 2)
    assert body["requests"][0]["idempotencyKey"] == "cmd-7"
    assert re.fullmatch(r"[0-9a-f]{64}", body["requests"][0]["bodySha256"])
    everything = await http.get(f"{emu.admin_url}/requests")
    assert everything.json()["executions"] is None
    assert everything.json()["count"] == 2


async def test_honouring_the_idempotency_key_replays_the_first_reply(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """With honour_idempotency_key a repeat gets the first reply and books nothing."""
    async with make_emulator(honour_idempotency_key=True) as emu:
        first = await book(emu, http, key="cmd-8")
        again = await book(emu, http, key="cmd-8")
        assert again == first
        assert emu.executions("cmd-8") == 1
        assert len(emu.deliveries.store.deliveries) == 1
        assert [r.fault for r in emu.deliveries.requests("cmd-8")] == [None, "replayed"]


# --------------------------------------------------------------------------
# Faults


async def test_latency_delays_every_delivery_endpoint(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """A configured latency holds each reply at least that long."""
    async with make_emulator(delivery_latency_ms=120.0) as emu:
        start = time.perf_counter()
        await http.get(f"{emu.base_url}/wallet/balance", headers=hdrs(emu))
        assert time.perf_counter() - start >= 0.12
        emu.deliveries.set_latency(0)
        start = time.perf_counter()
        await http.get(f"{emu.base_url}/wallet/balance", headers=hdrs(emu))
        assert time.perf_counter() - start < 0.12


async def test_fail_next_answers_without_executing(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """The next N requests get the status and take no effect; then it works."""
    emu.deliveries.fail_next(2, 503)
    emu.deliveries.fail_next(1, 429, retry_after=3)
    url = f"{emu.base_url}/deliveries"
    statuses = []
    for _ in range(4):
        resp = await http.post(url, json=booking(), headers=hdrs(emu, "k"))
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert resp.headers["retry-after"] == "3"
    assert statuses == [503, 503, 429, 201]
    assert emu.executions("k") == 1
    assert [r.fault for r in emu.deliveries.requests("k")] == [
        "fail_next",
        "fail_next",
        "fail_next",
        None,
    ]


async def test_fail_next_with_a_client_error_status(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """A 4xx fault answers in the long form and executes nothing."""
    emu.deliveries.fail_next(1, 400, path="/wallet/balance")
    resp = await http.get(f"{emu.base_url}/wallet/balance", headers=hdrs(emu, "k"))
    assert resp.status_code == 400
    assert resp.json()["data"] == {
        "statusCode": 400,
        "message": "Request failed",
        "isOperational": True,
    }
    assert emu.executions("k") == 0


async def test_fail_next_scoped_to_a_kind_and_after_execution(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """A kind-scoped fault spares other endpoints; execute=True fails after acting."""
    emu.deliveries.fail_next(1, 500, kind="book_delivery", execute=True)
    wallet = await http.get(f"{emu.base_url}/wallet/balance", headers=hdrs(emu))
    assert wallet.status_code == 200
    resp = await http.post(
        f"{emu.base_url}/deliveries", json=booking(), headers=hdrs(emu, "k")
    )
    assert resp.status_code == 500
    assert resp.json()["data"]["statusCode"] == 500
    assert emu.executions("k") == 1
    assert len(emu.deliveries.store.deliveries) == 1


async def test_always_fails_one_kind_until_lifted(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """always(503) for reschedules fails each one, other kinds work, None lifts it."""
    data = await book(emu, http)
    url = f"{emu.base_url}/deliveries/{data['id']}/reschedule"
    emu.deliveries.always(503, kind="reschedule_delivery")
    for _ in range(3):
        resp = await http.post(
            url, json={"pickupDate": "2025-06-20"}, headers=hdrs(emu)
        )
        assert resp.status_code == 503
    assert (await book(emu, http))["id"]
    emu.deliveries.always(None, kind="reschedule_delivery")
    ok = await http.post(url, json={"pickupDate": "2025-06-20"}, headers=hdrs(emu))
    assert ok.status_code == 200
    emu.deliveries.always(500, path="/deliveries/{id}/reschedule")
    by_path = await http.post(url, json={"pickupDate": "2025-06-21"}, headers=hdrs(emu))
    assert by_path.status_code == 500


async def test_execute_then_drop_acts_but_never_answers(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """The request takes effect, then the connection drops with no reply."""
    emu.deliveries.execute_then_drop(1, kind="book_delivery")
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(
            f"{emu.base_url}/deliveries", json=booking(), headers=hdrs(emu, "k")
        )
    assert emu.executions("k") == 1
    (record,) = emu.deliveries.requests("k")
    assert (record.executed, record.status, record.fault) == (
        True,
        None,
        "execute_then_drop",
    )
    found = await http.get(
        f"{emu.base_url}/deliveries",
        params={"externalOrderId": "ORD-1"},
        headers=hdrs(emu),
    )
    assert len(found.json()["data"]["drops"]) == 1


async def test_echo_mode_shows_external_order_id_in_replies(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """With echo on, bookings and Fetch Deliveries carry externalOrderId."""
    async with make_emulator(echo_external_order_id=True) as emu:
        made = await book(emu, http, externalOrderId="E-1")
        listed = await http.get(
            f"{emu.base_url}/deliveries",
            params={"externalOrderId": "E-1"},
            headers=hdrs(emu),
        )
    assert made["externalOrderId"] == "E-1"
    assert made["drops"][0]["externalOrderId"] == "E-1"
    assert [d["externalOrderId"] for d in listed.json()["data"]["drops"]] == ["E-1"]


async def test_complete_late_executes_after_the_client_gave_up(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """A late booking is not there when the client times out, and lands after."""
    emu.deliveries.complete_late(1, 0.6, kind="book_delivery")
    with pytest.raises(httpx.ReadTimeout):
        await http.post(
            f"{emu.base_url}/deliveries",
            json=booking(),
            headers=hdrs(emu, "late"),
            timeout=0.2,
        )
    assert emu.executions("late") == 0
    found = await http.get(
        f"{emu.base_url}/deliveries",
        params={"externalOrderId": "ORD-1"},
        headers=hdrs(emu),
    )
    assert found.json()["data"]["drops"] == []
    await asyncio.sleep(0.7)
    assert emu.executions("late") == 1
    (record,) = emu.deliveries.requests("late")
    assert (record.executed, record.fault) == (True, "complete_late")


async def test_reject_credentials_counts_toward_lockout(
    make_emulator: EmulatorFactory, http: httpx.AsyncClient
) -> None:
    """Refused credentials answer 401 with good headers, then the lockout's 429."""
    async with make_emulator(lockout_threshold=2) as emu:
        emu.deliveries.reject_credentials()
        url = f"{emu.base_url}/wallet/balance"
        codes = [(await http.get(url, headers=hdrs(emu))).status_code for _ in range(3)]
        assert codes == [401, 401, 429]
        assert emu.limiter.failures_total == 2


async def test_clear_faults_lifts_everything(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """clear_faults restores normal service."""
    emu.deliveries.fail_next(5, 503)
    emu.deliveries.always(500, kind="wallet_balance")
    emu.deliveries.reject_credentials()
    emu.deliveries.clear_faults()
    resp = await http.get(f"{emu.base_url}/wallet/balance", headers=hdrs(emu))
    assert resp.status_code == 200
    assert emu.deliveries.stats()["faults"]["served"] == {}


def test_fault_arguments_are_checked(emu: Emulator) -> None:
    """Bad fault arguments raise instead of arming something odd."""
    api = emu.deliveries
    with pytest.raises(ValueError, match="4xx or 5xx"):
        api.fail_next(1, 200)
    with pytest.raises(ValueError, match="kind must be one of"):
        api.fail_next(1, 503, kind="teleport")
    with pytest.raises(ValueError, match="needs a kind or a path"):
        api.always(503)
    with pytest.raises(ValueError, match="latency"):
        api.set_latency(-1)
    with pytest.raises(ValueError, match="n must be"):
        api.fail_next(-1)
    with pytest.raises(ValueError, match="n must be"):
        api.execute_then_drop(-1)
    with pytest.raises(ValueError, match="finite"):
        api.set_wallet_balance(float("inf"))
    with pytest.raises(TypeError, match="integer"):
        api.always(True, kind="locations")  # type: ignore[arg-type]
    assert "book_delivery" in KINDS


# --------------------------------------------------------------------------
# Admin API


async def test_admin_endpoints_drive_the_same_faults(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Every delivery fault and setting is reachable over the admin API."""
    admin = emu.admin_url

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await http.post(f"{admin}{path}", json=body)
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        return out

    await post("/deliveries/wallet", {"balance": 5000})
    assert emu.deliveries.store.balance == 5000
    await post("/faults/deliveries/latency", {"ms": 1})
    faults = (await post("/faults/deliveries/fail-next", {"count": 1, "status": 429}))[
        "faults"
    ]
    assert faults["fail_next"][0]["status"] == 429
    await post("/faults/deliveries/always", {"status": 503, "kind": "track_delivery"})
    dropped = await http.post(f"{admin}/faults/deliveries/execute-then-drop")
    assert dropped.status_code == 200  # no body: count 1, any kind
    await post("/faults/deliveries/reject-credentials", {"on": False})
    overview = (await http.get(f"{admin}/deliveries")).json()
    assert overview["faults"]["latency_ms"] == 1
    assert overview["faults"]["always"][0]["kind"] == "track_delivery"
    assert overview["faults"]["execute_then_drop"][0]["remaining"] == 1
    assert (
        await http.get(f"{emu.base_url}/wallet/balance", headers=hdrs(emu))
    ).status_code == 429
    cleared = await http.post(f"{admin}/faults/deliveries/clear")  # no body at all
    assert cleared.status_code == 200
    assert emu.deliveries.stats()["faults"]["always"] == []
    assert emu.stats()["deliveries"]["wallet_balance"] == 5000


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/deliveries/wallet", {}, "balance is required"),
        ("/deliveries/wallet", {"balance": "lots"}, "balance must be a number"),
        ("/faults/deliveries/fail-next", {"status": 200}, "4xx or 5xx"),
        ("/faults/deliveries/fail-next", {"count": -1}, "count must be"),
        ("/faults/deliveries/fail-next", {"execute": "yes"}, "execute must be"),
        ("/faults/deliveries/always", {"status": 503}, "needs a kind or a path"),
        ("/faults/deliveries/always", {"status": 503, "path": "x"}, "path must start"),
        ("/faults/deliveries/latency", {"ms": -5}, "latency"),
        ("/faults/deliveries/reject-credentials", {"on": 1}, "on must be a boolean"),
        ("/faults/deliveries/always", {"status": 503, "kind": 5}, "kind must be a"),
    ],
)
async def test_admin_rejects_bad_fault_requests(
    emu: Emulator, http: httpx.AsyncClient, path: str, body: dict[str, Any], error: str
) -> None:
    """Bad admin requests get 400 with the reason and arm nothing."""
    resp = await http.post(f"{emu.admin_url}{path}", json=body)
    assert resp.status_code == 400
    assert error in resp.json()["error"]
    for raw in (b"[1]", b"{"):
        not_json = await http.post(f"{emu.admin_url}{path}", content=raw)
        assert not_json.status_code == 400
