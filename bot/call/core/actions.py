"""Actions that end or move a call, and when they may happen.

`end_call` and `transfer_call` from the model are not carried out at once: the goodbye (or
"let me transfer you") is usually still playing. The action waits until the response is
done and Twilio has played everything, or until a deadline should marks stop coming back.
Outbound calls with answering-machine detection hold the greeting until a verdict, or until
the detection deadline passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from bot.call.core.messages import HangUp, Transfer

__all__ = [
    "ACTION_DEADLINE_MS",
    "AMD_DEADLINE_MS",
    "BUILTIN_TOOLS",
    "END_CALL",
    "TOOL_DONE_NOTE",
    "TRANSFER_CALL",
    "PendingAction",
    "is_machine",
]

END_CALL: Final = "end_call"
TRANSFER_CALL: Final = "transfer_call"
BUILTIN_TOOLS: Final = (END_CALL, TRANSFER_CALL)
ACTION_DEADLINE_MS: Final = 20_000  # act even if marks stop coming back
AMD_DEADLINE_MS: Final = 8_000  # no verdict by then: treat the callee as a person
TOOL_DONE_NOTE: Final = (
    '{"ok": true, "note": "done once your last words have played; say nothing more"}'
)


@dataclass(frozen=True, slots=True)
class PendingAction:
    """A hang-up or transfer waiting for the last words to play."""

    action: HangUp | Transfer
    deadline_ms: int
    armed: bool = True  # False until the response with the last words has begun

    @classmethod
    def from_tool(cls, name: str, arguments: str, now_ms: int) -> PendingAction:
        """The action a built-in tool call asks for; `name` is END_CALL or TRANSFER_CALL."""
        reason = _reason(arguments)
        action: HangUp | Transfer = (
            HangUp(reason or "the assistant ended the call")
            if name == END_CALL
            else Transfer(reason or "the caller asked for a person")
        )
        return cls(action, now_ms + ACTION_DEADLINE_MS)

    def due(self, drained: bool, now_ms: int) -> bool:
        return (drained and self.armed) or now_ms >= self.deadline_ms


def is_machine(answered_by: str) -> bool:
    """Twilio's `AnsweredBy`: machine_start, machine_end_beep, fax, human, unknown…"""
    return answered_by.startswith("machine") or answered_by == "fax"


def _reason(arguments: str) -> str | None:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return None
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return reason if isinstance(reason, str) and reason else None
