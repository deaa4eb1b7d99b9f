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

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from bridge.core.records import Topics, account_source
from bridge.errors import ConfigError
from bridge.secrets import Secret

__all__ = ["ACCOUNT_NAME", "Account", "read_accounts"]

#: What an account's name may be: it is a record key, a label and a path.
ACCOUNT_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")

_TOPIC_FILES: Final = {
    "topic_positions": "positions",
    "topic_device_status": "device_status",
    "topic_events": "events",
    "topic_dead_letter": "dead_letter",
}
_URL_FILES: Final = {"base_url": ("http", "https"), "stream_url": ("ws", "wss")}
_KNOWN: Final = frozenset({"app_id", "app_secret", *_TOPIC_FILES, *_URL_FILES})
_TOPIC_CHARS: Final = re.compile(r"[A-Za-z0-9._\-]{1,249}")


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
    if ACCOUNT_NAME.fullmatch(name) is None:
        problems.append(f"{path}: an account name is 1-64 of A-Z a-z 0-9 . _ -")
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
    for key, schemes in _URL_FILES.items():
        url = files.get(key)
        if url is not None and not _url_ok(url, schemes):
            shown = url.partition("?")[0][:60]
            listed = " or ".join(f"{s}://" for s in schemes)
            problems.append(f"{path / key}: expected a {listed} URL, got {shown!r}")
    overrides = {k: files[k] for k in _TOPIC_FILES if k in files}
    for key, topic in overrides.items():
        if _TOPIC_CHARS.fullmatch(topic) is None or topic in {".", ".."}:
            problems.append(f"{path / key}: expected a Kafka topic name")
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


def _url_ok(url: str, schemes: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme.lower() in schemes and bool(parts.hostname)
