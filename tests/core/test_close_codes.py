"""The close-code classifier: one place decides what a websocket close means."""

from __future__ import annotations

import pytest

from bridge.core.close_codes import (
    CLOSE_REASONS,
    REAUTH_CLOSE_CODES,
    STALE_CLOSE_CODE,
    classify_close,
)


@pytest.mark.parametrize(
    ("code", "reason", "label", "reauth"),
    [
        (1000, "", "normal", False),
        (1001, "going away", "normal", False),
        (1006, "connection lost", "abnormal", False),
        (1009, "message too big", "too_big", False),
        (1011, "keepalive ping timeout", "keepalive_timeout", False),
        (1011, "internal error", "server_error", False),
        (1013, "try again later", "server_error", False),
        (STALE_CLOSE_CODE, "stale", "stale", False),
        (4001, "session expired", "session", True),
        (1008, "policy violation", "session", True),
        (4999, "", "other", False),
    ],
)
def test_each_close_gets_one_reason_and_a_reauth_decision(
    code: int, reason: str, label: str, reauth: bool
) -> None:
    """The label counted and logged, and whether a new session comes first."""
    verdict = classify_close(code, reason)
    assert (verdict.reason, verdict.reauth) == (label, reauth)


def test_every_reauth_code_and_every_label_is_known_to_the_metrics() -> None:
    """Reauth codes classify as 'session', and each label is pre-created."""
    assert all(classify_close(c, "").reason == "session" for c in REAUTH_CLOSE_CODES)
    labels = {
        classify_close(c, r).reason for c in range(999, 5000) for r in ("", "keepalive")
    }
    assert labels <= set(CLOSE_REASONS)
