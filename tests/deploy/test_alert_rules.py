"""The alert rules: promtool checks them and runs a unit test for every alert."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.observability import (
    ALERT_TESTS,
    ALERTS,
    RUNBOOK,
    alert_queries,
    alert_rules,
    metric_names,
    registry_metric_names,
    run_tool,
)

# What issue 5 asks for, by the alert that covers it.
REQUIRED_ALERTS = {
    "BridgeSessionNearExpiry",  # session near expiry without a rotation
    "BridgeReconnectStorm",
    "BridgeDeadLetters",
    "BridgeCommandErrorRatio",
    "BridgeCommandAmbiguous",  # issue 8: a command that may have taken effect
    "BridgeCommandConsumerLag",
    "BridgeNotReady",
    # The stream's durable journal.
    "BridgeJournalFilling",  # over 80% of BRIDGE_JOURNAL_MAX_BYTES
    "BridgeJournalNearlyFull",  # over 95%
    "BridgeJournalBacklogOld",  # Kafka not taking records for minutes
    "BridgeJournalDropping",  # when_full=drop_oldest lost records
    "BridgeJournalBlocked",  # when_full=block paused reading the socket
    "BridgeJournalCorrupt",  # corrupt entries or a quarantined file
    # The stream's hot standby (per account, over the replicas).
    "BridgeStreamNoLeader",  # no replica leads: nothing is published
    "BridgeStreamNoStandby",  # no ready standby while HA is meant
    "BridgeStreamTakeovers",  # leaders keep changing
    "BridgeStreamLeaderFenced",  # issue 12: fencing stopped a deposed leader
}


def test_promtool_check_rules_accepts_the_alerts_file() -> None:
    """``promtool check rules`` finds every rule of the file and no problem."""
    result = run_tool("promtool", "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """``promtool test rules`` passes every case of deploy/prometheus."""
    result = run_tool("promtool", "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _cases() -> list[dict[str, Any]]:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["../../helm/sendstack-bridge/files/alerts.yaml"]
    return [case for test in tests["tests"] for case in test["alert_rule_test"]]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """Each alert is tested both where it must fire and where it must not."""
    cases = _cases()
    for rule in alert_rules():
        own = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{rule['alert']} never fires"
        assert any(not case["exp_alerts"] for case in own), (
            f"{rule['alert']} has no case where it must stay quiet"
        )


def test_the_issue_s_alerts_exist_with_severity_and_text() -> None:
    """The issue's, the journal's and the standby's alerts exist, with their text."""
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert rule.get("for"), f"{rule['alert']} fires on a single evaluation"


def test_every_alert_has_a_runbook_section() -> None:
    """docs/runbook.md has a heading for each alert (the chart links to it)."""
    headings = {
        match.group(1)
        for match in re.finditer(r"^#+ +`?(\w+)`?\s*$", RUNBOOK.read_text(), re.M)
    }
    missing = {rule["alert"] for rule in alert_rules()} - headings
    assert not missing, f"no runbook section for {sorted(missing)}"


def test_alert_expressions_use_only_our_metric_names() -> None:
    """Every metric an alert selects is one the bridge defines."""
    known = registry_metric_names()
    for query in alert_queries():
        unknown = metric_names(query.expr) - known
        assert not unknown, (
            f"{query.where}: {sorted(unknown)} not defined by the bridge"
        )


def test_standby_alerts_are_per_account_over_the_replicas() -> None:
    """The BridgeStream* alerts drop instance and pod, and name job and account."""
    rules = [r for r in alert_rules() if r["alert"].startswith("BridgeStream")]
    assert len(rules) == 4
    for rule in rules:
        aggregations = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", rule["expr"])
        assert aggregations, rule["alert"]
        assert all(a.replace(" ", "") == "instance,pod" for a in aggregations), rule[
            "alert"
        ]
        description = rule["annotations"]["description"]
        assert "{{ $labels.account }}" in description, rule["alert"]
        assert "$labels.instance" not in description, rule["alert"]
