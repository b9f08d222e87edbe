"""The two sockets of a call as the call loop sees them: typed messages, one way of closing.

Adapters (`twilio_socket.py`, `realtime_socket.py`, and the local backend's in-process
channel) translate their library's exceptions here, so nothing above the seam knows which
library carries the call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

from bot.core.realtime.events import ClientEvent, ServerEvent
from bot.core.twilio import TwilioEvent, TwilioMessage

__all__ = [
    "ChannelClosed",
    "DirectRealtimeChannel",
    "DirectTwilioChannel",
    "RealtimeChannel",
    "TwilioChannel",
]


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


# ---- direct delivery ---------------------------------------------------------------------
# A socket read in a callback (`bot serve`'s picows sockets) can hand an event to the call
# right there, while the call's pump waits in `receive` with nothing queued, and write at
# once: no task to wake and no coroutine to step for each of some 80 events a second. The
# handler returns False for an event it leaves to the pump, which then gets it in order.


@runtime_checkable
class DirectTwilioChannel(TwilioChannel, Protocol):
    def deliver_directly(self, handler: Callable[[TwilioEvent], bool] | None) -> None:
        """Offer each event to `handler` in the read callback while `receive` waits with
        nothing queued; None: every event waits for `receive` again."""
        ...

    def send_now(self, messages: Sequence[TwilioMessage]) -> None:
        """`send`, synchronously: the write goes to the socket at once.

        Raises:
            ChannelClosed: the socket is gone.
        """
        ...


@runtime_checkable
class DirectRealtimeChannel(RealtimeChannel, Protocol):
    def deliver_directly(self, handler: Callable[[ServerEvent], bool] | None) -> None:
        """As `DirectTwilioChannel.deliver_directly`."""
        ...

    def send_now(self, event: ClientEvent) -> None:
        """`send`, synchronously.

        Raises:
            ChannelClosed: the session is gone.
        """
        ...
