"""The two sockets of a call as the call loop sees them: typed messages, one way of closing.

Adapters (`twilio_socket.py`, `realtime_socket.py`, and the local backend's in-process
channel) translate their library's exceptions here, so nothing above the seam knows which
library carries the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from bot.core.realtime.events import ClientEvent, ServerEvent
from bot.core.twilio import TwilioEvent, TwilioMessage

__all__ = ["ChannelClosed", "RealtimeChannel", "TwilioChannel"]


class ChannelClosed(Exception):
    """One side of the call is gone; `reason` is safe to log."""

    def __init__(self, side: Literal["twilio", "realtime"], reason: str) -> None:
        super().__init__(f"{side}: {reason}")
        self.side = side
        self.reason = reason


class TwilioChannel(Protocol):
    """Twilio's Media Stream."""

    async def receive(self) -> TwilioEvent:
        """The next event.

        Raises:
            ChannelClosed: the socket is gone.
            TwilioProtocolError: a malformed frame was skipped; receive again.
        """
        ...

    async def send(self, messages: Sequence[TwilioMessage]) -> None:
        """Send messages in order, in one socket write where the server allows it (a media
        message and its mark travel together).

        Raises:
            ChannelClosed: the socket is gone.
        """
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close our side; never raises."""
        ...


class RealtimeChannel(Protocol):
    """A Realtime session: a socket to a provider, or the local backend in process."""

    async def receive(self) -> ServerEvent:
        """The next server event.

        Raises:
            ChannelClosed: the session is gone.
            RealtimeProtocolError: a malformed event was skipped; receive again.
        """
        ...

    async def send(self, event: ClientEvent) -> None:
        """Raises ChannelClosed when the session is gone."""
        ...

    async def close(self) -> None:
        """End the session within a second; never raises."""
        ...
