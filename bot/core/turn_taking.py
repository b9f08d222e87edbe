"""How a call takes turns: the provider's turn detection and noise reduction, set for every
call by settings and per outbound call by (signed) stream parameters.

One module for both sides, so the choices the settings accept, those `bot call` and
campaigns accept, and those a stream's parameters may carry cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final, Literal, cast

from bot.core.realtime.events import Eagerness, NoiseReduction, TurnDetection

__all__ = [
    "EAGERNESS",
    "NOISE_REDUCTIONS",
    "TURN_DETECTIONS",
    "TURN_PARAMETERS",
    "turn_parameter_problems",
    "turn_taking",
]

TURN_DETECTIONS: Final = ("server_vad", "semantic_vad")
EAGERNESS: Final = ("low", "medium", "high", "auto")
NOISE_REDUCTIONS: Final = ("off", "near_field", "far_field")
# Stream parameters (and outbound webhook query names) that override the settings per call.
TURN_PARAMETERS: Final = {
    "turn_detection": TURN_DETECTIONS,
    "vad_eagerness": EAGERNESS,
    "noise_reduction": NOISE_REDUCTIONS,
}


def turn_parameter_problems(parameters: Mapping[str, str]) -> list[str]:
    """What is wrong with the turn-taking parameters among `parameters`."""
    return [
        f"{name} must be one of {', '.join(choices)}; got {parameters[name]!r}"
        for name, choices in TURN_PARAMETERS.items()
        if name in parameters and parameters[name] not in choices
    ]


def turn_taking(
    base: TurnDetection, parameters: Mapping[str, str]
) -> tuple[TurnDetection | None, NoiseReduction | Literal["off"] | None]:
    """A call's own turn detection and noise reduction from its parameters; None where it
    keeps the session's. Invalid values are ignored (see `turn_parameter_problems`)."""
    detection = parameters.get("turn_detection")
    eagerness = parameters.get("vad_eagerness")
    turn = None
    if detection in TURN_DETECTIONS or eagerness in EAGERNESS:
        semantic = (
            base.semantic if detection not in TURN_DETECTIONS else detection == "semantic_vad"
        )
        turn = replace(
            base,
            semantic=semantic,
            eagerness=cast(Eagerness, eagerness) if eagerness in EAGERNESS else base.eagerness,
        )
    noise = parameters.get("noise_reduction")
    chosen = cast(NoiseReduction | Literal["off"], noise) if noise in NOISE_REDUCTIONS else None
    return turn, chosen
