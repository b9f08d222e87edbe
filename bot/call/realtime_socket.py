"""The Realtime WebSocket to a provider: URL and headers per provider, the channel over it,
and every `websockets` failure translated at this seam.

Nothing above this module sees a `websockets` exception: opening fails with
`RealtimeUnavailable`, a closed socket is `ChannelClosed`, and both messages are safe to
log (no key, no key-bearing query string).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from bot.call.channels import ChannelClosed
from bot.config import RealtimeSettings
from bot.core.realtime.client import decode_server_event, encode_client_event
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import ClientEvent, ServerEvent, SessionConfig, SessionUpdate
from bot.errors import RealtimeUnavailable

__all__ = [
    "WebSocketRealtimeChannel",
    "open_realtime",
    "realtime_headers",
    "realtime_url",
    "redact_url",
]

MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
CLOSE_TIMEOUT_S: Final = 0.8  # the Realtime socket must be gone within 1 s of the caller
_SECRET_QUERY_KEYS: Final = frozenset({"api-key", "api_key", "key", "token", "access_token"})
_SECRET_HEADERS: Final = frozenset({"authorization", "api-key"})


class _RedactHeaders(logging.Filter):
    """websockets logs handshake headers at DEBUG as ("> %s: %s", name, value)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            record.args = (args[0], "***")
        return True


_wire_logger = logging.getLogger("bot.realtime.wire")
_wire_logger.addFilter(_RedactHeaders())


def realtime_url(realtime: RealtimeSettings) -> str:
    """REALTIME_URL plus `model=`, unless the URL already names a model or Azure deployment."""
    parts = urlsplit(realtime.url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = {name for name, _ in query}
    if not names & {"model", "deployment"} and realtime.model:
        query.append(("model", realtime.model))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def realtime_headers(realtime: RealtimeSettings) -> dict[str, str]:
    headers: dict[str, str] = {}
    if realtime.api_key is not None:
        key = realtime.api_key.reveal()
        if realtime.auth == "api-key":
            headers["api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    if realtime.dialect is Dialect.BETA:
        headers["OpenAI-Beta"] = "realtime=v1"
    return headers


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    query = [
        (name, "***" if name.lower() in _SECRET_QUERY_KEYS else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/*")))


async def open_realtime(
    realtime: RealtimeSettings, session: SessionConfig
) -> WebSocketRealtimeChannel:
    """Connect and send the `session.update`.

    Raises:
        RealtimeUnavailable: refused, unresolvable, timed out or rejected (e.g. a bad key).
    """
    url = realtime_url(realtime)
    where = redact_url(url)
    try:
        connection = await websockets.connect(
            url,
            additional_headers=realtime_headers(realtime),
            open_timeout=realtime.connect_timeout_s,
            close_timeout=1,
            max_size=MAX_EVENT_BYTES,
            compression=None,  # audio in base64 barely compresses; save the CPU
            user_agent_header="twilio-realtime-bridge",
            logger=_wire_logger,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (check the API key)" if status in (401, 403) else ""
        raise RealtimeUnavailable(f"{where} rejected the connection: HTTP {status}{hint}") from exc
    except socket.gaierror as exc:
        raise RealtimeUnavailable(f"{where}: host name does not resolve") from exc
    except TimeoutError as exc:
        raise RealtimeUnavailable(f"{where}: no answer within the connect timeout") from exc
    except ConnectionRefusedError as exc:
        raise RealtimeUnavailable(f"{where}: connection refused") from exc
    except OSError as exc:
        raise RealtimeUnavailable(f"{where}: {exc.strerror or type(exc).__name__}") from exc
    except (InvalidURI, InvalidHandshake) as exc:
        raise RealtimeUnavailable(f"{where}: handshake failed ({type(exc).__name__})") from exc
    channel = WebSocketRealtimeChannel(connection, realtime.dialect)
    try:
        await channel.send(SessionUpdate(session))
    except ChannelClosed as exc:
        raise RealtimeUnavailable(f"{where} closed the connection at once") from exc
    return channel


class WebSocketRealtimeChannel:
    """A `RealtimeChannel` over a `websockets` client connection."""

    def __init__(self, connection: ClientConnection, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    async def send(self, event: ClientEvent) -> None:
        try:
            await self._connection.send(encode_client_event(event, self._dialect))
        except websockets.ConnectionClosed:
            raise ChannelClosed("realtime", self._why_closed()) from None

    async def receive(self) -> ServerEvent:
        while True:
            try:
                frame = await self._connection.recv()
            except websockets.ConnectionClosed:
                raise ChannelClosed("realtime", self._why_closed()) from None
            event = decode_server_event(frame)
            if event is not None:
                return event

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._connection.close(), CLOSE_TIMEOUT_S)
        except (TimeoutError, websockets.WebSocketException, OSError):
            pass
        finally:
            # A peer that ignores the close handshake gets its TCP connection dropped.
            transport = self._connection.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    def _why_closed(self) -> str:
        """Why the server closed, from its close frame (codes such as 4000 carry a reason)."""
        frame = self._connection.protocol.close_rcvd
        if frame is None:
            return "Realtime socket connection lost"
        reason = frame.reason
        try:
            error = json.loads(reason).get("error", {})
            reason = error.get("message") or reason
        except (ValueError, AttributeError):
            pass
        return f"Realtime socket closed with code {frame.code}" + (f": {reason}" if reason else "")
