"""Twilio's Media Stream as a `TwilioChannel`: on `picows` under `bot serve`, or on plain
ASGI under any other server, and the router that sends the media socket here and everything
else to Quart.

`bot serve` hands the media socket to `picows` straight from the HTTP upgrade
(`open_media_socket`): frames are parsed and unmasked in C and arrive by callback, with no
ASGI queue and no pause and resume of the socket per frame. That is about 60 frames a second
in and 30 out per call, the largest share of a call's CPU.

On ASGI the media socket still skips Quart's WebSocket wrapper. Quart reads the socket in a
task of its own and cancels the handler as soon as the peer closes, dropping the frames it
had read but the handler had not (Twilio's last audio and its `stop`), and it hops every
frame through a queue and a signal. Here the call reads the server's `receive` itself, so
every frame before the close is read, in order; on `picows` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, Final, Protocol

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stubs

from bot.call.channels import ChannelClosed, TwilioChannel
from bot.core import twilio
from bot.core.twilio import TwilioEvent, TwilioMessage
from bot.errors import TwilioProtocolError

__all__ = [
    "AsgiApp",
    "AsgiTwilioChannel",
    "MediaGate",
    "PicowsTwilioChannel",
    "Receive",
    "Scope",
    "Send",
    "open_media_socket",
    "route_websockets",
]

logger = logging.getLogger("bot.call.media_socket")  # picows logs each connection at INFO

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


MAX_FRAME_BYTES: Final = 1024 * 1024  # a Twilio frame is ~300 bytes; bigger is abuse
MAX_UNSENT_BYTES: Final = 1024 * 1024  # about 90 s of audio the phone did not read
MAX_UNREAD_FRAMES: Final = 64  # past this the socket is not read until the call catches up
HANDSHAKE_TIMEOUT_S: Final = 10.0


class AsgiTwilioChannel:
    """An accepted ASGI WebSocket carrying a Twilio Media Stream."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._disconnected = False  # the server said so: nothing more to read
        self._unwritable = False  # a send failed, or we closed: nothing more to write

    async def receive(self) -> TwilioEvent:
        """The next frame. Frames read before the peer left are all returned first, even
        after a send has failed: they hold the caller's last words and Twilio's `stop`."""
        while not self._disconnected:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                frame = message.get("text")
                if frame is None:
                    raise TwilioProtocolError(twilio.BINARY_FRAME)
                event = twilio.decode(frame)
                if event is not None:
                    return event
            elif kind == "websocket.disconnect":
                self._disconnected = True
        raise ChannelClosed("twilio", "media socket closed")

    async def send(self, messages: Sequence[TwilioMessage]) -> None:
        if self._unwritable or self._disconnected:
            raise ChannelClosed("twilio", "media socket closed")
        try:
            for message in messages:
                await self._send({"type": "websocket.send", "text": twilio.encode(message)})
        except (OSError, RuntimeError) as exc:  # the server's word for a socket that is gone
            self._unwritable = True
            raise ChannelClosed("twilio", "media socket closed") from exc

    async def close(self, code: int, reason: str) -> None:
        if self._unwritable or self._disconnected:
            return
        self._unwritable = True
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def route_websockets(fallback: AsgiApp, routes: dict[str, AsgiApp]) -> AsgiApp:
    """WebSocket connections to one of `routes`' paths go there; all else to `fallback`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            handler = routes.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await fallback(scope, receive, send)

    return app


class MediaGate(Protocol):
    """What lets a media socket in and serves it (`bot.call.web`)."""

    def accepts(self, signature: str | None) -> bool:
        """Whether the upgrade request's `X-Twilio-Signature` (if any) is valid."""
        ...

    async def serve(self, channel: TwilioChannel) -> None:
        """Serve the accepted stream until it ends; never raises for call failures."""
        ...


def _text_frame(payload: bytes) -> bytes:
    """A server's (unmasked) text frame, RFC 6455 section 5.2."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class PicowsTwilioChannel(WSListener):
    """A media socket on `picows`: frames arrive by callback and wait here, in order, until
    the call reads them. Several messages go out in one socket write."""

    def __init__(self) -> None:
        self._transport: WSTransport | None = None
        # Unread frames: as read, or decoded by a direct delivery that left them to `receive`.
        self._frames: deque[bytes | TwilioEvent | TwilioProtocolError] = deque()
        self._direct: Callable[[TwilioEvent], bool] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._disconnected = False  # the peer is gone: nothing more to read
        self._unwritable = False  # we closed, or the phone stopped reading
        self._why_closed = "media socket closed"
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._fragments_binary = False

    # ---- picows callbacks, in the event loop -----------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.CONTINUATION:
            if frame.fin and not self._fragments:
                if kind is WSMsgType.TEXT:  # its UTF-8 is checked as it is parsed
                    waiter = self._waiter  # the call waits for this very frame
                    if self._direct and waiter and not waiter.done() and not self._frames:
                        self._deliver(frame.get_payload_as_bytes(), self._direct)
                    else:
                        self._arrived(frame.get_payload_as_bytes())
                elif kind is WSMsgType.BINARY:
                    self._arrived(TwilioProtocolError(twilio.BINARY_FRAME))
                return  # a lone continuation frame continues nothing
            if not self._fragments:
                self._fragments_binary = kind is WSMsgType.BINARY
            self._fragments.append(frame.get_payload_as_bytes())
            self._fragments_size += frame.payload_size
            if self._fragments_size > MAX_FRAME_BYTES:
                self._fragments, self._fragments_size = [], 0
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
            elif frame.fin:
                message = b"".join(self._fragments)
                self._fragments, self._fragments_size = [], 0
                if self._fragments_binary:
                    self._arrived(TwilioProtocolError(twilio.BINARY_FRAME))
                else:
                    self._arrived(message)
        elif kind is WSMsgType.CLOSE:
            code = frame.get_close_code()
            if not transport.is_close_frame_sent:
                transport.send_close(code if code is not WSCloseCode.NO_INFO else WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._disconnected = True
        self._wake()

    def _deliver(self, frame: bytes, handler: Callable[[TwilioEvent], bool]) -> None:
        """Offer a frame to the call's handler right here, in the read callback."""
        try:
            event = twilio.decode(frame)
        except TwilioProtocolError as exc:
            self._arrived(exc)  # reported by the pump, as from `receive`
            return
        if event is not None and not handler(event):
            self._arrived(event)

    def _arrived(self, frame: bytes | TwilioEvent | TwilioProtocolError) -> None:
        self._frames.append(frame)
        if len(self._frames) > MAX_UNREAD_FRAMES and not self._paused and self._transport:
            self._paused = True  # a flood waits in the kernel, not in memory
            self._transport.underlying_transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ---- TwilioChannel ----------------------------------------------------------------

    async def receive(self) -> TwilioEvent:
        """The next frame. Frames read before the peer left are all returned first."""
        frames = self._frames
        while True:
            if frames:
                frame = frames.popleft()
                if self._paused and len(frames) < MAX_UNREAD_FRAMES // 2:
                    self._paused = False
                    if self._transport is not None and not self._disconnected:
                        self._transport.underlying_transport.resume_reading()
                if isinstance(frame, TwilioProtocolError):
                    raise frame
                event = twilio.decode(frame) if isinstance(frame, bytes) else frame
                if event is not None:
                    return event
                continue
            if self._disconnected:
                raise ChannelClosed("twilio", self._why_closed)
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    def deliver_directly(self, handler: Callable[[TwilioEvent], bool] | None) -> None:
        self._direct = handler

    async def send(self, messages: Sequence[TwilioMessage]) -> None:
        self.send_now(messages)

    def send_now(self, messages: Sequence[TwilioMessage]) -> None:
        transport = self._transport
        if transport is None or self._unwritable or self._disconnected:
            raise ChannelClosed("twilio", "media socket closed")
        if transport.is_disconnected or transport.is_close_frame_sent:
            self._unwritable = True
            raise ChannelClosed("twilio", "media socket closed")
        underlying = transport.underlying_transport
        if underlying.get_write_buffer_size() > MAX_UNSENT_BYTES:
            self._unwritable = True
            self._why_closed = "the phone stopped reading its media socket"
            transport.disconnect(graceful=False)
            raise ChannelClosed("twilio", self._why_closed)
        if len(messages) == 1:
            transport.send(WSMsgType.TEXT, twilio.encode(messages[0]).encode())
        else:
            underlying.write(
                b"".join([_text_frame(twilio.encode(message).encode()) for message in messages])
            )

    async def close(self, code: int, reason: str) -> None:
        transport = self._transport
        if transport is None or self._unwritable or self._disconnected:
            return
        self._unwritable = True
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(code), reason.encode()[:120])
        transport.disconnect()


def open_media_socket(transport: asyncio.Transport, head: bytes, gate: MediaGate) -> None:
    """Take over an HTTP connection whose request `head` asks for the media socket: the
    upgrade is answered here, and an accepted stream is served by `gate` in a task."""

    def listener(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        if not gate.accepts(request.headers.get("x-twilio-signature")):  # HTTP 403
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(HTTPStatus.FORBIDDEN, b"Forbidden"),
                None,
            )
        channel = PicowsTwilioChannel()
        task = asyncio.get_running_loop().create_task(_serve(gate, channel))
        _SERVING.add(task)
        task.add_done_callback(_SERVING.discard)
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(), channel)

    log = _ConnectionLog(transport)
    protocol = WSProtocol(
        None,  # host and port: a client's
        None,  # path: a client's
        False,  # the server side
        listener,
        log,  # an adapter: picows would make a logger per connection of a Logger
        True,  # disconnect on an exception in a callback
        HANDSHAKE_TIMEOUT_S,
        False,  # no pings of our own: Twilio keeps the socket busy
        20.0,
        20.0,
        WSAutoPingStrategy.PING_WHEN_IDLE,
        True,  # answer pings
        MAX_FRAME_BYTES,
        None,  # no extra headers
        4096,  # initial read buffer: a dozen frames
    )
    protocol.connection_made(transport)
    transport.set_protocol(protocol)
    view = memoryview(head)
    while view:
        buffer = protocol.get_buffer(-1)
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        view = view[size:]
        protocol.buffer_updated(size)


class _ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """picows' log for one media socket, which stops reading once picows gives up on it.

    On a malformed frame picows logs an error, sends its close and drops the connection
    10 ms later, but reads on meanwhile: a peer that keeps sending grew its buffer by 20 MB,
    and each read logged the error again. picows logs an error or an exception only where it
    closes the connection, so that is where reading stops; a hook per read would cost a
    Python call for each of 50 frames a second."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__(logger)
        self._transport = transport

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._stop_reading()
        super().error(msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._stop_reading()
        super().exception(msg, *args, **kwargs)

    def _stop_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.pause_reading()


_SERVING: set[asyncio.Task[None]] = set()  # strong references: the loop keeps weak ones


async def _serve(gate: MediaGate, channel: PicowsTwilioChannel) -> None:
    try:
        await gate.serve(channel)
    finally:
        await channel.close(1000, "")
