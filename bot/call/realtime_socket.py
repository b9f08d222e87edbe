"""The Realtime WebSocket to a provider: URL and headers per provider, the channel over it
(`picows`, a WebSocket client in Cython), and every failure translated at this seam.

Nothing above this module sees a `picows` exception: opening fails with
`RealtimeUnavailable`, a closed socket is `ChannelClosed`, and both messages are safe to
log (no key, no key-bearing query string).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from bot.call.channels import ChannelClosed
from bot.config import RealtimeSettings
from bot.core.realtime.client import decode_server_event, encode_client_event
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import ClientEvent, ServerEvent, SessionConfig, SessionUpdate
from bot.errors import RealtimeProtocolError, RealtimeUnavailable

__all__ = [
    "WebSocketRealtimeChannel",
    "open_realtime",
    "realtime_headers",
    "realtime_url",
    "redact_url",
]

MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
MAX_UNSENT_BYTES: Final = 4 * 1024 * 1024  # about 100 s of caller audio the server did not read
CLOSE_TIMEOUT_S: Final = 0.8  # the Realtime socket must be gone within 1 s of the caller
_SECRET_QUERY_KEYS: Final = frozenset({"api-key", "api_key", "key", "token", "access_token"})
_SECRET_HEADERS: Final = frozenset({"authorization", "api-key"})


class _RedactHeaders(logging.Filter):
    """A handshake header logged at DEBUG as ("> %s: %s", name, value) loses its value."""

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
        async with asyncio.timeout(realtime.connect_timeout_s):
            transport, listener = await ws_connect(
                _RealtimeListener,
                url,
                extra_headers={
                    **realtime_headers(realtime),
                    "User-Agent": "twilio-realtime-bridge",
                },
                websocket_handshake_timeout=realtime.connect_timeout_s,
                max_frame_size=MAX_EVENT_BYTES,
                max_redirects=0,  # a redirect would carry the key to another host
                logger_name=_wire_logger,
                enable_auto_pong=True,
            )
    except WSHandshakeError as exc:
        response = exc.response
        if response is None:
            raise RealtimeUnavailable(f"{where}: handshake failed ({type(exc).__name__})") from exc
        status = int(response.status)
        hint = " (check the API key)" if status in (401, 403) else ""
        raise RealtimeUnavailable(
            f"{where} rejected the connection: HTTP {status}{hint}", rejected=bool(hint)
        ) from exc
    except socket.gaierror as exc:
        raise RealtimeUnavailable(f"{where}: host name does not resolve") from exc
    except TimeoutError as exc:
        raise RealtimeUnavailable(f"{where}: no answer within the connect timeout") from exc
    except ConnectionRefusedError as exc:
        raise RealtimeUnavailable(f"{where}: connection refused") from exc
    except OSError as exc:
        raise RealtimeUnavailable(f"{where}: {exc.strerror or type(exc).__name__}") from exc
    except (WSError, ValueError) as exc:
        raise RealtimeUnavailable(f"{where}: handshake failed ({type(exc).__name__})") from exc
    assert isinstance(listener, _RealtimeListener)
    channel = WebSocketRealtimeChannel(transport, listener, realtime.dialect)
    try:
        await channel.send(SessionUpdate(session))
    except ChannelClosed as exc:
        raise RealtimeUnavailable(f"{where} closed the connection at once") from exc
    return channel


class _RealtimeListener(WSListener):
    """picows calls this for every frame, in the event loop: whole text messages wait in
    `frames` (None: the socket is gone), fragments are joined first, and a close frame is
    remembered for its reason. A deque and one future, not an `asyncio.Queue`: a model's
    audio is 25 or more events a second per call, and the queue's Python costs a dozen calls
    an event."""

    def __init__(self) -> None:
        # UTF-8 JSON text, or an event a direct delivery left to `receive`; None: the end.
        self.frames: deque[bytes | ServerEvent | None] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.direct: Callable[[ServerEvent], bool] | None = None
        self.close_frame: tuple[int, str] | None = None
        self._fragments: list[bytes] = []
        self._fragments_size = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.CONTINUATION:
            if frame.fin and not self._fragments:
                if kind is WSMsgType.CONTINUATION:
                    return
                waiter = self.waiter  # the call waits for this very frame
                if self.direct and waiter and not waiter.done() and not self.frames:
                    self._deliver(frame.get_payload_as_bytes(), self.direct)
                else:
                    self._arrived(frame.get_payload_as_bytes())
                return
            self._fragments.append(frame.get_payload_as_bytes())
            self._fragments_size += frame.payload_size
            if self._fragments_size > MAX_EVENT_BYTES:
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
            elif frame.fin:
                message = b"".join(self._fragments)
                self._fragments, self._fragments_size = [], 0
                self._arrived(message)
        elif kind is WSMsgType.CLOSE:
            code = frame.get_close_code()
            reason = (frame.get_close_message() or b"").decode("utf-8", "replace")
            self.close_frame = (code.value, reason)
            transport.send_close(code if code is not WSCloseCode.NO_INFO else WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._arrived(None)

    def _deliver(self, frame: bytes, handler: Callable[[ServerEvent], bool]) -> None:
        """Offer a frame to the call's handler right here, in the read callback."""
        try:
            event = decode_server_event(frame)
        except RealtimeProtocolError:
            self._arrived(frame)  # `receive` decodes it again, and raises for the pump
            return
        if event is not None and not handler(event):
            self._arrived(event)

    def _arrived(self, frame: bytes | ServerEvent | None) -> None:
        self.frames.append(frame)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class WebSocketRealtimeChannel:
    """A `RealtimeChannel` over a `picows` client connection: frames are parsed, masked and
    written in C, and arrive by callback, about 50 each way a second per call."""

    def __init__(self, transport: WSTransport, listener: _RealtimeListener, dialect: Dialect):
        self._transport = transport
        self._listener = listener
        self._dialect = dialect
        self._gone = False

    def deliver_directly(self, handler: Callable[[ServerEvent], bool] | None) -> None:
        self._listener.direct = handler

    async def send(self, event: ClientEvent) -> None:
        self.send_now(event)

    def send_now(self, event: ClientEvent) -> None:
        transport = self._transport
        if self._gone or transport.is_disconnected or transport.is_close_frame_sent:
            raise ChannelClosed("realtime", self._why_closed())
        if transport.underlying_transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            transport.disconnect(graceful=False)  # the server stopped reading
            raise ChannelClosed("realtime", "Realtime socket stopped reading")
        transport.send(WSMsgType.TEXT, encode_client_event(event, self._dialect).encode())

    async def receive(self) -> ServerEvent:
        listener = self._listener
        frames = listener.frames
        while True:
            if not frames:
                if self._gone:  # every receive after the end sees it too
                    raise ChannelClosed("realtime", self._why_closed())
                waiter = listener.waiter = asyncio.get_running_loop().create_future()
                await waiter
                continue
            frame = frames.popleft()
            if frame is None:
                self._gone = True
                raise ChannelClosed("realtime", self._why_closed())
            event = decode_server_event(frame) if isinstance(frame, bytes) else frame
            if event is not None:
                return event

    async def close(self) -> None:
        transport = self._transport
        if not transport.is_disconnected:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            try:
                await asyncio.wait_for(transport.wait_disconnected(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                pass
        # A peer that ignores the close handshake gets its TCP connection dropped.
        underlying = transport.underlying_transport
        if not underlying.is_closing():
            underlying.abort()

    def _why_closed(self) -> str:
        """Why the server closed, from its close frame (codes such as 4000 carry a reason)."""
        frame = self._listener.close_frame
        if frame is None:
            return "Realtime socket connection lost"
        code, reason = frame
        try:
            error = json.loads(reason).get("error", {})
            reason = error.get("message") or reason
        except (ValueError, AttributeError):
            pass
        return f"Realtime socket closed with code {code}" + (f": {reason}" if reason else "")
