"""What the call session says to its shell: commands it must carry out, reports of what happened.

Commands change the call: a message to a socket, a tool to run, a REST action. Reports only
inform: the call log, metrics, the recording and the log file read them. The shell handles
each type in one `match` that ends in `assert_never`, so mypy names any type left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bot.core.frozen import statically_frozen
from bot.core.realtime.events import ClientEvent
from bot.core.twilio import TwilioMessage

__all__ = [
    "Command",
    "DigitPressed",
    "EndCall",
    "FalseInterruption",
    "HangUp",
    "IdlePrompted",
    "Interrupted",
    "LeaveVoicemail",
    "Notice",
    "PlayedAudio",
    "ReplaceRealtime",
    "Report",
    "ResponseFinished",
    "RunTool",
    "SendToRealtime",
    "SendToTwilio",
    "ToolRecord",
    "Transfer",
    "TurnRecord",
]


# ---- commands ------------------------------------------------------------------------------


@statically_frozen  # made for every frame: see bot/core/frozen.py
class SendToTwilio:
    message: TwilioMessage


@statically_frozen  # made for every frame: see bot/core/frozen.py
class SendToRealtime:
    event: ClientEvent


@dataclass(frozen=True, slots=True)
class EndCall:
    """Stop the call: close both sockets. `by` says which side ended it."""

    by: Literal["caller", "realtime"]
    reason: str


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a custom tool; report its result with `CallSession.tool_finished`."""

    call_id: str
    name: str
    arguments: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class HangUp:
    """Complete the call through Twilio's REST API (the goodbye has played)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """Redirect the call to a person (the announcement has played)."""

    reason: str


@dataclass(frozen=True, slots=True)
class LeaveVoicemail:
    """An answering machine picked up an outbound call."""

    answered_by: str


@dataclass(frozen=True, slots=True)
class ReplaceRealtime:
    """The Realtime session cannot go on (e.g. it expired): open another and re-seed it."""

    reason: str


Command = (
    SendToTwilio
    | SendToRealtime
    | EndCall
    | RunTool
    | HangUp
    | Transfer
    | LeaveVoicemail
    | ReplaceRealtime
)


# ---- reports -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """The current state of one turn; the newest snapshot of an item replaces older ones."""

    item_id: str
    speaker: Literal["caller", "assistant", "agent"]  # agent: a person, on a listened call
    started_ms: int | None
    ended_ms: int | None
    text: str | None
    heard_text: str | None = None
    interrupted: bool = False
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The caller spoke over an answer, which was cut at what they had heard."""

    item_id: str
    audio_end_ms: int
    received_ms: int
    cleared: bool
    at_ms: int
    decided_after_ms: int = 0  # pause-then-decide: from the pause to the confirmation


@dataclass(frozen=True, slots=True)
class FalseInterruption:
    """The caller made a sound over an answer that was not an interruption (a cough, an
    "uh-huh"): the answer was paused for `paused_ms` and played on from where it stopped."""

    item_id: str | None  # the caller item the server committed for it (deleted)
    sound_ms: int
    paused_ms: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class DigitPressed:
    digit: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class PlayedAudio:
    """μ-law the caller has heard, ending at `ended_ms` (only when recording)."""

    ulaw: bytes
    ended_ms: int


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    status: str
    reason: str | None
    usage: Mapping[str, object] | None


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """A built-in tool the session handled itself."""

    name: str
    arguments: str
    result: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth a log line; a warning also counts as an error of the call."""

    level: Literal["debug", "info", "warning"]
    message: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class IdlePrompted:
    """The caller stayed silent: the bot asked whether they are there (`goodbye`: it gave
    up and says goodbye before hanging up)."""

    count: int
    goodbye: bool
    at_ms: int


Report = (
    TurnRecord
    | Interrupted
    | DigitPressed
    | PlayedAudio
    | ResponseFinished
    | ToolRecord
    | Notice
    | IdlePrompted
    | FalseInterruption
)
