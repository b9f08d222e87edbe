"""Words the bridge gives the model: per-call instructions, and how it asks for the greeting
or for words an operator wants said ("say this", from the API or the CLI).

Both requests are a convention with the local backend's demo agent, which reads them back
with `requested_greeting`; both sides use this module, so it cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["greeting_request", "render_instructions", "requested_greeting", "say_request"]

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GREETING_REQUEST: Final = "Greet the caller now by saying exactly this, then wait for them: "
_SAY_REQUEST: Final = "Say exactly this to the caller now, then wait for them: "


def render_instructions(template: str, variables: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders with the call's variables; anything else stays as written.

    Not `str.format`: `{name.attr}` and `{name[0]}` would reach into the values, and a
    template is operator text that must never fail a call.
    """

    def fill(match: re.Match[str]) -> str:
        return variables.get(match[1], match[0])

    text = _PLACEHOLDER.sub(fill, template)
    if variables:
        facts = "; ".join(f"{name}: {value}" for name, value in variables.items())
        text += f"\n\nAbout this call: {facts}."
    return text


def greeting_request(greeting: str) -> str:
    """Instructions for the one response that speaks the greeting."""
    return _GREETING_REQUEST + greeting


def say_request(words: str) -> str:
    """Instructions for a response that says an operator's words."""
    return _SAY_REQUEST + words


def requested_greeting(instructions: str) -> str | None:
    """The words asked for by `greeting_request` or `say_request`, if these are such
    instructions."""
    for prefix in (_GREETING_REQUEST, _SAY_REQUEST):
        if instructions.startswith(prefix):
            return instructions[len(prefix) :]
    return None
