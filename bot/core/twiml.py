"""TwiML the bridge answers with: the stream (from a `twiml/` template), a transfer, a voicemail."""

from __future__ import annotations

from collections.abc import Mapping
from string import Template
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "MAX_PARAMETER_CHARS",
    "render_connect_stream",
    "transfer_twiml",
    "voicemail_twiml",
]

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


def transfer_twiml(target: str, announcement: str) -> str:
    """Say the announcement, then dial a number or a `sip:` address."""
    dial = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip:") else escape(target)
    return f"<Response><Say>{escape(announcement)}</Say><Dial>{dial}</Dial></Response>"


def voicemail_twiml(message: str) -> str:
    return f"<Response><Say>{escape(message)}</Say><Hangup/></Response>"
