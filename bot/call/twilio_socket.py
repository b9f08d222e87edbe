"""Twilio's Media Stream over Quart's WebSocket, as a `TwilioChannel`.

Frames are decoded and encoded here (`bot.core.twilio`). A socket that is gone, found by a
receive or a send, is `ChannelClosed`; Quart may also cancel the handler outright.
"""

from __future__ import annotations

import contextlib

from quart.wrappers.base import ClientDisconnectedError
from quart.wrappers.websocket import Websocket

from bot.call.channels import ChannelClosed
from bot.core import twilio
from bot.core.twilio import TwilioEvent, TwilioMessage

__all__ = ["QuartTwilioChannel"]


class QuartTwilioChannel:
    def __init__(self, ws: Websocket) -> None:
        self._ws = ws

    async def receive(self) -> TwilioEvent:
        while True:
            try:
                frame = await self._ws.receive()
            except ClientDisconnectedError as exc:
                raise ChannelClosed("twilio", "media socket closed") from exc
            event = twilio.decode(frame)
            if event is not None:
                return event

    async def send(self, message: TwilioMessage) -> None:
        try:
            await self._ws.send(twilio.encode(message))
        except ClientDisconnectedError as exc:
            raise ChannelClosed("twilio", "media socket closed") from exc

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close(code, reason)
