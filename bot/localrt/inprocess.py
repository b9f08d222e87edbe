"""The local backend inside the bridge's own process: a call's Realtime channel hands typed
events straight to a local session, with no socket, no JSON and no base64.

Calls use μ-law both ways here, so no frame is resampled on the way: the bridge passes
Twilio's audio through, voice detection runs at 8 kHz, and only whole utterances (for
speech-to-text) and whole sentences (from text-to-speech) change rate.
"""

from __future__ import annotations

import asyncio
from typing import Final

from bot.call.channels import ChannelClosed
from bot.core.realtime.events import ClientEvent, ServerEvent, SessionConfig, SessionUpdate
from bot.localrt.providers import Providers
from bot.localrt.runner import LocalSession

__all__ = ["InProcessChannel", "LocalRealtime"]

_CLOSED: Final = None


class LocalRealtime:
    """Opens in-process sessions of the local backend, one per call."""

    def __init__(self, providers: Providers, model: str = "local") -> None:
        self.providers = providers
        self.model = model

    async def open(self, config: SessionConfig) -> InProcessChannel:
        channel = InProcessChannel(self.providers, self.model)
        await channel.start(config)
        return channel


class InProcessChannel:
    """A `RealtimeChannel` to a local session in this process."""

    def __init__(self, providers: Providers, model: str) -> None:
        self._events: asyncio.Queue[ServerEvent | None] = asyncio.Queue()
        self._closed = False
        self._local = LocalSession(providers, self._deliver, model=model)

    async def start(self, config: SessionConfig) -> None:
        await self._local.open()
        await self._local.receive(SessionUpdate(config))

    async def _deliver(self, event: ServerEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)

    async def send(self, event: ClientEvent) -> None:
        if self._closed:
            raise ChannelClosed("realtime", "local session closed")
        await self._local.receive(event)

    async def receive(self) -> ServerEvent:
        event = await self._events.get()
        if event is _CLOSED:
            self._events.put_nowait(_CLOSED)  # every later receive ends too
            raise ChannelClosed("realtime", "local session closed")
        return event

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._local.stop()
            self._events.put_nowait(_CLOSED)
