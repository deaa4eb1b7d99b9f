"""The command catalogue: one entry per command type.

Each :class:`~bridge.core.command_catalogue.CommandType` below is the whole
definition of a type: payload spec, Sendstack call, ordering key,
repeatable/query flags, reconcile read and example. Everything else
(validation, ``to_request``, ordering, ``bridge/schemas/commands/`` and the
type table in ``docs/commands.md``) is derived from these entries; to add a
type, add an entry here (``docs/adding-a-command-type.md``) and re-render::

    .venv/bin/python -m tests.core.test_commands

What Sendstack does not document is our contract, stated as such:
``book_delivery`` must carry ``externalOrderId``. Fetch Deliveries filters by
it (api doc §14.8) but New Booking does not list it (§14.6); we send it as a
top-level body field so that a booking whose reply was lost can be found
again (``GET /deliveries?externalOrderId=...``) instead of booked twice.
"""

from __future__ import annotations

from typing import Final

from bridge.core.command_catalogue import (
    Catalogue,
    CommandType,
    MethodOption,
    Reconcile,
)
from bridge.core.command_specs import (
    PRINTABLE_128,
    Arr,
    Bool,
    Coordinate,
    Num,
    Obj,
    Rule,
    Spec,
    Str,
    code,
    day,
    drop_ids,
    sendstack_id,
    text,
)

__all__ = ["CATALOGUE"]

_COUNTRY: Final = r"^[A-Z]{2}$"
_LOCAL_DATE_TIME: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
_EVENT_TYPE: Final = r"^[A-Z][A-Z0-9_]{0,63}$"
_DROP_ID: Final = "6650aa10bc12de34f0a1b2c1"  # in the examples

# --------------------------------------------------------------------------
# Payload parts shared by several types

# api doc §11: an address plus one way of locating it.
_LOCATORS: Final = (("locationCode",), ("lat", "long"), ("country", "city"))
_LOCATORS_TEXT: Final = "a locationCode, lat and long, or country and city"


def _location_fields() -> dict[str, Spec]:
    return {
        "address": text("Street address."),
        "address2": text("Second address line."),
        "locationCode": Str(
            "Code from Get Mapped Locations (§14.2).",
            pattern=r"^[A-Za-z0-9_-]{1,32}$",
            pattern_text="1 to 32 letters, digits, '_' or '-'",
            max_length=32,
        ),
        "lat": Coordinate("Latitude (a number, or a decimal string).", 90),
        "long": Coordinate("Longitude (a number, or a decimal string).", 180),
        "city": text("City (with country, for nationwide/international)."),
        "state": text("State."),
        "country": Str(
            "ISO 3166-1 alpha-2 country code, e.g. NG.",
            pattern=_COUNTRY,
            pattern_text="a 2-letter upper-case country code",
            max_length=2,
        ),
        "postalCode": text("Postal code.", 32),
    }


_PICKUP = Obj(
    {
        **_location_fields(),
        "pickupName": text("Who hands the parcel over."),
        "pickupNumber": text("Their phone number.", 32),
        "altPickupNumber": text("Another phone number.", 32),
        "pickupEmail": text("Their e-mail address.", 254),
        "pickupDate": day("Pickup date, YYYY-MM-DD."),
        "note": text("Note for the rider.", 2000),
    },
    required=("address", "pickupName", "pickupNumber"),
    description=(
        "Where to collect (§14.6). Unknown keys are passed on: they are the "
        "dashboard's custom fields, e.g. pickup_house_number."
    ),
    extra=True,
    any_of=_LOCATORS,
    groups_text=_LOCATORS_TEXT,
)

_DROP = Obj(
    {
        **_location_fields(),
        "recipientName": text("Who receives the parcel."),
        "recipientNumber": text("Their phone number.", 32),
        "altRecipientNumber": text("Another phone number.", 32),
        "note": text("Note for the rider.", 2000),
        "assignedPartner": sendstack_id("Partner id from a price estimate offer."),
        "podAmount": Num("Pay on Delivery amount (§13).", minimum=0),
    },
    required=("address",),
    description=(
        "One drop-off (§14.6). Unknown keys are passed on: they are the "
        "dashboard's custom fields, e.g. dropoff_house_number."
    ),
    extra=True,
    any_of=_LOCATORS,
    groups_text=_LOCATORS_TEXT,
)

_ORDER_TYPE = Str(
    "PROCESSING (current docs) or FULFILLMENT (legacy).",
    enum=("PROCESSING", "FULFILLMENT"),
)

_WINDOW = Obj(
    {
        name: Str(
            f"{name}, 'YYYY-MM-DD HH:mm:ss'.",
            pattern=_LOCAL_DATE_TIME,
            pattern_text="'YYYY-MM-DD HH:mm:ss'",
            max_length=19,
        )
        for name in ("date", "start", "end")
    },
    required=("date", "start", "end"),
    description="A window (§14.13).",
)

_MEDIUM = Obj(
    {
        "channel": Str("Notification channel.", enum=("email", "sms", "inApp")),
        "isEnabled": Bool("Whether this channel is used."),
        "defaultEmail": Arr(text("An e-mail address.", 254), min_items=0),
        "defaultPhone": Arr(text("A phone number.", 32), min_items=0),
    },
    required=("channel", "isEnabled"),
)


# --------------------------------------------------------------------------
# The catalogue, in the order of docs/commands.md

CATALOGUE: Final = Catalogue(
    CommandType(
        name="book_delivery",
        title="New Booking",
        section="§14.6",
        method="POST",
        path="/deliveries",
        ordering=("externalOrderId",),
        reconcile=Reconcile(path="/deliveries", by="externalOrderId"),
        spec=Obj(
            {
                "externalOrderId": Str(
                    "Your order id. Required by OUR contract (not by Sendstack): "
                    "it is sent to Sendstack and lets the bridge find a booking "
                    "whose reply was lost instead of booking twice.",
                    pattern=PRINTABLE_128,
                    pattern_text="1 to 128 printable characters",
                    max_length=128,
                ),
                "orderType": _ORDER_TYPE,
                "pickup": _PICKUP,
                "drops": Arr(_DROP, "The drop-offs, at least one."),
                "bookingName": text("Customer name (§14.6)."),
                "bookingPhone": text("Customer phone.", 32),
                "bookingEmail": text("Customer e-mail.", 254),
                "customerId": text("Legacy customer id.", 64),
                "paymentSource": text(
                    "Legacy: 'self' (wallet) or a phone for a payment link.", 32
                ),
            },
            required=("externalOrderId", "orderType", "pickup", "drops"),
        ),
        example={
            "externalOrderId": "ORD-1001",
            "orderType": "PROCESSING",
            "bookingName": "Ops Desk",
            "bookingPhone": "08020000001",
            "pickup": {
                "address": "12, Bode Thomas Street, Surulere",
                "locationCode": "K9PZ",
                "pickupName": "Adaeze",
                "pickupNumber": "08031234567",
                "pickupDate": "2025-06-17",
                "pickup_house_number": 12,
            },
            "drops": [
                {
                    "recipientName": "Femi",
                    "recipientNumber": "09055550123",
                    "address": "3, Awolowo Road, Ikoyi",
                    "locationCode": "R4QN",
                    "podAmount": 15000,
                }
            ],
        },
    ),
    CommandType(
        name="price_estimate",
        title="Get Delivery Price Estimate",
        section="§14.4",
        method="POST",
        path="/deliveries/offers",
        query=True,
        repeatable=True,
        spec=Obj(
            {
                "orderType": _ORDER_TYPE,
                "pickup": Obj(
                    {**_location_fields(), "pickupDate": day("YYYY-MM-DD.")},
                    required=("address",),
                    any_of=_LOCATORS,
                    groups_text=_LOCATORS_TEXT,
                ),
                "drop": Obj(
                    {
                        **_location_fields(),
                        "category": text("Parcel category.", 64),
                        "width": Num("cm", exclusive_minimum=0),
                        "length": Num("cm", exclusive_minimum=0),
                        "height": Num("cm", exclusive_minimum=0),
                        "weight": Num("kg", exclusive_minimum=0),
                    },
                    required=("address",),
                    any_of=_LOCATORS,
                    groups_text=_LOCATORS_TEXT,
                ),
            },
            required=("pickup", "drop"),
        ),
        example={
            "orderType": "PROCESSING",
            "pickup": {
                "pickupDate": "2025-06-17",
                "locationCode": "K9PZ",
                "address": "12, Bode Thomas Street, Surulere",
            },
            "drop": {
                "locationCode": "R4QN",
                "address": "3, Awolowo Road, Ikoyi",
                "category": "Documents",
                "weight": 1,
            },
        },
    ),
    CommandType(
        name="generate_pod_account",
        title="Generate POD account number",
        section="§14.7",
        method="POST",
        path="/drops/payOnDelivery",
        ordering=("dropId",),
        spec=Obj(
            {"dropId": sendstack_id("The drop to collect payment for.")},
            required=("dropId",),
        ),
        example={"dropId": _DROP_ID},
    ),
    CommandType(
        name="update_delivery",
        title="Update Delivery Details",
        section="§14.9",
        method="PUT",
        path="/deliveries/drops/{dropId}",
        note="at least one field besides dropId",
        ordering=("dropId",),
        repeatable=True,
        spec=Obj(
            {
                "dropId": sendstack_id("The drop to update (goes in the path)."),
                "address": text("New address."),
                "recipientName": text("New recipient name."),
                "recipientNumber": text("New recipient phone.", 32),
                "altRecipientNumber": text("New alternative phone.", 32),
                "note": text("New note.", 2000),
                "locationCode": Str(
                    "New location code.",
                    pattern=r"^[A-Za-z0-9_-]{1,32}$",
                    pattern_text="1 to 32 letters, digits, '_' or '-'",
                    max_length=32,
                ),
            },
            required=("dropId",),
            any_of=tuple(
                (name,)
                for name in (
                    "address",
                    "recipientName",
                    "recipientNumber",
                    "altRecipientNumber",
                    "note",
                    "locationCode",
                )
            ),
            groups_text="at least one field to update",
        ),
        example={
            "dropId": _DROP_ID,
            "recipientNumber": "09055550124",
            "note": "Call on arrival",
        },
    ),
    CommandType(
        name="cancel_drops",
        title="Cancel Drops",
        section="§14.11",
        method="POST",
        path="/drops/cancel",
        ordering=("dropIds",),
        spec=Obj(
            {
                "dropIds": drop_ids("The drops to cancel."),
                "trackingId": code("Tracking id (optional, passed on)."),
                "batchId": code("Batch id (optional, passed on)."),
                "note": text("Why.", 2000),
            },
            required=("dropIds",),
        ),
        example={
            "dropIds": [_DROP_ID],
            "batchId": "Q2WX7L",
            "note": "customer changed plans",
        },
    ),
    CommandType(
        name="reschedule_delivery",
        title="Reschedule Delivery",
        section="§14.12",
        method="POST",
        path="/deliveries/{deliveryId}/reschedule",
        ordering=("deliveryId",),
        repeatable=True,
        spec=Obj(
            {
                "deliveryId": sendstack_id("The booking (goes in the path)."),
                "pickupDate": day("New pickup date, YYYY-MM-DD."),
            },
            required=("deliveryId", "pickupDate"),
        ),
        example={
            "deliveryId": "6650aa10bc12de34f0a1b2c3",
            "pickupDate": "2025-06-18",
        },
    ),
    CommandType(
        name="update_delivery_window",
        title="Update Delivery Window",
        section="§14.13",
        method="POST",
        path="/drops/updateDeliveryWindow",
        ordering=("dropIds",),
        repeatable=True,
        spec=Obj(
            {
                "estimatedPickupWindow": _WINDOW,
                "estimatedDropoffWindow": _WINDOW,
                "user": sendstack_id("Your CTRL business id."),
                "dropIds": drop_ids(),
                "pickupDate": day("YYYY-MM-DD."),
            },
            required=("estimatedPickupWindow", "estimatedDropoffWindow", "dropIds"),
        ),
        example={
            "estimatedPickupWindow": {
                "date": "2025-06-18 00:00:00",
                "start": "2025-06-18 08:00:00",
                "end": "2025-06-18 12:00:00",
            },
            "estimatedDropoffWindow": {
                "date": "2025-06-18 00:00:00",
                "start": "2025-06-18 12:00:00",
                "end": "2025-06-18 17:00:00",
            },
            "dropIds": [_DROP_ID],
            "pickupDate": "2025-06-18",
        },
    ),
    CommandType(
        name="assign_drop",
        title="Assign Drop",
        section="§14.14",
        # The docs' heading says GET, the sample POST (§17.4); with GET the
        # JSON body is sent all the same.
        method="POST",
        method_option=MethodOption(
            "assign_method", "BRIDGE_COMMANDS_ASSIGN_METHOD", ("POST", "GET")
        ),
        path="/drops/assign",
        ordering=("dropIds",),
        repeatable=True,
        spec=Obj(
            {
                "partnerId": sendstack_id("The partner to assign."),
                "dropIds": drop_ids(),
            },
            required=("partnerId", "dropIds"),
        ),
        example={
            "partnerId": "6650a0aa77bc12de34f09911",
            "dropIds": [_DROP_ID],
        },
    ),
    CommandType(
        name="add_private_note",
        title="Add Private Note",
        section="§14.17",
        method="POST",
        path="/drops/internalNotes",
        ordering=("dropIds",),
        spec=Obj(
            {"dropIds": drop_ids(), "note": text("The note.", 2000)},
            required=("dropIds", "note"),
        ),
        example={"dropIds": [_DROP_ID], "note": "Fragile: glass"},
    ),
    CommandType(
        name="create_tracker_event",
        title="Create tracker event",
        section="§15.3",
        method="POST",
        path="/tracker/event",
        ordering=("trackerId",),
        spec=Obj(
            {
                "trackerId": sendstack_id("The tracker."),
                "eventType": Str(
                    "OVER_SPEEDING_WARNING, NO_MOVEMENT_ALERT or GEOFENCE_OUT "
                    "(documented); other upper-case names are passed on.",
                    pattern=_EVENT_TYPE,
                    pattern_text="an UPPER_SNAKE_CASE event type",
                    max_length=64,
                ),
                "eventConfig": Obj(
                    {
                        "speedLimit": Num("km/h (overspeed).", exclusive_minimum=0),
                        "minimumParkingDuration": Num(
                            "Minutes (no movement).", exclusive_minimum=0
                        ),
                    },
                    extra=True,
                ),
                "geofenceIds": Arr(sendstack_id("A geofence id."), "Geofences."),
                "eventNotification": Obj(
                    {
                        "acceptedMediums": Arr(_MEDIUM, min_items=0, max_items=10),
                        "status": Str(
                            "active or inactive.", enum=("active", "inactive")
                        ),
                    }
                ),
            },
            required=("trackerId", "eventType"),
            rules=(
                Rule(
                    "eventType",
                    ("OVER_SPEEDING_WARNING",),
                    Obj(
                        {"eventConfig": Obj({}, required=("speedLimit",), extra=True)},
                        required=("eventConfig",),
                        extra=True,
                    ),
                ),
                Rule(
                    "eventType",
                    ("NO_MOVEMENT_ALERT",),
                    Obj(
                        {
                            "eventConfig": Obj(
                                {}, required=("minimumParkingDuration",), extra=True
                            )
                        },
                        required=("eventConfig",),
                        extra=True,
                    ),
                ),
                Rule(
                    "eventType",
                    ("GEOFENCE_OUT", "GEOFENCE_IN"),
                    Obj({}, required=("geofenceIds",), extra=True),
                ),
            ),
        ),
        example={
            "trackerId": "6651bb20cd34ef56a1b2c3d4",
            "eventType": "OVER_SPEEDING_WARNING",
            "eventConfig": {"speedLimit": 80},
            "eventNotification": {
                "acceptedMediums": [
                    {
                        "channel": "email",
                        "isEnabled": True,
                        "defaultEmail": ["fleet@example.invalid"],
                    },
                    {"channel": "inApp", "isEnabled": False},
                ],
                "status": "active",
            },
        },
    ),
    CommandType(
        name="track_delivery",
        title="Track Delivery Status",
        section="§14.15",
        method="GET",
        path="/deliveries/track",
        params=("batchId", "trackingId"),
        body=False,
        note="exactly one of batchId and trackingId",
        ordering=("batchId", "trackingId"),
        query=True,
        repeatable=True,
        spec=Obj(
            {
                "batchId": code("The booking's batch id."),
                "trackingId": code("One drop's tracking id."),
            },
            one_of=(("batchId",), ("trackingId",)),
            groups_text="batchId or trackingId",
        ),
        example={"batchId": "Q2WX7L"},
    ),
    CommandType(
        name="fetch_deliveries",
        title="Fetch Deliveries",
        section="§14.8",
        method="GET",
        path="/deliveries",
        params=(
            "batchId",
            "trackingId",
            "externalOrderId",
            "customer",
            "page",
            "limit",
        ),
        body=False,
        note="every filter is optional",
        ordering=("batchId", "trackingId", "externalOrderId"),
        query=True,
        repeatable=True,
        spec=Obj(
            {
                "batchId": code("Filter: batch id."),
                "trackingId": code("Filter: tracking id."),
                "externalOrderId": Str(
                    "Filter: your order id.",
                    pattern=PRINTABLE_128,
                    pattern_text="1 to 128 printable characters",
                    max_length=128,
                ),
                "customer": text("Filter: customer.", 128),
                "page": Num("1-based page.", integer=True, minimum=1),
                "limit": Num("Page size.", integer=True, minimum=1, maximum=1000),
            },
        ),
        example={"externalOrderId": "ORD-1001", "page": 1, "limit": 15},
    ),
    CommandType(
        name="wallet_balance",
        title="Get Wallet Balance",
        section="§14.1",
        method="GET",
        path="/wallet/balance",
        body=False,
        query=True,
        repeatable=True,
        spec=Obj({}),
        example={},
    ),
)
