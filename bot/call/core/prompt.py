"""Words the bridge gives the model: per-call instructions, and how it asks for the greeting.

The greeting request is a convention with the local backend's demo agent, which reads it
back with `requested_greeting`; both sides use this module, so it cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["greeting_request", "render_instructions", "requested_greeting"]

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GREETING_REQUEST: Final = "Greet the caller now by saying exactly this, then wait for them: "


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


def requested_greeting(instructions: str) -> str | None:
    """The greeting asked for by `greeting_request`, if these are such instructions."""
    if instructions.startswith(_GREETING_REQUEST):
        return instructions[len(_GREETING_REQUEST) :]
    return None
