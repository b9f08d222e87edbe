"""Render TwiML templates from `twiml/`: plain `$name` substitution with XML escaping."""

from __future__ import annotations

from collections.abc import Mapping
from string import Template
from xml.sax.saxutils import escape, quoteattr

__all__ = ["MAX_PARAMETER_CHARS", "render_connect_stream"]

MAX_PARAMETER_CHARS = 499  # Twilio: name + value of each <Parameter> under 500 characters


def render_connect_stream(
    template: str, stream_url: str, parameters: Mapping[str, str], fallback: str
) -> str:
    """`<Connect><Stream>` with `<Parameter>`s, then the fallback spoken if the stream ends."""
    lines = []
    for name, value in parameters.items():
        if len(name) + len(value) > MAX_PARAMETER_CHARS:
            raise ValueError(f"stream parameter {name!r} is too long for Twilio")
        lines.append(f"      <Parameter name={quoteattr(name)} value={quoteattr(value)}/>")
    return Template(template).substitute(
        stream_url=quoteattr(stream_url),
        parameters="\n".join(lines),
        fallback=escape(fallback),
    )
