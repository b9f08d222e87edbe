"""Twilio's Media Stream straight on ASGI, as a `TwilioChannel`, and the router that sends
the media socket here and everything else to Quart.

The media socket skips Quart's WebSocket wrapper on purpose. Quart reads the socket in a
task of its own and cancels the handler as soon as the peer closes, dropping the frames it
had read but the handler had not (Twilio's last audio and its `stop`), and it hops every
frame through a queue and a signal: about 150 times a second per call. Here the call reads
the server's `receive` itself, so every frame before the close is read, in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from bot.call.channels import ChannelClosed
from bot.core import twilio
from bot.core.twilio import TwilioEvent, TwilioMessage

__all__ = [
    "SEND_BATCH",
    "AsgiApp",
    "AsgiTwilioChannel",
    "Receive",
    "Scope",
    "Send",
    "route_websockets",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


SEND_BATCH: Final = "bot.websocket.send_batch"
"""An ASGI extension of our server (`bot/server.py`): `{"type": SEND_BATCH, "texts": [...]}`
sends several text frames in one socket write."""


class AsgiTwilioChannel:
    """An accepted ASGI WebSocket carrying a Twilio Media Stream."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._batches = SEND_BATCH in (scope.get("extensions") or {})
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
                    frame = message.get("bytes") or b""
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
            if self._batches and len(messages) > 1:
                texts = [twilio.encode(message) for message in messages]
                await self._send({"type": SEND_BATCH, "texts": texts})
            else:
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
