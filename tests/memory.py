"""In-memory ends for the call loop: a phone on the Twilio channel and a scripted model on
the Realtime channel, speaking the typed protocol, so a whole call runs without a socket."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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

SECRET = "in-memory-secret"
CALL_SID = "CA" + "5" * 32
STREAM_SID = "MZ" + "5" * 32
ACCOUNT = "AC" + "5" * 32


class MemoryPhone:
    """Twilio's side: the test says what Twilio sends; everything the bridge sends is kept."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[twilio.TwilioEvent | None] = asyncio.Queue()
        self.sent: list[twilio.TwilioMessage] = []
        self.closed_with: int | None = None
        self._frames = 0
        self._acked = 0

    # -- what the test does --------------------------------------------------------------

    def start(self, now: float, **parameters: str) -> None:
        token = issue_stream_token(SECRET, CALL_SID, now, 60, parameters)
        params = {"token": token, **parameters}
        self._inbox.put_nowait(twilio.TwilioStart(STREAM_SID, CALL_SID, ACCOUNT, params))

    def speak(self, frames: int = 1, ulaw: bytes = b"\xff" * 160) -> None:
        """`frames` of caller audio, 20 ms each, on the stream's clock."""
        for _ in range(frames):
            self._inbox.put_nowait(twilio.TwilioMedia(ulaw, self._frames * 20))
            self._frames += 1

    def ack(self, count: int | None = None) -> list[str]:
        """Twilio played up to the `count`-th unacknowledged mark (all of them by default)."""
        names = self.marks()[:count]
        for name in names:
            self._inbox.put_nowait(twilio.TwilioMark(name))
        self._acked += len(names)
        return names

    def hang_up(self) -> None:
        self._inbox.put_nowait(twilio.TwilioStop(CALL_SID))

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
            raise ChannelClosed("twilio", "media socket closed")
        return event

    async def send(self, messages: Sequence[twilio.TwilioMessage]) -> None:
        if self.closed_with is not None:
            raise ChannelClosed("twilio", "media socket closed")
        self.sent.extend(messages)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = code
        self._inbox.put_nowait(None)


class ScriptedModel:
    """The Realtime side: the test says what the model sends; every client event is kept."""

    def __init__(self) -> None:
        self._outbox: asyncio.Queue[rt.ServerEvent | ChannelClosed] = asyncio.Queue()
        self.received: list[rt.ClientEvent] = []
        self.closed = False

    def say(self, *events: rt.ServerEvent) -> None:
        for event in events:
            self._outbox.put_nowait(event)

    def drop(self, reason: str) -> None:
        """The provider goes away, as a socket closed with an error would."""
        self._outbox.put_nowait(ChannelClosed("realtime", reason))

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
    tmp_path: Path, tools: dict[str, Tool] | None = None, **env: str
) -> MemoryCall:
    """Services for one in-memory call: μ-law both ways, the call log on SQLite."""
    # Every frame is its own append, so a test's frame is a step the model sees at once.
    base = {"BOT_DATA_DIR": str(tmp_path), "REALTIME_API_KEY": "k", "AUDIO_APPEND_MS": "20"}
    settings = Settings.from_env({**base, **env})
    models = [ScriptedModel()]
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
        models.append(ScriptedModel())
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
    return MemoryCall(MemoryPhone(), models, services, store, failures)
