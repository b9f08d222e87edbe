"""What instances tell each other: every message survives its JSON, and a payload that is
not one (a stranger's NOTIFY on the channel) is ignored, never raised."""

from __future__ import annotations

import pytest

from bot.cluster.core.messages import (
    MAX_SAY_CHARS,
    Claimed,
    ClusterMessage,
    Control,
    Over,
    Verdict,
    decode,
    encode,
)

SID = "CA" + "1" * 32


@pytest.mark.parametrize(
    "message",
    [
        Claimed(SID, "host-1-abc"),
        Over(SID),
        Verdict(SID, "machine_end_beep"),
        Control(SID, "hang_up"),
        Control(SID, "transfer"),
        Control(SID, "say", "Your table is ready"),
    ],
)
def test_a_message_survives_its_json(message: ClusterMessage) -> None:
    assert decode(encode(message)) == message


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[]",
        '{"kind": "claimed", "call_sid": "CA1", "instance": "x"}',  # not a CallSid
        '{"kind": "control", "call_sid": "' + SID + '", "action": "explode"}',
        '{"kind": "verdict", "call_sid": "' + SID + '", "answered_by": 7}',
        '{"kind": "nope", "call_sid": "' + SID + '"}',
        "[" * 100_000,
    ],
)
def test_anything_else_is_ignored(payload: str) -> None:
    assert decode(payload) is None


def test_words_to_say_are_bounded() -> None:
    message = decode(encode(Control(SID, "say", "x" * (MAX_SAY_CHARS * 3))))
    assert isinstance(message, Control) and len(message.words) == MAX_SAY_CHARS
