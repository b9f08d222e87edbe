"""Latency of the offline local backend, through the bridge, with the phone simulator.

From the end of the caller's speech to the first answer audio the phone hears, split into
the stages: the VAD's silence wait, speech-to-text, the chat model's first text, the first
sentence's speech. Prints medians over several calls on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import Settings  # noqa: E402
from bot.core.codec import pcm16_to_ulaw, resample, ulaw_to_pcm16  # noqa: E402
from bot.localrt.demo_agent import DemoAgent  # noqa: E402
from bot.localrt.offline import PiperVoice, WhisperTranscriber  # noqa: E402
from bot.localrt.providers import Providers, Speech  # noqa: E402
from bot.simulator import simulate  # noqa: E402
from tests.conftest import LOCAL_SECRET, run_app  # noqa: E402


class Timed:
    """The offline services, timing each stage."""

    def __init__(self, stt: Any, chat: Any, tts: Any) -> None:
        self.stt, self.chat, self.tts = stt, chat, tts
        self.marks: dict[str, list[float]] = {"stt": [], "chat_first": [], "tts_first": []}
        self._first_tts = True

    async def transcribe(self, pcm16: bytes, rate_hz: int, prompt: str | None) -> str:
        started = time.perf_counter()
        text = await self.stt.transcribe(pcm16, rate_hz, prompt)
        self.marks["stt"].append(time.perf_counter() - started)
        self._first_tts = True
        return str(text)

    async def stream(self, *args: Any) -> Any:
        started, first = time.perf_counter(), True
        async for event in self.chat.stream(*args):
            if first:
                self.marks["chat_first"].append(time.perf_counter() - started)
                first = False
            yield event

    async def synthesize(self, text: str, voice: str) -> Speech:
        started = time.perf_counter()
        speech: Speech = await self.tts.synthesize(text, voice)
        if self._first_tts:
            self.marks["tts_first"].append(time.perf_counter() - started)
            self._first_tts = False
        return speech


async def main(calls: int, question_text: str) -> None:
    voice = PiperVoice()
    spoken = await voice.synthesize(question_text, "joe")
    question = pcm16_to_ulaw(resample(spoken.pcm16, spoken.rate_hz, 8000))
    samples = np.frombuffer(ulaw_to_pcm16(question), "<i2").astype(np.int32)
    loud = np.flatnonzero(np.abs(samples) > 500)
    speech_s = (int(loud[-1]) + 1) / 8000  # Piper ends with some silence: measure from the voice
    timed = Timed(WhisperTranscriber(), DemoAgent(), voice)
    providers = Providers(timed, timed, timed, transcription_prompt=DemoAgent.TRANSCRIPTION_PROMPT)
    latencies = []
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.from_env({"BOT_DATA_DIR": data})  # no keys: the embedded default
        quiet = dataclasses.replace(settings.call, greeting=None)
        settings = dataclasses.replace(settings, call=quiet)
        async with run_app(settings, local_providers=providers) as app:
            for _ in range(calls):
                result = await simulate(
                    app.url, auth_token=LOCAL_SECRET, say=question, duration_s=speech_s + 4
                )
                if result.first_audio_s is not None:
                    latencies.append(result.first_audio_s - speech_s)
    vad = settings.realtime.vad_silence_ms / 1000
    print(f"question: {question_text!r} ({speech_s:.2f} s of speech), {calls} calls")
    print("| stage | median ms |")
    print("|---|---|")
    print(f"| VAD: silence before the turn ends (VAD_SILENCE_MS) | {vad * 1000:.0f} |")
    stages = (
        ("stt", "speech-to-text (Whisper tiny.en, int8, 2 threads)"),
        ("chat_first", "chat model, first text (demo agent)"),
        ("tts_first", "first sentence of speech (Piper joe-medium)"),
    )
    for name, label in stages:
        values = timed.marks[name]
        median = f"{statistics.median(values) * 1000:.0f}" if values else "-"
        print(f"| {label} | {median} |")
    total = statistics.median(latencies) * 1000
    print(f"| **end of speech to first audio at the phone** | **{total:.0f}** |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--question", default="What can you do for me?")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.question))
