"""The command line, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from bridge.core.mapping import MAPPING_REJECTION_REASONS
from bridge.metrics import DLQ_REASONS, StreamMetrics


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "bridge", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_config_lists_every_problem_and_exits_2() -> None:
    """A bad configuration names each problem at once and exits with code 2."""
    result = run_cli(
        "check-config",
        env={"BRIDGE_STREAM_PING_INTERVAL_SECONDS": "abc", "BRIDGE_LOG_LEVL": "info"},
    )
    assert result.returncode == 2
    assert "BRIDGE_SENDSTACK_APP_ID" in result.stderr
    assert "BRIDGE_KAFKA_BOOTSTRAP_SERVERS" in result.stderr
    assert "BRIDGE_STREAM_PING_INTERVAL_SECONDS" in result.stderr
    assert "BRIDGE_LOG_LEVEL" in result.stderr  # the "did you mean" hint


def test_check_config_prints_a_valid_configuration_with_the_secret_redacted() -> None:
    """A valid configuration prints and exits 0, never showing the secret."""
    result = run_cli(
        "check-config",
        env={
            "BRIDGE_SENDSTACK_APP_ID": "7302915",
            "BRIDGE_SENDSTACK_APP_SECRET": "ZK4P0QW7TRV2M9XBC81LJ6DHS5NA3EYU",
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "7302915" in result.stdout
    assert "ZK4P0QW7TRV2M9XBC81LJ6DHS5NA3EYU" not in result.stdout + result.stderr
    assert "***" in result.stdout


def test_check_config_reads_the_accounts_directory(tmp_path: Path) -> None:
    """check-config lists the accounts in partition order (no secret shown),
    and a broken accounts directory exits 2 naming the problem."""
    good = tmp_path / "good" / "beta"
    good.mkdir(parents=True)
    (good / "app_id").write_text("app-beta\n")
    (good / "app_secret").write_text("S3CRET-OF-BETA\n")
    env = {
        "BRIDGE_SENDSTACK_APP_ID": "app-main",
        "BRIDGE_SENDSTACK_APP_SECRET": "S3CRET-OF-MAIN",
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "BRIDGE_HA_ACCOUNT": "main",
        "BRIDGE_STREAM_ACCOUNTS_DIR": str(tmp_path / "good"),
    }
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "  0  main  app_id app-main" in result.stdout
    assert "  1  beta  app_id app-beta" in result.stdout
    assert "S3CRET" not in result.stdout + result.stderr
    (tmp_path / "bad" / "gamma").mkdir(parents=True)
    env["BRIDGE_STREAM_ACCOUNTS_DIR"] = str(tmp_path / "bad")
    result = run_cli("check-config", env=env)
    assert result.returncode == 2
    assert "gamma/app_id: required, missing or empty" in result.stderr


def test_stream_with_a_bad_configuration_exits_2_without_starting() -> None:
    """`stream` refuses to start on an invalid configuration."""
    result = run_cli("stream", env={})
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr


def test_every_codec_rejection_reason_has_its_own_metric_label() -> None:
    """Dead-letter reasons from the codec are pre-created label values, not 'other'."""
    registry = CollectorRegistry()
    StreamMetrics(registry)
    assert set(MAPPING_REJECTION_REASONS) <= set(DLQ_REASONS)
    for reason in MAPPING_REJECTION_REASONS:
        value = registry.get_sample_value(
            "bridge_records_dead_lettered_total", {"origin": "stream", "reason": reason}
        )
        assert value == 0.0


def test_the_daemons_collect_rarely_and_never_traverse_start_up_objects() -> None:
    """tune_collector freezes what start-up built and raises the young
    generation's threshold to GC_THRESHOLDS (checked in a fresh interpreter,
    as it changes the whole process)."""
    code = (
        "import gc; from bridge.bootstrap import GC_THRESHOLDS, tune_collector;"
        "before = gc.get_freeze_count(); tune_collector();"
        "print(gc.get_threshold() == GC_THRESHOLDS, gc.get_freeze_count() > before,"
        " GC_THRESHOLDS[0] > 700)"
    )
    out = subprocess.run(  # noqa: S603 - fixed code, our interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True", "True"]
