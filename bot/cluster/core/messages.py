"""What one instance tells the others, as JSON small enough for a PostgreSQL notification.

Every instance hears every message and acts on those about calls it serves: a stream that
started elsewhere, or a call over before any stream (either way a Realtime session opened
here for it is closed), an answering-machine verdict, and an operator's control action
(hang up, transfer, say this).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

from bot.core.ids import is_call_sid

__all__ = [
    "MAX_SAY_CHARS",
    "Claimed",
    "ClusterMessage",
    "Control",
    "ControlAction",
    "Delivery",
    "Over",
    "Verdict",
    "decode",
    "encode",
]

MAX_SAY_CHARS: Final = 2000  # a notification carries at most 8000 bytes
MAX_PAYLOAD_CHARS: Final = 8000
ControlAction = Literal["hang_up", "transfer", "say"]
Delivery = Literal["here", "sent", "not live"]  # where an action went
_ACTIONS: Final = frozenset(get_args(ControlAction))


@dataclass(frozen=True, slots=True)
class Claimed:
    """The call's stream started on `instance`."""

    call_sid: str
    instance: str


@dataclass(frozen=True, slots=True)
class Over:
    """Twilio reports the call over before any stream claimed it."""

    call_sid: str


@dataclass(frozen=True, slots=True)
class Verdict:
    call_sid: str
    answered_by: str


@dataclass(frozen=True, slots=True)
class Control:
    call_sid: str
    action: ControlAction
    words: str = ""  # for "say"


ClusterMessage = Claimed | Over | Verdict | Control


def encode(message: ClusterMessage) -> str:
    match message:
        case Claimed(call_sid, instance):
            fields = {"kind": "claimed", "call_sid": call_sid, "instance": instance}
        case Over(call_sid):
            fields = {"kind": "over", "call_sid": call_sid}
        case Verdict(call_sid, answered_by):
            fields = {"kind": "verdict", "call_sid": call_sid, "answered_by": answered_by}
        case Control(call_sid, action, words):
            fields = {"kind": "control", "call_sid": call_sid, "action": action, "words": words}
    return json.dumps(fields)


def decode(payload: str) -> ClusterMessage | None:
    """The message, or None if the payload is not one (never raises)."""
    if len(payload) > MAX_PAYLOAD_CHARS:
        return None
    try:
        fields = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, dict):
        return None
    call_sid = fields.get("call_sid")
    if not isinstance(call_sid, str) or not is_call_sid(call_sid):
        return None
    kind = fields.get("kind")
    if kind == "claimed" and isinstance(instance := fields.get("instance"), str):
        return Claimed(call_sid, instance[:64])
    if kind == "over":
        return Over(call_sid)
    if kind == "verdict" and isinstance(answered_by := fields.get("answered_by"), str):
        return Verdict(call_sid, answered_by[:32])
    action = fields.get("action")
    words = fields.get("words", "")
    if kind == "control" and action in _ACTIONS and isinstance(words, str):
        return Control(call_sid, cast(ControlAction, action), words[:MAX_SAY_CHARS])
    return None
