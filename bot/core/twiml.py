"""TwiML the bridge answers with: the stream (from a `twiml/` template), a transfer, a voicemail."""

from __future__ import annotations

import re
from collections.abc import Mapping
from string import Template
from typing import Final
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "MAX_PARAMETER_CHARS",
    "dial_noun",
    "render_connect_stream",
    "render_start_stream",
    "say_then_hang_up",
    "transfer_twiml",
    "xml_safe",
]

MAX_PARAMETER_CHARS = 499  # Twilio: name + value of each <Parameter> under 500 characters
# Characters XML 1.0 cannot carry at all, escaped or not.
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """`text` without the characters no XML document may hold."""
    return _NOT_XML.sub("", text)


def _parameters(parameters: Mapping[str, str]) -> str:
    lines = []
    for name, value in parameters.items():
        if len(name) + len(value) > MAX_PARAMETER_CHARS:
            raise ValueError(f"stream parameter {name!r} is too long for Twilio")
        name, value = xml_safe(name), xml_safe(value)
        lines.append(f"      <Parameter name={quoteattr(name)} value={quoteattr(value)}/>")
    return "\n".join(lines)


def render_connect_stream(
    template: str, stream_url: str, parameters: Mapping[str, str], fallback: str
) -> str:
    """`<Connect><Stream>` with `<Parameter>`s, then the fallback spoken if the stream ends."""
    return Template(template).substitute(
        stream_url=quoteattr(stream_url),
        parameters=_parameters(parameters),
        fallback=escape(xml_safe(fallback)),
    )


def dial_noun(target: str) -> str:
    """`<Number>`, `<Sip>` or `<Client>` for a `<Dial>`."""
    if target.startswith("sip:"):
        return f"<Sip>{escape(xml_safe(target))}</Sip>"
    if target.startswith("client:"):
        return f"<Client>{escape(xml_safe(target.removeprefix('client:')))}</Client>"
    return f"<Number>{escape(xml_safe(target))}</Number>"


def render_start_stream(
    template: str, stream_url: str, parameters: Mapping[str, str], target: str
) -> str:
    """A listened call: `<Start><Stream track="both_tracks">` forks its audio to the bridge
    while `<Dial>` puts the caller through to `target`."""
    return Template(template).substitute(
        stream_url=quoteattr(stream_url),
        parameters=_parameters(parameters),
        target=dial_noun(target),
    )


def transfer_twiml(target: str, announcement: str) -> str:
    """Say the announcement, then dial a number or a `sip:` address."""
    dial = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip:") else escape(target)
    return f"<Response><Say>{escape(announcement)}</Say><Dial>{dial}</Dial></Response>"


def say_then_hang_up(message: str) -> str:
    """A voicemail, a busy line, a time limit: a few words, then the end of the call."""
    return f"<Response><Say>{escape(xml_safe(message))}</Say><Hangup/></Response>"
