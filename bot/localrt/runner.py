"""Runs one local Realtime session: the pure core, plus tasks for its provider jobs.

Speech for a response is produced one sentence after another by a speaker task, so the
first sentence plays while the model is still writing the rest. Cancelling a response
(barge-in, `response.cancel`) cancels its model and speaker tasks. Provider failures and
timeouts become error events; they never end the session.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Final, assert_never

from bot.core.codec import pcm16_to_ulaw, resample
from bot.core.realtime.events import AudioFormat, ClientEvent, ServerEvent
from bot.localrt.core.session import (
    Cancel,
    Emit,
    Generate,
    Output,
    ProbeTurn,
    RealtimeServerSession,
    Synthesize,
    Transcribe,
)
from bot.localrt.providers import ChatDone, Providers, Speech, TextDelta, ToolCall

__all__ = ["PROVIDER_TIMEOUT_S", "LocalSession", "in_format"]

logger = logging.getLogger(__name__)

PROVIDER_TIMEOUT_S: Final = 30.0


def in_format(speech: Speech, audio: AudioFormat) -> bytes:
    """Synthesized speech as the session's output format: one resampling per sentence."""
    pcm = resample(speech.pcm16, speech.rate_hz, audio.rate_hz)
    return pcm16_to_ulaw(pcm) if audio is AudioFormat.G711_ULAW else pcm


class LocalSession:
    def __init__(
        self,
        providers: Providers,
        send: Callable[[ServerEvent], Awaitable[None]],
        *,
        model: str,
        provider_timeout_s: float = PROVIDER_TIMEOUT_S,
        transcribe_only: bool = False,
    ) -> None:
        detector = providers.vad() if providers.vad is not None else None
        self.session = RealtimeServerSession(
            "sess_" + secrets.token_hex(8), model, detector, transcribe_only=transcribe_only
        )
        self.providers = providers
        self.send = send
        self.timeout_s = provider_timeout_s
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._speech: dict[str, asyncio.Queue[Synthesize]] = {}

    async def open(self) -> None:
        await self.run(self.session.open())

    async def receive(self, event: ClientEvent) -> None:
        await self.run(self.session.receive(event))

    async def run(self, outputs: list[Output]) -> None:
        for output in outputs:
            match output:
                case Emit(event):
                    await self.send(event)
                case Transcribe():
                    self._spawn("stt", self._transcribe(output))
                case ProbeTurn():
                    self._spawn("stt", self._probe(output))
                case Generate(response_id):
                    self._speech[response_id] = asyncio.Queue()
                    self._spawn(response_id, self._generate(output))
                    self._spawn(response_id, self._speak(response_id))
                case Synthesize(response_id):
                    queue = self._speech.get(response_id)
                    if queue is not None:
                        queue.put_nowait(output)
                case Cancel(response_id):
                    self._cancel(response_id)
                case _:
                    assert_never(output)

    def _spawn(self, group: str, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        tasks = self._tasks.setdefault(group, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _cancel(self, response_id: str) -> None:
        for task in self._tasks.pop(response_id, set()):
            task.cancel()
        self._speech.pop(response_id, None)

    def stop(self) -> None:
        for group in list(self._tasks):
            for task in self._tasks.pop(group):
                task.cancel()

    async def _transcribe(self, job: Transcribe) -> None:
        prompt = job.prompt or self.providers.transcription_prompt
        try:
            text = await asyncio.wait_for(
                self.providers.stt.transcribe(job.pcm16, job.rate_hz, prompt), self.timeout_s
            )
        except Exception as exc:  # a provider's failure is reported, never fatal
            logger.warning("speech-to-text failed: %s", exc)
            await self.run(self.session.transcription_failed(job.item_id, str(exc)))
            return
        await self.run(self.session.transcribed(job.item_id, text))

    async def _probe(self, job: ProbeTurn) -> None:
        prompt = job.prompt or self.providers.transcription_prompt
        text: str | None
        try:
            text = await asyncio.wait_for(
                self.providers.stt.transcribe(job.pcm16, job.rate_hz, prompt), self.timeout_s
            )
        except Exception as exc:  # the fixed silence wait decides instead
            logger.warning("speech-to-text failed on a pause: %s", exc)
            text = None
        await self.run(self.session.turn_probed(job.probe_id, text))

    async def _generate(self, job: Generate) -> None:
        session = self.session
        try:
            async with asyncio.timeout(self.timeout_s):
                async for event in self.providers.chat.stream(
                    job.instructions, job.messages, job.tools
                ):
                    match event:
                        case TextDelta(text):
                            await self.run(session.generated_text(job.response_id, text))
                        case ToolCall(call_id, name, arguments):
                            await self.run(
                                session.function_call(job.response_id, call_id, name, arguments)
                            )
                        case ChatDone(usage):
                            await self.run(session.generation_done(job.response_id, usage))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # timeouts and provider errors end the response, not the session
            logger.warning("chat model failed: %s", exc)
            await self.run(
                session.generation_failed(job.response_id, f"the chat model failed: {exc}")
            )

    async def _speak(self, response_id: str) -> None:
        queue = self._speech[response_id]
        while True:
            job = await queue.get()
            try:
                speech = await asyncio.wait_for(
                    self.providers.tts.synthesize(job.text, job.voice), self.timeout_s
                )
                audio = in_format(speech, self.session.config.output_format or AudioFormat.PCM16)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("text-to-speech failed: %s", exc)
                audio = b""  # the sentence stays in the transcript; the response still ends
            await self.run(
                self.session.synthesized(response_id, job.sentence_index, job.text, audio)
            )
