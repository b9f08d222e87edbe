"""Serve one Realtime connection: the sans-I/O session plus tasks for the provider jobs.

Speech for a response is produced one sentence after another by a speaker task, so the
first sentence plays while the model is still writing the rest. Cancelling a response
(barge-in, `response.cancel`) cancels its model and speaker tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from bot.localrt.providers import ChatDone, Providers, TextDelta, ToolCall
from bot.sansio.rtserver import (
    Cancel,
    Dialect,
    Emit,
    Generate,
    Output,
    RealtimeServerSession,
    Synthesize,
    Transcribe,
)

__all__ = ["serve_realtime"]

logger = logging.getLogger(__name__)

PROVIDER_TIMEOUT_S: Final = 30.0


async def serve_realtime(
    receive: Callable[[], Awaitable[str | bytes]],
    send: Callable[[str], Awaitable[None]],
    providers: Providers,
    *,
    model: str,
    dialect: Dialect,
    provider_timeout_s: float = PROVIDER_TIMEOUT_S,
) -> None:
    """Run until `receive` raises (the client went away); provider failures never end it."""
    detector = providers.vad() if providers.vad is not None else None
    session = RealtimeServerSession("sess_" + secrets.token_hex(8), model, dialect, detector)
    runner = _Runner(session, providers, send, provider_timeout_s)
    try:
        await runner.run(session.open())
        while True:
            await runner.run(session.receive(await receive()))
    finally:
        runner.stop_all()


class _Runner:
    def __init__(
        self,
        session: RealtimeServerSession,
        providers: Providers,
        send: Callable[[str], Awaitable[None]],
        timeout_s: float,
    ) -> None:
        self.session = session
        self.providers = providers
        self.send = send
        self.timeout_s = timeout_s
        self.tasks: dict[str, set[asyncio.Task[None]]] = {}
        self.speech: dict[str, asyncio.Queue[Synthesize]] = {}

    async def run(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Emit):
                await self.send(json.dumps(output.event))
            elif isinstance(output, Transcribe):
                self._spawn("stt", self._transcribe(output))
            elif isinstance(output, Generate):
                self.speech[output.response_id] = asyncio.Queue()
                self._spawn(output.response_id, self._generate(output))
                self._spawn(output.response_id, self._speak(output.response_id))
            elif isinstance(output, Synthesize):
                queue = self.speech.get(output.response_id)
                if queue is not None:
                    queue.put_nowait(output)
            elif isinstance(output, Cancel):
                self._cancel(output.response_id)

    def _spawn(self, group: str, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        tasks = self.tasks.setdefault(group, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _cancel(self, response_id: str) -> None:
        for task in self.tasks.pop(response_id, set()):
            task.cancel()
        self.speech.pop(response_id, None)

    def stop_all(self) -> None:
        for group in list(self.tasks):
            for task in self.tasks.pop(group):
                task.cancel()

    async def _transcribe(self, job: Transcribe) -> None:
        try:
            text = await asyncio.wait_for(
                self.providers.stt.transcribe(job.pcm16_24k), self.timeout_s
            )
        except Exception as exc:  # a provider's failure is reported, never fatal
            logger.warning("speech-to-text failed: %s", exc)
            await self.run(self.session.transcription_failed(job.item_id, str(exc)))
            return
        await self.run(self.session.transcribed(job.item_id, text))

    async def _generate(self, job: Generate) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                async for event in self.providers.chat.stream(
                    job.instructions, job.messages, job.tools
                ):
                    if isinstance(event, TextDelta):
                        await self.run(self.session.generated_text(job.response_id, event.text))
                    elif isinstance(event, ToolCall):
                        await self.run(
                            self.session.function_call(
                                job.response_id, event.call_id, event.name, event.arguments
                            )
                        )
                    elif isinstance(event, ChatDone):
                        await self.run(self.session.generation_done(job.response_id, event.usage))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # timeouts and provider errors end the response, not the session
            logger.warning("chat model failed: %s", exc)
            await self.run(
                self.session.generation_failed(job.response_id, f"the chat model failed: {exc}")
            )

    async def _speak(self, response_id: str) -> None:
        queue = self.speech[response_id]
        while True:
            job = await queue.get()
            try:
                pcm = await asyncio.wait_for(
                    self.providers.tts.synthesize(job.text, job.voice), self.timeout_s
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("text-to-speech failed: %s", exc)
                pcm = b""  # the sentence stays in the transcript; the response still ends
            await self.run(self.session.synthesized(response_id, job.sentence_index, job.text, pcm))
