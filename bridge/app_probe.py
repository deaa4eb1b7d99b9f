"""``sendstack-bridge probe``: say plainly what the configured tracking wire does.

The composition root of the probe: with the normal configuration it obtains
a session, opens the configured URL, listens for a few frames, and prints
what each step saw with the settings to change (``bridge.core.probe``
judges; ``bridge.adapters.wire_probe`` does the I/O). It publishes nothing
and prints no token: the URL is shown redacted.

Exit codes: 0 a usable stream was reached, 1 it was not, 2 bad configuration.
"""

from __future__ import annotations

import httpx

from bridge.adapters.mapping_files import stream_codec
from bridge.adapters.upstream_connectors import stream_connector
from bridge.adapters.upstream_ws import session_url
from bridge.adapters.wire_probe import call_session, listen_via, open_and_listen
from bridge.config import SendstackSettings, Settings
from bridge.core.probe import ProbeRun, Report, judge
from bridge.secrets import Secret, redact_url


async def probe(settings: Settings, *, seconds: float, max_frames: int) -> Report:
    """Run the three steps and judge them."""
    sendstack = settings.require(SendstackSettings)
    stream = settings.stream
    # Shown as it is opened, with the session masked: where the token goes
    # (which query key) is part of what the probe checks.
    shown = redact_url(
        session_url(stream.url, stream.session_query_key, Secret("masked")),
        [stream.session_query_key],
    )
    async with httpx.AsyncClient(timeout=sendstack.http_timeout_seconds) as client:
        session, token = await call_session(
            client,
            base_url=sendstack.base_url,
            app_id=sendstack.app_id,
            app_secret=sendstack.app_secret,
            header_style=sendstack.session_header_style,
            send_source=sendstack.send_source_header,
        )
    run = ProbeRun(url=shown, session=session)
    if token is not None:
        if stream.transport == "socketio":
            # Through the transport: a raw socket would never join the
            # namespace, so it would see the handshake but no event.
            upgrade, frames, closed, listened = await listen_via(
                stream_connector(stream), token, seconds=seconds, max_frames=max_frames
            )
        else:
            upgrade, frames, closed, listened = await open_and_listen(
                stream.url,
                stream.session_query_key,
                token,
                seconds=seconds,
                max_frames=max_frames,
                open_timeout=stream.open_timeout_seconds,
            )
        run = ProbeRun(
            url=shown,
            session=session,
            upgrade=upgrade,
            frames=frames,
            closed=closed,
            listened=listened,
        )
    codec = stream_codec(
        stream.codec, stream.mapping_file, max_frame_bytes=stream.max_frame_bytes
    )
    return judge(run, codec)
