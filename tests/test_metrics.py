"""Per-account intake metrics in one process registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import AccountLabelled, OutputMetrics


def test_each_accounts_intake_metrics_carry_its_account_label() -> None:
    """Two accounts' intake metrics show side by side in the process registry,
    each sample labelled with its account, beside the shared output metrics."""
    registry = CollectorRegistry()
    output = OutputMetrics(registry)
    labelled = AccountLabelled()
    registry.register(labelled)
    alpha, beta = labelled.add("alpha"), labelled.add("beta")
    alpha.ws_state.set(2)
    beta.ws_state.set(0)
    alpha.frames.labels("ok").inc(3)
    output.published.labels("position").inc(5)
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    states = {s.labels["account"]: s.value for s in families["bridge_ws_state"].samples}
    assert states == {"alpha": 2.0, "beta": 0.0}
    frames = {
        (s.labels["account"], s.labels["outcome"]): s.value
        for s in families["bridge_stream_frames"].samples
        if s.name == "bridge_stream_frames_total"
    }
    assert frames[("alpha", "ok")] == 3.0
    assert frames[("beta", "ok")] == 0.0
    published = families["bridge_records_published"].samples
    assert all("account" not in s.labels for s in published)
