"""The calls of this process: who is live, Realtime sessions opened ahead of their stream,
and answering-machine verdicts that arrive before their stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.call.channels import RealtimeChannel
from bot.call.core.session import CallStats
from bot.cluster.core.messages import ControlAction

__all__ = ["CallRegistry", "Dialer", "RegisteredCall"]

Dialer = Callable[[], Coroutine[Any, Any, RealtimeChannel]]
_VERDICT_TTL_S = 120


class RegisteredCall(Protocol):
    @property
    def call_sid(self) -> str: ...

    @property
    def stats(self) -> CallStats: ...

    def end(self, reason: str) -> None:
        """End the call politely: the caller hears the fallback message."""
        ...

    def deliver_verdict(self, answered_by: str) -> None: ...

    def control(self, action: ControlAction, words: str) -> None:
        """An operator's action: hang up, transfer, or say `words`."""
        ...

    async def hand_over(self) -> None:
        """Move the call to another instance (this one is stopping), if it can be."""
        ...

    def moved(self) -> None:
        """Another instance's stream took the call over: end this side quietly."""
        ...


@dataclass
class CallRegistry:
    dial: Dialer
    prewarm_ttl_s: float = 30.0
    calls: dict[str, RegisteredCall] = field(default_factory=dict)  # live, by CallSid
    calls_started: int = 0
    cleanups: set[asyncio.Task[None]] = field(default_factory=set)  # calls finishing
    sockets: int = 0  # media sockets open, calls or not (yet)
    _verdicts: dict[str, str] = field(default_factory=dict)
    _prewarmed: dict[str, asyncio.Task[RealtimeChannel]] = field(default_factory=dict)
    _shutting_down: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def load(self) -> int:
        """Calls live or about to be: a webhook answered, its stream not yet here."""
        return len(self.calls) + len(self._prewarmed)

    def live_stats(self) -> Iterator[CallStats]:
        return (call.stats for call in self.calls.values())

    def prewarm(self, call_sid: str) -> None:
        """Start opening the Realtime session while Twilio sets up the stream.

        Only called after the webhook signature was verified, so strangers cannot use it.
        A session no stream claims within `prewarm_ttl_s` is closed.
        """
        if call_sid in self._prewarmed:
            return
        task = asyncio.create_task(self.dial(), name=f"prewarm {call_sid}")
        self._prewarmed[call_sid] = task
        asyncio.get_running_loop().call_later(self.prewarm_ttl_s, self._expire, call_sid, task)

    def drop_prewarmed(self, call_sid: str) -> None:
        """The call's stream started on another worker or instance: the session opened here
        for it is closed now, not when it expires."""
        task = self._prewarmed.pop(call_sid, None)
        if task is not None:
            _discard(task)

    def control(self, call_sid: str, action: ControlAction, words: str) -> bool:
        """Hand an operator's action to the call if it runs here."""
        call = self.calls.get(call_sid)
        if call is None:
            return False
        call.control(action, words)
        return True

    def moved(self, call_sid: str) -> None:
        call = self.calls.get(call_sid)
        if call is not None:
            call.moved()

    async def hand_over_all(self) -> None:
        """Move every live call to another instance; those that cannot move stay."""
        if self.calls:
            await asyncio.gather(*(call.hand_over() for call in list(self.calls.values())))

    def _expire(self, call_sid: str, task: asyncio.Task[RealtimeChannel]) -> None:
        if self._prewarmed.get(call_sid) is task:
            del self._prewarmed[call_sid]
            _discard(task)

    async def take_realtime(self, call_sid: str) -> RealtimeChannel:
        """The session opened for this call at its webhook, or a new one.

        Raises:
            RealtimeUnavailable: it could not be opened.
        """
        task = self._prewarmed.pop(call_sid, None)
        if task is None:
            return await self.dial()
        return await task

    def register(self, call: RegisteredCall) -> None:
        if call.call_sid in self.calls:
            # Admission lets one stream per call in; two bots on one line would talk over
            # each other, and the live one is the one the caller is hearing.
            call.end("the call already has a live stream")
            return
        if self._shutting_down:
            call.end("server shutting down")
        self.calls[call.call_sid] = call
        self.calls_started += 1

    def unregister(self, call: RegisteredCall) -> None:
        if self.calls.get(call.call_sid) is call:
            del self.calls[call.call_sid]
        self._changed.set()

    @contextlib.contextmanager
    def media_socket(self) -> Iterator[None]:
        """A media socket from accept to close: shutdown waits for it to become a call and
        end, or to be refused."""
        self.sockets += 1
        try:
            yield
        finally:
            self.sockets -= 1
            self._changed.set()

    def track_cleanup(self, cleanup: asyncio.Task[None]) -> None:
        """The clean-up of an ended call: shutdown waits for it."""
        self.cleanups.add(cleanup)

        def done(task: asyncio.Task[None]) -> None:
            self.cleanups.discard(task)
            self._changed.set()

        cleanup.add_done_callback(done)

    async def wait_idle(self) -> None:
        """Until no media socket is open, no call is live and every ended call is written
        up."""
        while self.calls or self.cleanups or self.sockets:
            self._changed.clear()
            await self._changed.wait()

    def deliver_verdict(self, call_sid: str, answered_by: str) -> None:
        """Answering-machine detection's result, for the call's stream now or when it starts."""
        call = self.calls.get(call_sid)
        if call is not None:
            call.deliver_verdict(answered_by)
            return
        self._verdicts[call_sid] = answered_by
        asyncio.get_running_loop().call_later(_VERDICT_TTL_S, self._verdicts.pop, call_sid, None)

    def take_verdict(self, call_sid: str) -> str | None:
        return self._verdicts.pop(call_sid, None)

    def end_all_calls(self, reason: str) -> None:
        """End every live call politely, and every call that starts from now on."""
        self._shutting_down = True
        for call in list(self.calls.values()):
            call.end(reason)

    async def close(self) -> None:
        for task in self._prewarmed.values():
            _discard(task)
        self._prewarmed.clear()
        if self.cleanups:
            await asyncio.wait(self.cleanups, timeout=2)


def _discard(task: asyncio.Task[RealtimeChannel]) -> None:
    """Cancel a pre-open, or close the session it produced."""
    if not task.done():
        task.cancel()
        return
    if task.cancelled() or task.exception() is not None:
        return
    closing = asyncio.get_running_loop().create_task(task.result().close())
    closing.add_done_callback(lambda t: t.cancelled() or t.exception())
