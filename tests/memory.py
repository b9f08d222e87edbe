"""In-memory ends for the call loop: a phone on the Twilio channel and a scripted model on
the Realtime channel, speaking the typed protocol, so a whole call runs without a socket.

With `DIRECT` (or `memory_call(direct=True)`) both ends also deliver directly, as `bot
serve`'s picows sockets do: while the call waits in `receive` with nothing queued, an event
goes to the call's handler as it is put, and sends are synchronous."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from bot.call.admission import Admission
from bot.call.channels import ChannelClosed
from bot.call.journal import SessionLabel
from bot.call.loop import CallServices
from bot.call.metrics import Metrics
from bot.call.registry import CallRegistry
from bot.call.stream_tokens import StreamTokens
from bot.call.tools import Tool
from bot.call.twilio_actions import TwilioActions
from bot.calllog.writer import CallLog
from bot.cluster.bus import Cluster
from bot.config import Settings
from bot.core import twilio
from bot.core.realtime import events as rt
from bot.core.tokens import issue_stream_token
from bot.store.store import Store

DIRECT = False  # the default of `memory_call(direct=...)`
SECRET = "in-memory-secret"
CALL_SID = "CA" + "5" * 32
STREAM_SID = "MZ" + "5" * 32
ACCOUNT = "AC" + "5" * 32


T = TypeVar("T")
E = TypeVar("E")


class _Inbox(Generic[T, E]):
    """What a socket holds unread. With a handler, an event put while the reader waits with
    nothing queued goes to the handler instead, unless it declines it."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.handler: Callable[[E], bool] | None = None

    @property
    def drained(self) -> bool:
        """Everything put was taken, and the reader waits again: it has handled it all."""
        waiter = self._waiter
        return not self._items and waiter is not None and not waiter.done()

    def put(self, item: T, event: E | None = None) -> None:
        waiter = self._waiter
        parked = waiter is not None and not waiter.done() and not self._items
        if self.handler is not None and event is not None and parked and self.handler(event):
            return
        self._items.append(item)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.popleft()


class MemoryPhone:
    """Twilio's side: the test says what Twilio sends; everything the bridge sends is kept."""

    def __init__(self) -> None:
        self._inbox: _Inbox[twilio.TwilioEvent | None, twilio.TwilioEvent] = _Inbox()
        self.sent: list[twilio.TwilioMessage] = []
        self.closed_with: int | None = None
        self._frames = 0
        self._acked = 0

    # -- what the test does --------------------------------------------------------------

    def start(self, now: float, **parameters: str) -> None:
        token = issue_stream_token(SECRET, CALL_SID, now, 60, parameters)
        params = {"token": token, **parameters}
        self._inbox.put(twilio.TwilioStart(STREAM_SID, CALL_SID, ACCOUNT, params))

    def speak(self, frames: int = 1, ulaw: bytes = b"\xff" * 160) -> None:
        """`frames` of caller audio, 20 ms each, on the stream's clock."""
        for _ in range(frames):
            media = twilio.TwilioMedia(ulaw, self._frames * 20)
            self._inbox.put(media, media)
            self._frames += 1

    def ack(self, count: int | None = None) -> list[str]:
        """Twilio played up to the `count`-th unacknowledged mark (all of them by default)."""
        names = self.marks()[:count]
        for name in names:
            mark = twilio.TwilioMark(name)
            self._inbox.put(mark, mark)
        self._acked += len(names)
        return names

    def hang_up(self) -> None:
        stop = twilio.TwilioStop(CALL_SID)
        self._inbox.put(stop, stop)

    @property
    def drained(self) -> bool:
        """The call has handled every frame, and waits for the next."""
        return self._inbox.drained

    def marks(self) -> list[str]:
        """Marks sent and not yet acknowledged by this phone."""
        names = [m.name for m in self.sent if isinstance(m, twilio.OutboundMark)]
        return names[self._acked :]

    def media(self) -> bytes:
        return b"".join(m.ulaw for m in self.sent if isinstance(m, twilio.OutboundMedia))

    def clears(self) -> int:
        return sum(isinstance(m, twilio.OutboundClear) for m in self.sent)

    # -- the TwilioChannel -----------------------------------------------------------------

    async def receive(self) -> twilio.TwilioEvent:
        event = await self._inbox.get()
        if event is None:
            self._inbox.put(None)  # every later receive sees it too
            raise ChannelClosed("twilio", "media socket closed")
        return event

    async def send(self, messages: Sequence[twilio.TwilioMessage]) -> None:
        if self.closed_with is not None:
            raise ChannelClosed("twilio", "media socket closed")
        self.sent.extend(messages)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = code
        self._inbox.put(None)


class ScriptedModel:
    """The Realtime side: the test says what the model sends; every client event is kept."""

    def __init__(self) -> None:
        self._outbox: _Inbox[rt.ServerEvent | ChannelClosed, rt.ServerEvent] = _Inbox()
        self.received: list[rt.ClientEvent] = []
        self.closed = False

    def say(self, *events: rt.ServerEvent) -> None:
        for event in events:
            self._outbox.put(event, event)

    def drop(self, reason: str) -> None:
        """The provider goes away, as a socket closed with an error would."""
        self._outbox.put(ChannelClosed("realtime", reason))

    @property
    def drained(self) -> bool:
        """The call has handled everything the model said (events of the two sockets have
        no order of their own; a test that needs one waits for this)."""
        return self._outbox.drained

    def of_type(self, kind: type[rt.ClientEvent]) -> list[rt.ClientEvent]:
        return [e for e in self.received if isinstance(e, kind)]

    async def receive(self) -> rt.ServerEvent:
        event = await self._outbox.get()
        if isinstance(event, ChannelClosed):
            raise event
        return event

    async def send(self, event: rt.ClientEvent) -> None:
        if self.closed:
            raise ChannelClosed("realtime", "closed")
        self.received.append(event)

    async def close(self) -> None:
        self.closed = True


class DirectPhone(MemoryPhone):
    def deliver_directly(self, handler: Callable[[twilio.TwilioEvent], bool] | None) -> None:
        self._inbox.handler = handler

    def send_now(self, messages: Sequence[twilio.TwilioMessage]) -> None:
        if self.closed_with is not None:
            raise ChannelClosed("twilio", "media socket closed")
        self.sent.extend(messages)


class DirectModel(ScriptedModel):
    def deliver_directly(self, handler: Callable[[rt.ServerEvent], bool] | None) -> None:
        self._outbox.handler = handler

    def send_now(self, event: rt.ClientEvent) -> None:
        if self.closed:
            raise ChannelClosed("realtime", "closed")
        self.received.append(event)


@dataclass
class MemoryCall:
    phone: MemoryPhone
    models: list[ScriptedModel]  # every session dialled, in order
    services: CallServices
    store: Store
    dial_failures: list[Exception]  # raised by the next dials, in order

    @property
    def model(self) -> ScriptedModel:
        """The first session."""
        return self.models[0]

    @property
    def latest(self) -> ScriptedModel:
        return self.models[-1]


async def memory_call(
    tmp_path: Path, tools: dict[str, Tool] | None = None, direct: bool | None = None, **env: str
) -> MemoryCall:
    """Services for one in-memory call: μ-law both ways, the call log on SQLite."""
    model_class = DirectModel if (DIRECT if direct is None else direct) else ScriptedModel
    # Every frame is its own append, so a test's frame is a step the model sees at once.
    base = {"BOT_DATA_DIR": str(tmp_path), "REALTIME_API_KEY": "k", "AUDIO_APPEND_MS": "20"}
    settings = Settings.from_env({**base, **env})
    models = [model_class()]
    failures: list[Exception] = []
    dialled = 0

    async def dial() -> ScriptedModel:
        """The first session, then a new one each time (a reconnect, a renewal)."""
        nonlocal dialled
        dialled += 1
        if dialled == 1:
            return models[0]
        if failures:
            raise failures.pop(0)
        models.append(model_class())
        return models[-1]

    store = await Store.open(settings.calllog.database)
    registry = CallRegistry(dial)
    services = CallServices(
        registry=registry,
        admission=Admission(StreamTokens(SECRET, 60), None, 1.0),
        settings=settings.call,
        audio=rt.AudioFormat.G711_ULAW,
        label=SessionLabel("memory", "scripted", "none", "g711_ulaw"),
        call_log=CallLog(store.calls),
        metrics=Metrics(registry.live_stats),
        actions=TwilioActions(None, settings.call),
        tools=tools or {},
        recordings=None,
        cluster=Cluster(registry, None, "sqlite://", 0),  # alone: all of it local
    )
    phone = DirectPhone() if model_class is DirectModel else MemoryPhone()
    return MemoryCall(phone, models, services, store, failures)
