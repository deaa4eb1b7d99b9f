"""The BRIDGE_* names the chart's values may set, and a refresher for its schema.

``values.schema.json`` lists, in ``definitions.config.propertyNames.enum``,
every variable a user may put under ``config`` or ``<component>.config``: all
of `bridge.config.KNOWN_VARIABLES` except credentials (they come from the
Secret), their ``*_FILE`` variants, the listeners, the stream's journal, hot
standby, session policy and accounts directory, which the chart sets itself.
``tests/deploy/test_helm_chart.py`` fails when the list drifts from
``bridge/config.py``; after adding or removing a variable there, run::

    .venv/bin/python -m tests.deploy.chart_schema
"""

from __future__ import annotations

import json

from bridge.config import CONFIG_FILE_VARIABLE, KNOWN_VARIABLES, VARIABLES
from tests.deploy.observability import CHART

SCHEMA = CHART / "values.schema.json"

# Variables the chart sets itself, from `ops.port`, `webhooks.port`,
# `stream.journal` (whose directory must be where the chart mounts the volume),
# `stream.ha` and `stream.singleSession` (checked against `stream.replicas`),
# `stream.accounts` (the mounted directory; its names suffix the HA group).
CHART_OWNED = frozenset(
    {
        "BRIDGE_OPS_HOST",
        "BRIDGE_OPS_PORT",
        "BRIDGE_WEBHOOK_HOST",
        "BRIDGE_WEBHOOK_PORT",
        "BRIDGE_JOURNAL_ENABLED",
        "BRIDGE_JOURNAL_DIR",
        "BRIDGE_JOURNAL_MAX_BYTES",
        "BRIDGE_JOURNAL_DURABILITY",
        "BRIDGE_JOURNAL_FLUSH_INTERVAL_MS",
        "BRIDGE_JOURNAL_WHEN_FULL",
        "BRIDGE_STREAM_SINGLE_SESSION",
        "BRIDGE_STREAM_ACCOUNTS_DIR",
        "BRIDGE_HA_ENABLED",
        "BRIDGE_HA_ACCOUNT",
        "BRIDGE_HA_COORDINATION_TOPIC",
        "BRIDGE_HA_GROUP_ID",
        "BRIDGE_HA_SESSION_TIMEOUT_MS",
        "BRIDGE_HA_HEARTBEAT_INTERVAL_MS",
        "BRIDGE_HA_BUFFER_SECONDS",
        "BRIDGE_HA_BUFFER_BYTES",
        "BRIDGE_HA_PROGRESS_INTERVAL_MS",
        "BRIDGE_HA_CATCH_UP_SECONDS",
        "BRIDGE_HA_TRANSACTIONAL_ID",
        "BRIDGE_HA_TRANSACTION_MS",
    }
)


def settable_variables() -> list[str]:
    """What ``config`` may hold, in the order of `bridge.config.VARIABLES`."""
    credentials = {v.name for v in VARIABLES if v.from_file or v.secret}
    files = {v.name + "_FILE" for v in VARIABLES if v.from_file}
    excluded = credentials | files | CHART_OWNED | {CONFIG_FILE_VARIABLE}
    order = [v.name for v in VARIABLES]
    return sorted(KNOWN_VARIABLES - excluded, key=order.index)


def main() -> None:
    """Rewrite the schema's list of settable variables from bridge/config.py."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    schema["definitions"]["config"]["propertyNames"]["enum"] = settable_variables()
    SCHEMA.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
