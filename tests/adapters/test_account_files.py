"""The accounts a stream reads from BRIDGE_STREAM_ACCOUNTS_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.adapters.account_files import Account, read_accounts
from bridge.core.records import Topics
from bridge.errors import ConfigError
from bridge.secrets import Secret

SHARED = Topics(
    positions="t.positions",
    device_status="t.status",
    events="t.events",
    dead_letter="t.dlq",
)
PRIMARY = Account(
    name="main", app_id="app-main", app_secret=Secret("s-main"), topics=SHARED
)


def _account(root: Path, name: str, **files: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    for key, value in files.items():
        (path / key).write_text(value)
    return path


def test_accounts_come_after_the_primary_in_name_order(tmp_path: Path) -> None:
    """The primary comes first, then the directory's accounts sorted by name,
    with trailing newlines dropped and the secret kept secret."""
    _account(tmp_path, "zulu", app_id="app-z\n", app_secret="s-z\n")
    _account(tmp_path, "alpha", app_id="app-a", app_secret="s-a")
    accounts = read_accounts(tmp_path, PRIMARY)
    assert [a.name for a in accounts] == ["main", "alpha", "zulu"]
    assert accounts[2].app_id == "app-z"
    assert accounts[2].app_secret == Secret("s-z")
    assert "s-z" not in repr(accounts[2])
    assert accounts[1].topics == SHARED
    assert accounts[1].source == "/sendstack/accounts/alpha/tracking"


def test_an_account_may_override_urls_and_topics(tmp_path: Path) -> None:
    """Optional files give an account its own URLs and topics; the rest stay shared."""
    _account(
        tmp_path,
        "beta",
        app_id="b",
        app_secret="sb",
        base_url="https://eu.example/api/v1\n",
        stream_url="wss://eu.example/ws",
        topic_positions="beta.positions",
    )
    (beta,) = read_accounts(tmp_path, PRIMARY)[1:]
    assert beta.base_url == "https://eu.example/api/v1"
    assert beta.stream_url == "wss://eu.example/ws"
    assert beta.topics == Topics(
        positions="beta.positions",
        device_status="t.status",
        events="t.events",
        dead_letter="t.dlq",
    )


def test_kubernetes_secret_links_are_skipped(tmp_path: Path) -> None:
    """A mounted Secret's ``..data`` entries are not taken for unknown files."""
    path = _account(tmp_path, "gamma", app_id="g", app_secret="sg")
    (path / "..data").mkdir()
    (path / "..2026_12_06").write_text("x")
    assert [a.name for a in read_accounts(tmp_path, PRIMARY)] == ["main", "gamma"]


def test_every_problem_is_listed_and_no_secret_shown(tmp_path: Path) -> None:
    """Missing credentials, an unknown file, a bad URL, a bad topic, a bad
    name, a name or app_id used twice: one ConfigError lists them all, and no
    file's secret content appears in it."""
    _account(tmp_path, "no-secret", app_id="x1")
    _account(tmp_path, "typo", app_id="x2", app_secret="hunter2", app_secrte="y")
    _account(tmp_path, "bad-url", app_id="x3", app_secret="s3", stream_url="http://h")
    _account(tmp_path, "bad-topic", app_id="x4", app_secret="s4", topic_events="a b")
    _account(tmp_path, "bad name", app_id="x5", app_secret="s5")
    _account(tmp_path, "main", app_id="x6", app_secret="s6")
    _account(tmp_path, "copy", app_id="app-main", app_secret="s7")
    (tmp_path / "stray.txt").write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        read_accounts(tmp_path, PRIMARY)
    text = str(caught.value)
    for expected in (
        "no-secret/app_secret: required",
        "typo/app_secrte: unknown file",
        "bad-url/stream_url: expected a ws:// or wss:// URL",
        "bad-topic/topic_events: expected a Kafka topic name",
        "bad name: expected an account name",
        "account 'main' is listed twice",
        "account 'copy': its app_id is another account's",
        "stray.txt: expected a directory per account",
    ):
        assert expected in text
    assert "hunter2" not in text


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    """A directory that does not exist says so, as a configuration problem."""
    with pytest.raises(ConfigError, match="BRIDGE_STREAM_ACCOUNTS_DIR: cannot list"):
        read_accounts(tmp_path / "nowhere", PRIMARY)
