"""Which sounds over an answer should interrupt it: generated clips through the bridge's
own pause-then-decide rule (`bot/call/core/interrupts.py`), frame by frame as on a call.

Clips: Piper (the local backend's voice) saying backchannels ("uh-huh", "yeah", "okay",
"mm-hmm") and real interruptions ("wait, stop, I have a question", ...); a cough-like and
a keyboard-like noise burst; each alone on a quiet line and over a babble or a TV-like
background. For each: how long the meter hears the sound, and what the rule decides at
several `INTERRUPT_MIN_MS` (and when, from the pause).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.call.core.interrupts import SOUND_ENDS_AFTER_MS, SoundMeter  # noqa: E402
from bot.core.codec import pcm16_to_ulaw, resample  # noqa: E402

BACKCHANNELS = ("Uh-huh.", "Yeah.", "Okay.", "Mm-hmm.", "Right.")
INTERRUPTIONS = (
    "Wait, stop, I have a question.",
    "Hold on, that's not what I asked.",
    "No, no, I need the other one.",
)
BACKGROUND_TEXT = (
    "The weather tomorrow will be mild with some clouds in the afternoon.",
    "Our special offer ends this weekend, so call now to save.",
    "He said the meeting was moved to Thursday at three.",
    "Traffic on the main road is slow because of the roadworks.",
)
RATE = 8000
FRAME = 160


def speak(voice: object, text: str) -> np.ndarray:
    speech = voice._run(text)  # type: ignore[attr-defined]
    pcm = resample(speech.pcm16, speech.rate_hz, RATE)
    return np.frombuffer(pcm, "<i2").astype(np.float64)


def cough(rng: np.random.Generator) -> np.ndarray:
    """200 ms of noise with a sharp attack and a decay, like a cough."""
    n = int(0.2 * RATE)
    envelope = np.exp(-np.arange(n) / (0.06 * RATE))
    return rng.normal(0, 9000, n) * envelope


def keyboard(rng: np.random.Generator) -> np.ndarray:
    """400 ms of key clicks: 5 ms bursts every 60-120 ms."""
    out = np.zeros(int(0.4 * RATE))
    at = 0
    while at < len(out) - 40:
        out[at : at + 40] += rng.normal(0, 7000, 40) * np.exp(-np.arange(40) / 10)
        at += int(rng.integers(480, 960))
    return out


def backgrounds(voice: object, rng: np.random.Generator, seconds: float) -> dict[str, np.ndarray]:
    n = int(seconds * RATE)
    quiet = rng.normal(0, 60, n)  # a clean line's hiss
    babble = np.zeros(n)
    for index, text in enumerate(BACKGROUND_TEXT):
        talk = np.tile(speak(voice, text), 3)[:n]
        babble[: len(talk)] += np.roll(talk, index * 2000)[: len(talk)] * 0.12
    tv = np.zeros(n)
    talk = np.tile(speak(voice, BACKGROUND_TEXT[1]), 3)[:n]
    tv[: len(talk)] += talk * 0.2
    tv += 600 * np.sin(2 * np.pi * 220 * np.arange(n) / RATE)  # music-like tone under it
    return {"quiet line": quiet, "babble": babble + quiet, "TV": tv + quiet}


def frames_of(signal: np.ndarray) -> list[bytes]:
    pcm = np.clip(signal, -32768, 32767).astype("<i2").tobytes()
    ulaw = pcm16_to_ulaw(pcm)
    return [ulaw[i : i + FRAME] for i in range(0, len(ulaw) - FRAME + 1, FRAME)]


def decide(
    frames: list[bytes], start: int, min_ms: int, quiet_ms: int = SOUND_ENDS_AFTER_MS
) -> tuple[str, int, int]:
    """The rule as the session runs it, from the pause at frame `start` (the server's
    speech_started) to the end of the server's turn (500 ms of silence, its default):
    (decision, sound ms heard, ms from the pause to the decision). A first short sound
    plays on; more sound in the same turn stops playback again."""
    meter = SoundMeter(frames[max(0, start - 50) : start])
    sound_ms = sound_until = 0
    resumed = False
    for offset, frame in enumerate(frames[start:]):
        now = offset * 20
        if meter.sound(frame):
            sound_ms += 20
            sound_until = now
        if sound_ms >= min_ms:
            return "confirm", sound_ms, now
        silent = now - sound_until
        if not resumed and silent >= quiet_ms:
            resumed = True
        if silent >= 500:  # the server's VAD ends the turn
            return "resume", sound_ms, now
    return "undecided", sound_ms, len(frames) * 20


def main(min_values: list[int], quiet_ms: int) -> None:
    from bot.localrt.offline import PiperVoice

    rng = np.random.default_rng(11)
    voice = PiperVoice(varied=False)
    clips: dict[str, tuple[np.ndarray, bool]] = {}
    for text in BACKCHANNELS:
        clips[f'"{text}"'] = (speak(voice, text) * 1.5, False)
    for text in INTERRUPTIONS:
        clips[f'"{text}"'] = (speak(voice, text) * 1.5, True)
    clips["cough (200 ms burst)"] = (cough(rng), False)
    clips["keyboard (400 ms of clicks)"] = (keyboard(rng), False)
    header = " | ".join(f"{m} ms" for m in min_values)
    print(f"| clip | background | sound heard | {header} |")
    print("|---|---|---|" + "---|" * len(min_values))
    wrong = {m: 0 for m in min_values}
    for background_name, background in backgrounds(voice, rng, 6.0).items():
        for name, (clip, interrupts) in clips.items():
            signal = background.copy()
            at = 2 * RATE
            signal[at : at + len(clip)] += clip
            frames = frames_of(signal)
            # The server's VAD says speech_started about 60 ms into the sound.
            loud = np.abs(clip) > 1500
            first = int(np.argmax(loud)) if loud.any() else 0
            start = (at + first) // FRAME + 3
            cells = []
            sound_ms = 0
            for min_ms in min_values:
                decision, sound_ms, after = decide(frames, start, min_ms, quiet_ms)
                ok = (decision == "confirm") == interrupts
                wrong[min_ms] += not ok
                cells.append(f"{decision}{'' if ok else ' ✗'} ({after} ms)")
            print(f"| {name} | {background_name} | {sound_ms} ms | " + " | ".join(cells) + " |")
    print()
    print(
        f"wrong decisions (a sound ends after {quiet_ms} ms of silence): "
        + ", ".join(f"{m} ms: {n}" for m, n in wrong.items())
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-ms", type=int, nargs="+", default=[300, 400, 500, 600, 800])
    parser.add_argument(
        "--quiet-ms", type=int, default=SOUND_ENDS_AFTER_MS, help="silence that ends a sound"
    )
    args = parser.parse_args()
    main(args.min_ms, args.quiet_ms)
