"""What the caller heard of an answer cut short: the one rule both the call log and the local
backend's memory use, so they never disagree about it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["heard_text"]

_WHOLE: Final = 0.98  # this much of a piece's audio played: the piece was heard


def heard_text(pieces: Sequence[tuple[str, int]], heard_ms: int) -> str:
    """The words heard when playback stopped `heard_ms` into an answer.

    `pieces` are the answer's text in order, each with the milliseconds of audio that speak
    it (one piece for the whole answer when nothing finer is known). Pieces that played
    completely are kept; the piece playback stopped in keeps the words that fit in the
    share of its audio that played, judged by characters. This is an estimate: speech rate
    is not uniform.
    """
    heard: list[str] = []
    elapsed = 0
    for text, duration_ms in pieces:
        if duration_ms <= 0:  # text without audio (speech failed): heard once reached
            if heard_ms < elapsed:
                break
            heard.append(text.strip())
            continue
        if heard_ms >= elapsed + duration_ms * _WHOLE:
            heard.append(text.strip())
            elapsed += duration_ms
            continue
        fraction = max(0, heard_ms - elapsed) / duration_ms
        heard.append(_whole_words(text.strip(), fraction))
        break
    return " ".join(part for part in heard if part)


def _whole_words(text: str, fraction: float) -> str:
    cut = int(len(text) * fraction)
    if cut >= len(text) or text[cut].isspace():
        return text[:cut].rstrip()
    space = text.rfind(" ", 0, cut)
    return text[:space].rstrip() if space > 0 else ""
