"""Pause, then decide: whether a sound over an answer interrupts it.

The caller's own audio tells how long a sound lasts, against the line's own noise: the
quieter fifth of the second before the pause sets the floor, and a frame counts as sound
when it is well above that floor (and above an absolute minimum). A sound that goes on for
`InterruptPolicy.min_ms`, or whose transcript has `min_words` words that are not fillers
or backchannels, is an interruption; one that ends sooner is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from bot.core.codec import rms, ulaw_to_pcm16

__all__ = [
    "FILLERS",
    "TRANSCRIPT_WAIT_MS",
    "LISTEN_AFTER_SOUND_MS",
    "SOUND_ENDS_AFTER_MS",
    "InterruptPolicy",
    "Pause",
    "SoundMeter",
    "real_words",
]

MIN_SOUND_RMS: Final = 600  # PCM16; a quiet phone line is a few hundred, speech thousands
OVER_FLOOR: Final = 3.0  # a sound is this many times the line's noise floor (about 10 dB)
# A silence this long ends the sound: well under the server's VAD silence (500 ms), so a
# cough resumes the answer quickly.
SOUND_ENDS_AFTER_MS: Final = 120
# After playing on, sound again within this long counts toward the same interruption
# (speech pauses at commas: "Wait, ... stop"); the server's end of the turn decides sooner.
LISTEN_AFTER_SOUND_MS: Final = 1_000
# A short sound's words decide it once its turn is over; the answer plays on meanwhile,
# and past this wait for the transcript the sound is not an interruption.
TRANSCRIPT_WAIT_MS: Final = 1_500
# Backchannels and fillers: words that do not make a sound an interruption.
FILLERS: Final = frozenset(
    "uh huh uh-huh mm mhm mm-hmm hmm um umm uh er ah oh yeah yes yep yup ok okay right "
    "sure alright i see got it cool nice great".split()
)


@dataclass(frozen=True, slots=True)
class InterruptPolicy:
    """When speech over an answer interrupts it. `confirm` False: at once (instant mode)."""

    confirm: bool = False
    min_ms: int = 500
    min_words: int = 2
    protect_greeting: bool = False  # the greeting plays to its end whatever the caller does
    transcripts: bool = False  # the caller's speech is transcribed, so words can decide


def real_words(transcript: str) -> int:
    """Words of a transcript that are not fillers or backchannels."""
    words = [w.strip(".,!?;:\"'()").lower() for w in transcript.split()]
    return sum(1 for w in words if w and w not in FILLERS)


class SoundMeter:
    """Whether a caller frame (20 ms of μ-law) is a sound, against the line's noise floor,
    which the frames just before the pause set."""

    __slots__ = ("threshold",)

    def __init__(self, before: Iterable[bytes]) -> None:
        levels = sorted(rms(ulaw_to_pcm16(frame)) for frame in before)
        floor = levels[len(levels) // 5] if levels else 0
        self.threshold = max(MIN_SOUND_RMS, floor * OVER_FLOOR)

    def sound(self, ulaw: bytes) -> bool:
        return rms(ulaw_to_pcm16(ulaw)) >= self.threshold


@dataclass(slots=True)
class Pause:
    """A sound over an answer that may or may not be an interruption, from the server's
    `speech_started` until the decision. Playback is stopped while it is decided; a first
    short sound lets it play on, and more sound in the same turn stops it again."""

    started_ms: int
    meter: SoundMeter
    items: list[str] = field(default_factory=list)  # caller items the server made of it
    sound_ms: int = 0  # how much of the caller's audio was sound, in all
    sound_until_ms: int = 0  # the newest caller frame with sound in it
    paused_since: int | None = None  # playback is stopped (since then)
    paused_ms: int = 0  # stopped before, in all
    resumed: bool = False  # it played on once already
    words: dict[str, str] = field(default_factory=dict)  # the items' transcripts so far
    transcribed: set[str] = field(default_factory=set)  # items whose transcript is final
    committed: list[str] = field(default_factory=list)  # items committed before the decision
    decide_by_ms: int | None = None  # the turn is over; the transcript decides until then

    def __post_init__(self) -> None:
        self.sound_until_ms = self.started_ms

    def real_words(self) -> int:
        return real_words(" ".join(self.words[item] for item in self.items if item in self.words))

    def transcripts_pending(self) -> bool:
        return any(item not in self.transcribed for item in self.items)
