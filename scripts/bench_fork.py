"""A listened call: one transcription session per track, or one shared session for both?

A two-sided phone conversation is generated (Piper's voice for both people, the agent
pitched up a little so the mix stays two voices), with what real calls have: turns that
follow each other, a backchannel ("mm-hmm") over the other side, and a stretch where both
talk at once. Each way goes through the same voice activity detection (the local
backend's, `bot/localrt/core/vad.py`, as a transcription session would segment it):

* per track: each track is segmented alone; a turn's speaker is its track's;
* shared: the tracks are mixed into one stream (what one session would hear); a turn's
  speaker is the track that was louder over it.

It reports how much of each person's speech ends up in a turn labelled with someone else
(or merged into the other's turn), and the bridge's own cost per second of call: the
`input_audio_buffer.append` events it encodes, and for the shared way the mixing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core.codec import pcm16_to_ulaw, resample, ulaw_to_pcm16  # noqa: E402
from bot.core.realtime import events as rt  # noqa: E402
from bot.core.realtime.client import encode_client_event  # noqa: E402
from bot.core.realtime.dialects import Dialect  # noqa: E402
from bot.localrt.core.vad import SpeechEnded, SpeechStarted, TurnTracker  # noqa: E402

RATE = 8000
FRAME = 160
SCRIPT = (  # (speaker, start s, text)
    ("caller", 0.5, "Hi, I ordered a blue jacket two weeks ago and it has not arrived yet."),
    ("agent", 4.6, "I am sorry to hear that. Can you give me the order number?"),
    ("caller", 8.4, "Sure, it is four four one seven, and the name is Dana Smith."),
    ("agent", 10.2, "Mm-hmm."),  # a backchannel over the caller
    ("agent", 12.8, "Thank you. I can see it was delayed at the depot."),
    ("caller", 14.2, "Wait, so when will it come?"),  # both talk at once
    ("agent", 17.5, "It should arrive on Friday. Is there anything else?"),
    ("caller", 21.0, "No, that is all, thank you."),
)


def synthesize() -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    from bot.localrt.offline import PiperVoice

    voice = PiperVoice(varied=False)
    tracks = {"caller": np.zeros(25 * RATE), "agent": np.zeros(25 * RATE)}
    truth = []
    for speaker, at_s, text in SCRIPT:
        speech = voice._run(text)  # noqa: SLF001
        rate = speech.rate_hz if speaker == "caller" else int(speech.rate_hz * 1.12)
        pcm = np.frombuffer(resample(speech.pcm16, rate, RATE), "<i2").astype(np.float64)
        start = int(at_s * RATE)
        tracks[speaker][start : start + len(pcm)] += pcm
        loud = np.flatnonzero(np.abs(pcm) > 500)
        truth.append((speaker, start + int(loud[0]), start + int(loud[-1])))
    return tracks["caller"], tracks["agent"], truth


def segments(signal: np.ndarray) -> list[tuple[int, int]]:
    """Turns (start, end sample) as a session's VAD would find them."""
    tracker, vad, found = TurnTracker(), rt.TurnDetection(), []
    pcm = np.clip(signal, -32768, 32767).astype("<i2").tobytes()
    started = 0
    for index in range(0, len(pcm) // 2 // FRAME):
        frame = pcm[index * FRAME * 2 : (index + 1) * FRAME * 2]
        change = tracker.frame(frame, RATE, (index + 1) * 20, vad)
        if isinstance(change, SpeechStarted):
            started = change.audio_start_ms * RATE // 1000
        elif isinstance(change, SpeechEnded):
            found.append((started, change.audio_end_ms * RATE // 1000))
    return found


def labelled(
    turns: list[tuple[str, str, int, int]], truth: list[tuple[str, int, int]]
) -> tuple[dict[str, float], int]:
    """Seconds of each person's speech inside a turn labelled with their name (a turn is
    (track it came from, label, start, end); speech is in a turn only if the turn's audio
    holds it: its own track's turns, or any turn of the mix), and how many turns hold both
    voices."""
    right = {"caller": 0.0, "agent": 0.0}
    both = 0
    for source, label, turn_start, turn_end in turns:
        voices = set()
        for speaker, start, end in truth:
            overlap = min(end, turn_end) - max(start, turn_start)
            if overlap <= 0 or source not in (speaker, "mix"):
                continue
            voices.add(speaker)
            if label == speaker:
                right[speaker] += overlap / RATE
        both += len(voices) == 2
    return right, both


def cost_us(caller: bytes, agent: bytes, shared: bool, rounds: int) -> float:
    """Microseconds of the bridge's work per 20 ms of call (both tracks)."""
    frames = [(caller[i : i + FRAME], agent[i : i + FRAME]) for i in range(0, len(caller), FRAME)]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for inbound, outbound in frames:
            if shared:
                a = np.frombuffer(ulaw_to_pcm16(inbound), "<i2").astype(np.int32)
                b = np.frombuffer(ulaw_to_pcm16(outbound), "<i2").astype(np.int32)
                mixed = np.clip(a + b, -32768, 32767).astype("<i2").tobytes()
                encode_client_event(rt.AppendAudio(pcm16_to_ulaw(mixed)), Dialect.GA)
            else:
                encode_client_event(rt.AppendAudio(inbound), Dialect.GA)
                encode_client_event(rt.AppendAudio(outbound), Dialect.GA)
        times.append((time.perf_counter() - started) / len(frames) * 1e6)
    return statistics.median(times)


def main(rounds: int) -> None:
    caller, agent, truth = synthesize()
    speech_s = {
        s: sum((e - b) / RATE for sp, b, e in truth if sp == s) for s in ("caller", "agent")
    }
    per_track = [("caller", "caller", b, e) for b, e in segments(caller)]
    per_track += [("agent", "agent", b, e) for b, e in segments(agent)]
    shared = []
    for start, end in segments(caller + agent):
        louder = np.sum(caller[start:end] ** 2) >= np.sum(agent[start:end] ** 2)
        shared.append(("mix", "caller" if louder else "agent", start, end))
    to_ulaw = lambda x: pcm16_to_ulaw(np.clip(x, -32768, 32767).astype("<i2").tobytes())  # noqa: E731
    print(
        "| | turns | caller's speech labelled caller | agent's speech labelled agent "
        "| turns holding both voices | bridge µs per 20 ms |"
    )
    print("|---|---|---|---|---|---|")
    for name, turns, is_shared in (("per track", per_track, False), ("shared", shared, True)):
        right, both = labelled(turns, truth)
        cost = cost_us(to_ulaw(caller), to_ulaw(agent), is_shared, rounds)
        print(
            f"| {name} | {len(turns)} | {100 * right['caller'] / speech_s['caller']:.0f} % "
            f"| {100 * right['agent'] / speech_s['agent']:.0f} % | {both} | {cost:.1f} |"
        )
    print("Audio sent to the provider per minute of call: per track 2 min, shared 1 min.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    main(parser.parse_args().rounds)
