"""The baseline of the commands benchmark: a plain httpx loop, in its own process.

``python -m bench._httpx_loop SPEC.json``

The spec names the emulator (base URL, credentials), the concurrency and a
file of command messages (JSON lines, the very bytes the worker consumes).
Each message is parsed and mapped with ``bridge.core.commands.parse_command``
and ``to_request`` *before* timing starts, so the loop sends the worker's
REST requests exactly: same method, path, query, body bytes
(``orjson.dumps``), and the headers of ``SendstackRest`` (the credential
headers from ``auth_api.credential_headers``, ``accept``,
``Idempotency-Key`` and, with a body, ``content-type``), on one
``httpx.AsyncClient`` configured as ``CommandApp``'s (its request timeout,
httpx's default pool).

``concurrency`` tasks pull requests from one queue until it is empty; no
Kafka, no validation, no retries. Prints one JSON line: statuses, transport
errors, and the wall-clock instants (``time.time()``, the clock the harness
and the worker's Kafka timestamps use) of the first and last completions.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from bridge.adapters.auth_api import credential_headers
from bridge.adapters.sendstack_rest import IDEMPOTENCY_HEADER
from bridge.core.commands import Command, RestRequest, parse_command, to_request
from bridge.secrets import Secret


def load_requests(path: Path) -> list[RestRequest]:
    now = time.time()
    out: list[RestRequest] = []
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        parsed = parse_command(raw, max_bytes=1_048_576, now=now)
        if not isinstance(parsed, Command):
            raise SystemExit(f"invalid command in {path}: {parsed}")
        out.append(to_request(parsed))
    return out


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    requests = load_requests(Path(spec["commands_path"]))
    base = str(spec["base_url"]).rstrip("/")
    fixed = {
        **credential_headers(
            spec["app_id"], Secret(spec["app_secret"]), style="snake", send_source=True
        ),
        "accept": "application/json",
    }
    queue: asyncio.Queue[RestRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    done: list[float] = []  # completion instants, in order

    async def loop(client: httpx.AsyncClient) -> None:
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            headers = dict(fixed)
            headers[IDEMPOTENCY_HEADER] = request.idempotency_key
            content = None
            if request.body is not None:
                content = orjson.dumps(request.body)
                headers["content-type"] = "application/json"
            try:
                response = await client.request(
                    request.method,
                    base + request.path,
                    params=list(request.query) or None,
                    content=content,
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            statuses[response.status_code] += 1
            done.append(time.time())

    started = time.time()
    async with httpx.AsyncClient(timeout=float(spec["timeout"])) as client:
        await asyncio.gather(*(loop(client) for _ in range(int(spec["concurrency"]))))
    return {
        "requests": len(requests),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "started": started,
        "first": done[0] if done else None,
        "last": done[-1] if done else None,
        "completions": len(done),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench._httpx_loop SPEC.json", file=sys.stderr)
        return 2
    spec = orjson.loads(Path(argv[0]).read_bytes())
    result = asyncio.run(run(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
