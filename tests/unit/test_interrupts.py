"""Whether a sound over an answer interrupts it: fillers, and sound against the line's floor."""

from __future__ import annotations

import numpy as np

from bot.call.core.interrupts import SoundMeter, real_words
from bot.core.codec import pcm16_to_ulaw


def frame(level: float, seed: int = 0) -> bytes:
    noise = np.random.default_rng(seed).normal(0, level, 160).clip(-32768, 32767)
    return pcm16_to_ulaw(noise.astype("<i2").tobytes())


def test_fillers_and_backchannels_are_not_words_that_interrupt() -> None:
    assert real_words("Uh-huh.") == 0
    assert real_words("Yeah, okay, mm-hmm, right!") == 0
    assert real_words("Wait, stop, I have a question") == 5
    assert real_words("No, no, the other one") == 5
    assert real_words("") == 0


def test_a_sound_is_measured_against_the_lines_own_noise() -> None:
    quiet_line = SoundMeter([frame(60, n) for n in range(50)])
    assert quiet_line.sound(frame(3000)) and not quiet_line.sound(frame(300))
    # Over a loud background (a television), the same voice level must stand out from it.
    noisy_line = SoundMeter([frame(1500, n) for n in range(50)])
    assert not noisy_line.sound(frame(1500, 99))
    assert noisy_line.sound(frame(9000))
    assert SoundMeter([]).sound(frame(3000))
