"""Semantic end of turn for the local backend (`semantic_vad`): whether what the caller
said so far sounds finished, from its words and the pause after them.

The bundled turn-detection model we could find on PyPI (pipecat's smart-turn v3.2, ONNX)
takes about 120 ms per decision on this machine's CPU, six times the 20 ms budget, so the
rule is a heuristic instead. At a short pause (`PROBE_AFTER_MS`) the turn so far is
transcribed; the words decide:

* finished (a full stop or a question mark, or a last word that can end a sentence):
  the turn ends at once, and the probe's words become its transcript;
* unfinished ("I'd like to order a ...", "because", "um", a trailing comma): the caller
  gets up to `MAX_WAIT_MS[eagerness]` of silence, as the hosted `semantic_vad` does;
* no words (a noise): the fixed `silence_duration_ms` of `server_vad` decides.
"""

from __future__ import annotations

from typing import Final

from bot.core.realtime.events import Eagerness

__all__ = ["MAX_WAIT_MS", "PROBE_AFTER_MS", "sounds_finished"]

PROBE_AFTER_MS: Final = 200  # a pause this long asks whether the turn sounds finished
# The longest silence a turn that sounds unfinished is given (the hosted API's 8, 4, 2 s).
MAX_WAIT_MS: Final[dict[Eagerness, int]] = {
    "low": 8_000,
    "medium": 4_000,
    "auto": 4_000,
    "high": 2_000,
}
# Words a sentence does not end on: conjunctions, articles, prepositions, fillers.
_GOES_ON: Final = frozenset(
    "and but or so because if then than that which who whose when while where although "
    "though unless until since as the a an my your our their his her its this these those "
    "to of for with from in on at by about into like um uh er erm hmm well also plus "
    "i i'm i'd i'll we you they he she it's is are was were am be been being have has had "
    "do does did can could would should will shall might must not".split()
)
_ENDS_SENTENCE: Final = (".", "?", "!")


def sounds_finished(text: str) -> bool | None:
    """Whether a transcript sounds like a whole turn; None when it has no words."""
    text = text.strip()
    words = text.split()
    if not words:
        return None
    if text.endswith(("...", "…", ",", "-", "—", ";", ":")):
        return False
    last = words[-1].strip(".,!?;:\"'()").lower()
    if last in _GOES_ON and not text.endswith("?"):
        return False  # "Is that all I need to do?" ends on "do", a question all the same
    return text.endswith(_ENDS_SENTENCE) or bool(last)
