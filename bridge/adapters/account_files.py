"""The Sendstack accounts one stream process reads.

The account of ``BRIDGE_SENDSTACK_APP_ID`` comes first; ``BRIDGE_STREAM_ACCOUNTS_DIR``
adds one per subdirectory, named for the account, holding files (what a
Kubernetes Secret mounted there looks like):

* ``app_id``, ``app_secret``: required, trailing newlines dropped;
* ``base_url``, ``stream_url``: optional, an account on another Sendstack
  environment (the tests give each account an emulator of its own);
* ``topic_positions``, ``topic_device_status``, ``topic_events``,
  ``topic_dead_letter``: optional, per-account topics instead of the shared ones.

Anything else in an account's directory is a problem (a typo would otherwise
go unnoticed); Kubernetes' own ``..data`` entries are skipped. The order is
the primary account then the directory's names sorted, so every replica
numbers the accounts (the coordination topic's partitions) alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from bridge.config import ACCOUNT_NAME, TOPIC_NAME, ValueKind, url_kind
from bridge.core.records import Topics, account_source
from bridge.errors import ConfigError
from bridge.secrets import Secret

__all__ = ["Account", "read_accounts"]

_TOPIC_FILES: Final = {
    "topic_positions": "positions",
    "topic_device_status": "device_status",
    "topic_events": "events",
    "topic_dead_letter": "dead_letter",
}
_URL_FILES: Final = {
    "base_url": url_kind(("http", "https")),
    "stream_url": url_kind(("ws", "wss")),
}
_KNOWN: Final = frozenset({"app_id", "app_secret", *_TOPIC_FILES, *_URL_FILES})


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """One Sendstack app the stream reads, and where its records go."""

    name: str
    app_id: str
    app_secret: Secret
    topics: Topics
    base_url: str | None = None
    stream_url: str | None = None

    @property
    def source(self) -> str:
        """Its ``ce_source``: where the bridge got the items from."""
        return account_source(self.name)


def read_accounts(directory: Path, primary: Account) -> tuple[Account, ...]:
    """*primary*, then each account of *directory*, or a `ConfigError` listing
    every problem (never a file's content)."""
    problems: list[str] = []
    accounts = [primary]
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise ConfigError(
            [f"BRIDGE_STREAM_ACCOUNTS_DIR: cannot list {directory}: {exc.strerror}"]
        ) from None
    for entry in entries:
        if not entry.is_dir():
            problems.append(f"{entry}: expected a directory per account")
            continue
        account = _read_one(entry, primary.topics, problems)
        if account is not None:
            accounts.append(account)
    names = [a.name for a in accounts]
    problems.extend(
        f"account {name!r} is listed twice (BRIDGE_HA_ACCOUNT names the "
        "account of BRIDGE_SENDSTACK_APP_ID)"
        for name in sorted({n for n in names if names.count(n) > 1})
    )
    ids = [a.app_id for a in accounts]
    problems.extend(
        f"account {a.name!r}: its app_id is another account's"
        for a in accounts[1:]
        if ids.count(a.app_id) > 1
    )
    if problems:
        raise ConfigError(problems)
    return tuple(accounts)


def _read_one(path: Path, shared: Topics, problems: list[str]) -> Account | None:
    before = len(problems)
    name = path.name
    _check(ACCOUNT_NAME, name, path, problems)
    files: dict[str, str] = {}
    for item in sorted(path.iterdir()):
        if item.name.startswith(".."):
            continue  # Kubernetes' atomic-update links of a mounted Secret
        if item.name not in _KNOWN:
            problems.append(
                f"{item}: unknown file (known: {', '.join(sorted(_KNOWN))})"
            )
            continue
        try:
            files[item.name] = item.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{item}: unreadable ({type(exc).__name__})")
    problems.extend(
        f"{path / required}: required, missing or empty"
        for required in ("app_id", "app_secret")
        if not files.get(required)
    )
    for key, kind in _URL_FILES.items():
        if key in files:
            _check(kind, files[key], path / key, problems)
    overrides = {k: files[k] for k in _TOPIC_FILES if k in files}
    for key, topic in overrides.items():
        _check(TOPIC_NAME, topic, path / key, problems)
    if len(problems) > before:
        return None
    topics = replace(shared, **{_TOPIC_FILES[k]: v for k, v in overrides.items()})
    return Account(
        name=name,
        app_id=files["app_id"],
        app_secret=Secret(files["app_secret"]),
        topics=topics,
        base_url=files.get("base_url"),
        stream_url=files.get("stream_url"),
    )


def _check(kind: ValueKind[str], raw: str, where: Path, problems: list[str]) -> None:
    """The configuration's own check of a value (its message never echoes a
    secret or a query string)."""
    try:
        kind.parse(raw)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
