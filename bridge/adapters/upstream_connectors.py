"""Picks the tracking-stream connector that ``BRIDGE_STREAM_TRANSPORT`` names.

``websocket`` is the plain RFC 6455 socket of ``upstream_ws``; ``socketio``
is Socket.IO over Engine.IO (``upstream_socketio``). Both take the same
websockets options from the ``stream`` settings.
"""

from __future__ import annotations

from bridge.adapters.upstream_socketio import SocketIoConnector
from bridge.adapters.upstream_ws import SocketOptions, WebsocketConnector
from bridge.config import StreamSettings
from bridge.ports import UpstreamConnector


def socket_options(stream: StreamSettings) -> SocketOptions:
    """The websockets options of the ``stream`` settings."""
    return SocketOptions(
        ping_interval=stream.ping_interval_seconds,
        ping_timeout=stream.ping_timeout_seconds,
        # A peer that let a ping go unanswered gets no longer to close.
        close_timeout=stream.ping_timeout_seconds,
        open_timeout=stream.open_timeout_seconds,
        max_message_bytes=stream.max_message_bytes,
    )


def stream_connector(stream: StreamSettings) -> UpstreamConnector:
    """The connector for the configured transport."""
    options = socket_options(stream)
    if stream.transport == "socketio":
        return SocketIoConnector(
            url=stream.url,
            namespace=stream.socketio_namespace,
            session_in=stream.session_in,
            query_key=stream.session_query_key,
            auth_key=stream.socketio_auth_key,
            options=options,
        )
    return WebsocketConnector(
        url=stream.url, query_key=stream.session_query_key, options=options
    )
