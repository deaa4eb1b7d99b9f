"""The command line: ``sendstack-bridge <subcommand>``.

Exit codes: 0 clean shutdown, 1 crash, 2 configuration error. Configuration
is read from the environment here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from bridge import __version__
from bridge.config import REQUIREMENTS, Settings, load_settings, render_check_config
from bridge.errors import ConfigError

if TYPE_CHECKING:  # only for annotations: adapters load with their subcommand
    from bridge.adapters.account_files import Account


class Runnable(Protocol):
    """What every subcommand's app offers: run until ``stop`` is set."""

    async def run(self, stop: asyncio.Event) -> int: ...


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendstack-bridge",
        description="Bridge the Sendstack logistics platform and Kafka.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stream", help="tracking websocket -> Kafka")
    sub.add_parser("webhooks", help="signed Sendstack webhooks -> Kafka")
    sub.add_parser("commands", help="Kafka commands -> Sendstack API calls")
    probe = sub.add_parser(
        "probe",
        help="say what the configured tracking wire does (publishes nothing)",
    )
    probe.add_argument(
        "--seconds", type=float, default=10.0, help="how long to listen for frames"
    )
    probe.add_argument(
        "--frames", type=int, default=5, help="stop after this many frames"
    )
    cap = sub.add_parser(
        "capture",
        help="record the tracking wire verbatim to a file (publishes nothing)",
    )
    cap.add_argument("--duration", type=float, default=30.0, help="seconds")
    cap.add_argument("--max-frames", type=int, default=10_000)
    cap.add_argument("--out", required=True, help="the JSON-lines file to write")
    mapping = sub.add_parser(
        "mapping", help="check a mapping file, or try it on captured messages"
    )
    verbs = mapping.add_subparsers(dest="verb", required=True)
    for verb, text in (
        ("check", "list every problem of a mapping file (exit 2 if any)"),
        ("show", "print the Python each rule compiles to"),
        ("try", "run captured messages through a mapping; print the records"),
    ):
        parser_ = verbs.add_parser(verb, help=text)
        parser_.add_argument(
            "--mapping",
            help="the mapping file (default: BRIDGE_STREAM_MAPPING_FILE, else the"
            " shipped traccar-json mapping)",
        )
        if verb == "try":
            parser_.add_argument(
                "capture", help="a capture file, or one raw message per line"
            )
            parser_.add_argument(
                "--quiet", action="store_true", help="only dead letters and the summary"
            )
            parser_.add_argument(
                "--full", action="store_true", help="print record values uncut"
            )
    red = sub.add_parser(
        "redrive",
        help="publish dead-lettered frames the current mapping understands",
    )
    red.add_argument(
        "--origin",
        choices=("stream", "webhook"),
        default="stream",
        help="which dead-letter topic: the tracking stream's or the webhooks'",
    )
    red.add_argument("--since", help="received at or after (ISO-8601 UTC)")
    red.add_argument("--until", help="received before (ISO-8601 UTC)")
    red.add_argument(
        "--reason", action="append", default=[], help="only this reason (repeatable)"
    )
    red.add_argument(
        "--group", help="consumer group for progress (default: one per selection)"
    )
    red.add_argument(
        "--reset", action="store_true", help="start the group over from the beginning"
    )
    red.add_argument(
        "--dry-run", action="store_true", help="publish nothing, commit nothing"
    )
    journal = sub.add_parser(
        "journal",
        help="what the stream's local journal holds, and whether it is intact",
    )
    jverbs = journal.add_subparsers(dest="verb", required=True)
    for verb, text in (
        ("stats", "entries, bytes and the oldest entry's age (cheap, read-only)"),
        ("verify", "check every entry's checksum (read-only; exit 1 on a problem)"),
    ):
        parser_ = jverbs.add_parser(verb, help=text)
        parser_.add_argument(
            "--dir", help="the journal directory (default: BRIDGE_JOURNAL_DIR's)"
        )
        parser_.add_argument("--json", action="store_true", help="print JSON")
    check = sub.add_parser(
        "check-config", help="validate the configuration and print it"
    )
    check.add_argument(
        "--for",
        dest="for_command",
        default="stream",
        choices=sorted(REQUIREMENTS),
        help="the subcommand whose requirements apply",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns = _parser().parse_args(args)
    if ns.command == "check-config":
        return _check_config(ns.for_command)
    if ns.command == "capture":
        return _capture(ns.duration, ns.max_frames, ns.out)
    if ns.command == "mapping":
        return _mapping(ns)
    if ns.command == "redrive":
        return _redrive(ns)
    if ns.command == "journal":
        return _journal(ns)
    if ns.command == "probe":
        return _probe(seconds=ns.seconds, max_frames=ns.frames)
    return _run(ns.command)


def _load(command: str) -> Settings | None:
    try:
        return load_settings(os.environ, require=REQUIREMENTS[command])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _accounts(settings: Settings) -> tuple[Account, ...] | None:
    """The stream's accounts, or None after printing what is wrong."""
    from bridge.app import accounts_of

    try:
        return accounts_of(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _check_config(command: str) -> int:
    settings = _load(command)
    if settings is None:
        return 2
    print(render_check_config(settings))
    if command == "stream" and settings.stream.accounts_dir is not None:
        # The accounts directory is read at start: check it now as well.
        accounts = _accounts(settings)
        if accounts is None:
            return 2
        print("[accounts] in coordination-partition order")
        for index, account in enumerate(accounts):
            where = "" if account.stream_url is None else f"  ({account.stream_url})"
            print(f"  {index}  {account.name}  app_id {account.app_id}{where}")
    return 0


def _mapping(ns: argparse.Namespace) -> int:
    # Only the stream's settings matter here, and none is required: topics
    # and limits come from the environment when set, else their defaults.
    settings = _load("mapping")
    if settings is None:
        return 2
    from pathlib import Path

    from bridge import app_mapping

    mapping = ns.mapping or settings.stream.mapping_file
    if ns.verb == "check":
        return app_mapping.check(mapping, sys.stdout, sys.stderr)
    if ns.verb == "show":
        return app_mapping.show(mapping, sys.stdout, sys.stderr)
    return app_mapping.trial(
        mapping,
        Path(ns.capture),
        sys.stdout,
        sys.stderr,
        topics=app_mapping.topics_from(settings),
        max_frame_bytes=settings.stream.max_frame_bytes,
        quiet=ns.quiet,
        full=ns.full,
    )


def _journal(ns: argparse.Namespace) -> int:
    settings = _load("journal")
    if settings is None:
        return 2
    from bridge import app_journal
    from bridge.adapters.journal_dir import journal_directory

    directory = journal_directory(ns.dir or settings.journal.dir, os.environ)
    return app_journal.run(
        ns.verb,
        directory,
        sys.stdout,
        max_bytes=settings.journal.max_bytes,
        as_json=ns.json,
    )


def _redrive(ns: argparse.Namespace) -> int:
    settings = _load("redrive")
    if settings is None:
        return 2
    from bridge.app_redrive import RedriveOptions, redrive, utc_bound
    from bridge.core.redrive import RedriveFilter

    try:
        since, until = utc_bound(ns.since), utc_bound(ns.until)
    except ValueError as exc:
        print(f"redrive: {exc}", file=sys.stderr)
        return 2
    from bridge.logs import configure_logging

    configure_logging(
        settings.log.level,
        settings.log.format,
        secrets=[settings.sendstack.app_secret] if settings.sendstack else [],
        query_keys=[settings.stream.session_query_key],
    )
    options = RedriveOptions(
        selection=RedriveFilter(
            origin=ns.origin, since=since, until=until, reasons=frozenset(ns.reason)
        ),
        group=ns.group,
        reset=ns.reset,
        dry_run=ns.dry_run,
    )
    summary = asyncio.run(redrive(settings, options, sys.stdout))
    return 0 if not summary.still_failing else 1


def _probe(*, seconds: float, max_frames: int) -> int:
    settings = _load("probe")
    if settings is None:
        return 2
    from bridge.app_probe import probe

    report = asyncio.run(probe(settings, seconds=seconds, max_frames=max_frames))
    print(report.text(), end="")
    return 0 if report.usable else 1


def _capture(duration: float, max_frames: int, out: str) -> int:
    settings = _load("capture")
    if settings is None:
        return 2
    from pathlib import Path

    from bridge.app_capture import capture

    summary = asyncio.run(
        capture(settings, duration=duration, max_frames=max_frames, out=Path(out))
    )
    print(
        f"captured {summary.frames} frames to {out}: {summary.opens} opens,"
        f" {summary.closes} closes, {summary.rotations} rotations,"
        f" {summary.failed_connects} failed connects"
    )
    return 0 if summary.opens else 1


def _run(command: str) -> int:
    settings = _load(command)
    if settings is None:
        return 2
    from bridge.logs import configure_logging

    secrets = [settings.sendstack.app_secret] if settings.sendstack else []
    accounts: tuple[Account, ...] = ()
    if command == "stream":
        read = _accounts(settings)
        if read is None:
            return 2
        accounts = read
        # Every account's secret is masked in the logs, not only the first.
        secrets += [a.app_secret for a in accounts]
    configure_logging(
        settings.log.level,
        settings.log.format,
        secrets=secrets,
        query_keys=[settings.stream.session_query_key],
    )
    try:
        return asyncio.run(_serve(command, settings, accounts))
    except BaseException as exc:
        failure = _journal_failure(exc)
        if failure is None:
            raise
        # Exit for the orchestrator to restart us, with the cause in one line.
        import structlog

        hint = (
            "what was committed stays journaled; free space on the journal's"
            " volume (or fix its I/O error), then restart"
        )
        structlog.get_logger("bridge.cli").critical(
            "stream_stopped_journal_failed", error=str(failure), hint=hint
        )
        print(f"sendstack-bridge: {failure}; {hint}", file=sys.stderr)
        return 1


def _journal_failure(exc: BaseException) -> BaseException | None:
    """The journal's error inside ``exc`` (maybe an exception group), or None."""
    from bridge.adapters.journal_store import JournalError

    if isinstance(exc, JournalError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _journal_failure(inner)
            if found is not None:
                return found
    return None


def _build(command: str, settings: Settings, accounts: tuple[Account, ...]) -> Runnable:
    # Imported lazily: each subcommand loads only the adapters it runs.
    if command == "webhooks":
        from bridge.app_webhooks import WebhookApp

        return WebhookApp(settings)
    if command == "commands":
        from bridge.app_commands import CommandApp

        return CommandApp(settings)
    from bridge.app import StreamApp

    return StreamApp(settings, accounts=accounts)


async def _serve(
    command: str, settings: Settings, accounts: tuple[Account, ...]
) -> int:
    # Built inside the running loop: clients and primitives bind to it.
    app = _build(command, settings, accounts)
    from bridge.bootstrap import tune_collector

    tune_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)  # a second signal: leave at once
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return await app.run(stop)
