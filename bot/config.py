"""Settings: one declarative table of every environment variable, read once, in sections.

Each setting is a field of a section (`ServerSettings`, `TwilioSettings`, …) declared with
`setting(NAME, default, doc, parse=…)`; that row is the whole truth about it. The loader,
the README's tables (`settings_tables`) and the checks across settings all read the rows.
Each component gets only its section. `Settings.from_env(mapping)` reports every problem at
once in one `ConfigError`; secrets are `Secret`s, which never show themselves. Nothing
else in the package reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from bot.core.ids import is_account_sid, is_e164, is_loopback
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import AudioFormat
from bot.core.turn_taking import EAGERNESS, NOISE_REDUCTIONS, TURN_DETECTIONS
from bot.errors import ConfigError

__all__ = [
    "DEFAULT_REALTIME_URL",
    "LOCAL_REALTIME_KEY_FILE",
    "CallLogSettings",
    "CallSettings",
    "LocalBackendSettings",
    "OutboundSettings",
    "RealtimeSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "TwilioSettings",
    "environment",
    "load_local_secret",
    "local_realtime_key",
    "settings_tables",
    "simulator_defaults",
]

DEFAULT_REALTIME_URL: Final = "wss://api.openai.com/v1/realtime"
DEFAULT_TRANSCRIPTION_MODEL: Final = "gpt-4o-mini-transcribe"
DEFAULT_INSTRUCTIONS: Final = (
    "You are a friendly, concise phone assistant. Speak naturally and keep answers short: "
    "the caller is listening on a telephone."
)
DEFAULT_BUSY: Final = "Sorry, all our lines are busy right now. Please call again later."
DEFAULT_TIME_LIMIT: Final = "We have reached the time limit for this call. Thank you, goodbye."
DEFAULT_IDLE_PROMPT: Final = "Are you still there?"
DEFAULT_IDLE_GOODBYE: Final = "I haven't heard from you, so I'll end the call now. Goodbye."
MAX_FILLER_S: Final = 10
DEFAULT_FALLBACK: Final = (
    "Sorry, the assistant is not available right now. Please call again later. Goodbye."
)
LOCAL_SECRET_FILE: Final = "local-secret"
LOCAL_REALTIME_KEY_FILE: Final = "local-realtime-key"
LOCAL_GREETING: Final = "Hello! I am the demo assistant. Ask me about an order, like order 4417."
LOCAL_TOOLS: Final = "bot.example_tools"


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


# ---- how a row of the table is read --------------------------------------------------------

Parser = Callable[[str], Any]  # raw text -> value; ValueError says what is wrong


@dataclass(frozen=True)
class Row:
    """One environment variable: how it is read and what it means."""

    env: str
    doc: str
    parse: Parser
    shown_default: str  # for the README
    blank_means_off: bool = False  # an empty value turns the feature off (None)
    also_read: str | None = None  # a second variable, read when the first is unset


def setting(
    env: str,
    default: Any,
    doc: str,
    *,
    parse: Parser = str,
    shown: str | None = None,
    blank_means_off: bool = False,
    also_read: str | None = None,
) -> Any:
    """A field of a settings section, with its row of the table."""
    if shown is None:
        shown = "—" if default is None else f"`{default}`"
    row = Row(env, doc, parse, shown, blank_means_off, also_read)
    return field(default=default, metadata={"row": row})


def number(low: float, high: float) -> Parser:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {raw}")
        return value

    return parse


def whole(low: int, high: int) -> Parser:
    check = number(low, high)

    def parse(raw: str) -> int:
        value = check(raw)
        if value != int(value):
            raise ValueError(f"must be a whole number, got {raw}")
        return int(value)

    return parse


def frames_ms(low: int, high: int) -> Parser:
    """Milliseconds of audio in whole 20 ms Twilio frames."""
    check = whole(low, high)

    def parse(raw: str) -> int:
        value = int(check(raw))
        if value % 20:
            raise ValueError(f"must be a multiple of 20, got {raw}")
        return value

    return parse


def flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def choice(*options: str, upper: bool = False) -> Parser:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return value

    return parse


def secret(raw: str) -> Secret:
    return Secret(raw)


def url(*schemes: str) -> Parser:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.netloc:
            names = " or ".join(f"{scheme}://" for scheme in schemes)
            raise ValueError(f"must be a {names} URL")
        return raw

    return parse


def filler_wav(raw: str) -> bytes:
    """A WAV file as 8 kHz μ-law, ready for Twilio."""
    import wave

    from bot.core.codec import pcm16_to_ulaw, resample, to_pcm16_mono

    try:
        with wave.open(raw, "rb") as clip:
            width, channels, rate = clip.getsampwidth(), clip.getnchannels(), clip.getframerate()
            if clip.getnframes() > rate * MAX_FILLER_S:
                raise ValueError(f"must be at most {MAX_FILLER_S} s long")
            frames = clip.readframes(clip.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"must be a readable WAV file ({exc})") from None
    if width not in (1, 2):
        raise ValueError("must be 8 or 16 bit PCM")
    return pcm16_to_ulaw(resample(to_pcm16_mono(frames, width, channels), rate, 8000))


def e164(raw: str) -> str:
    if not is_e164(raw):
        raise ValueError(f"must be an E.164 number like +15551234567, got {raw!r}")
    return raw


def dialect(raw: str) -> Dialect:
    return Dialect(choice("ga", "beta")(raw))


def audio_format(raw: str) -> AudioFormat:
    return AudioFormat(choice("pcm16", "g711_ulaw")(raw))


# ---- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """Where the bridge listens and how it presents itself to Twilio."""

    public_url: str | None = setting(
        "PUBLIC_URL",
        None,
        "The https origin Twilio reaches. Required with `TWILIO_AUTH_TOKEN`. Webhook "
        "signatures are checked against it.",
        shown="local mode: `http://127.0.0.1:$PORT`",
    )
    host: str = setting(
        "HOST",
        "",
        "Interface to bind. Without `TWILIO_AUTH_TOKEN`, only loopback is allowed: a public "
        "`HOST` is ignored with a warning.",
        shown="`0.0.0.0` with a Twilio token, else `127.0.0.1`",
    )
    port: int = setting("PORT", 5050, "Port to bind (`0` picks a free one).", parse=whole(0, 65535))
    shutdown_grace_s: float = setting(
        "SHUTDOWN_GRACE_SECONDS",
        25.0,
        "After SIGTERM, how long active calls may continue.",
        parse=number(0, 3600),
        shown="`25`",
    )
    data_dir: Path = setting(
        "BOT_DATA_DIR",
        Path("data"),
        "Local state: the generated local-mode secret, the SQLite call log, recordings.",
        parse=Path,
    )
    workers: int = setting(
        "WORKERS",
        0,
        "Processes serving calls, sharing one port (`bot serve --workers N` too). `0`: one per "
        "core with a PostgreSQL `DATABASE_URL`, else 1. More than one needs PostgreSQL, "
        "through which workers share their calls.",
        parse=whole(0, 256),
        shown="one per core with PostgreSQL, else `1`",
    )
    log_level: str = setting(
        "LOG_LEVEL",
        "INFO",
        "`DEBUG`, `INFO`, `WARNING` or `ERROR`.",
        parse=choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True),
    )

    @property
    def base_url(self) -> str:
        """The origin Twilio uses: PUBLIC_URL, or loopback in local mode."""
        return self.public_url or f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class TwilioSettings:
    """The Twilio account: signatures, stream tokens and the REST API."""

    account_sid: str | None = setting(
        "TWILIO_ACCOUNT_SID", None, "If set, a stream's `start` must come from this account."
    )
    auth_token: Secret | None = setting(
        "TWILIO_AUTH_TOKEN",
        None,
        "Verifies `X-Twilio-Signature` and keys the per-call stream tokens.",
        parse=secret,
        shown="— (local mode)",
    )
    from_number: str | None = setting(
        "TWILIO_FROM_NUMBER", None, "Caller ID for outbound calls (E.164).", parse=e164
    )
    api_url: str = setting(
        "TWILIO_API_URL",
        "https://api.twilio.com",
        "Base of Twilio's REST API (tests point it at a fake).",
        parse=url("https", "http"),
    )
    stream_token_ttl_s: int = setting(
        "STREAM_TOKEN_TTL",
        300,
        "Seconds a per-call stream token stays valid.",
        parse=whole(10, 86400),
    )


@dataclass(frozen=True)
class RealtimeSettings:
    """The speech-to-speech model: where it is, how to reach it, how its session is set."""

    url: str = setting(
        "REALTIME_URL",
        DEFAULT_REALTIME_URL,
        "Realtime WebSocket endpoint (see *Providers*).",
        parse=url("wss", "ws"),
    )
    model: str = setting(
        "REALTIME_MODEL",
        "gpt-realtime",
        "Added as `?model=` unless the URL already names a `model` or `deployment`.",
    )
    api_key: Secret | None = setting(
        "REALTIME_API_KEY",
        None,
        "Key for the Realtime endpoint.",
        parse=secret,
        shown="`OPENAI_API_KEY`",
        also_read="OPENAI_API_KEY",
    )
    auth: str = setting(
        "REALTIME_AUTH",
        "bearer",
        "`bearer` (`Authorization: Bearer …`) or `api-key` (`api-key: …`, Azure).",
        parse=choice("bearer", "api-key"),
    )
    dialect: Dialect = setting(
        "REALTIME_DIALECT",
        Dialect.GA,
        "`ga` or `beta` (`OpenAI-Beta: realtime=v1`, flat `session.update`).",
        parse=dialect,
        shown="`ga`",
    )
    audio: AudioFormat = setting(
        "REALTIME_AUDIO",
        AudioFormat.PCM16,
        "`pcm16`: the bridge transcodes to 24 kHz PCM16. `g711_ulaw`: μ-law passes through "
        "untouched.",
        parse=audio_format,
        shown="`pcm16`",
    )
    transcription_model: str | None = setting(
        "REALTIME_TRANSCRIPTION_MODEL",
        DEFAULT_TRANSCRIPTION_MODEL,
        "Input transcription model; empty disables it. On Azure it is a deployment name.",
        blank_means_off=True,
    )
    connect_timeout_s: float = setting(
        "REALTIME_CONNECT_TIMEOUT",
        5.0,
        "Seconds to open the Realtime socket.",
        parse=number(0.1, 60),
        shown="`5`",
    )
    voice: str = setting("BOT_VOICE", "", "Voice.", shown="`marin` (GA), `alloy` (beta)")
    turn_detection: str = setting(
        "TURN_DETECTION",
        "server_vad",
        "How the provider ends the caller's turn: `server_vad` (after `VAD_SILENCE_MS` of "
        "silence) or `semantic_vad` (when what was said sounds finished; see "
        "`VAD_EAGERNESS`). Outbound calls may choose their own.",
        parse=choice(*TURN_DETECTIONS),
    )
    vad_eagerness: str = setting(
        "VAD_EAGERNESS",
        "auto",
        "With `semantic_vad`: `low`, `medium`, `high` or `auto` (medium). Lower waits longer "
        "for the caller to finish (up to about 8, 4 and 2 s).",
        parse=choice(*EAGERNESS),
    )
    noise_reduction: str = setting(
        "NOISE_REDUCTION",
        "off",
        "The provider's noise reduction before VAD and the model: `off`, `near_field` "
        "(handsets, headsets) or `far_field` (speakerphones, rooms).",
        parse=choice(*NOISE_REDUCTIONS),
    )
    vad_threshold: float = setting(
        "VAD_THRESHOLD", 0.5, "Server VAD threshold, 0–1.", parse=number(0, 1)
    )
    vad_silence_ms: int = setting(
        "VAD_SILENCE_MS", 500, "Silence that ends the caller's turn.", parse=whole(100, 10000)
    )
    vad_prefix_ms: int = setting(
        "VAD_PREFIX_MS", 300, "Audio kept before detected speech.", parse=whole(0, 5000)
    )
    # Not a variable: no key and no URL means the built-in local backend answers.
    local: bool = False


@dataclass(frozen=True)
class CallSettings:
    """What the bot says and does in a call."""

    instructions: str = setting(
        "BOT_INSTRUCTIONS",
        DEFAULT_INSTRUCTIONS,
        "System instructions.",
        shown="a short phone-assistant prompt",
    )
    greeting: str | None = setting(
        "BOT_GREETING",
        None,
        "When set, the bot speaks first, with these words.",
        shown="— (local backend: a demo greeting)",
    )
    fallback_message: str = setting(
        "BOT_FALLBACK_MESSAGE",
        DEFAULT_FALLBACK,
        "Spoken by Twilio when the bridge has to end the stream.",
        shown='"Sorry, the assistant is not available right now…"',
    )
    forward_dtmf: bool = setting(
        "FORWARD_DTMF",
        True,
        'Keypad digits reach the model as text ("[The caller pressed 5 on the phone keypad]").',
        parse=flag,
        shown="`true`",
    )
    tools_module: str | None = setting(
        "BOT_TOOLS",
        None,
        "Python module whose public `async def` functions become tools, e.g. `bot.example_tools`.",
        shown="— (local backend: `bot.example_tools`)",
    )
    tool_timeout_s: float = setting(
        "TOOL_TIMEOUT_SECONDS",
        10.0,
        "A tool slower than this answers the model with an error.",
        parse=number(0.1, 300),
        shown="`10`",
    )
    transfer_to: str | None = setting(
        "TRANSFER_TO",
        None,
        "Where `transfer_call` sends the caller: E.164 number or `sip:` address.",
        shown="— (no `transfer_call` tool)",
    )
    transfer_announcement: str = setting(
        "TRANSFER_ANNOUNCEMENT",
        "Please hold while I connect you.",
        "Said by Twilio before dialling.",
        shown='"Please hold while I connect you."',
    )
    voicemail_message: str | None = setting(
        "VOICEMAIL_MESSAGE",
        None,
        "Spoken (by Twilio) after the beep when a machine answers; without it the bot just "
        "hangs up.",
    )
    max_calls: int = setting(
        "MAX_CALLS",
        25,
        "Calls each instance (each worker process) serves at once, ringing ones included; "
        "past it a caller hears `BUSY_MESSAGE`. Sized from the measured CPU per call (see "
        "Security and limits).",
        parse=whole(1, 100_000),
    )
    max_calls_total: int = setting(
        "MAX_CALLS_TOTAL",
        0,
        "Calls all instances and workers on one PostgreSQL call log serve at once, ringing "
        "ones included; past it a caller hears `BUSY_MESSAGE` and campaigns wait for a free "
        "slot. `0`: no cap but each instance's `MAX_CALLS`.",
        parse=whole(0, 1_000_000),
        shown="`0` (none)",
    )
    busy_message: str = setting(
        "BUSY_MESSAGE",
        DEFAULT_BUSY,
        "Spoken by Twilio to a caller past `MAX_CALLS`.",
        shown='"Sorry, all our lines are busy…"',
    )
    max_call_s: int = setting(
        "MAX_CALL_SECONDS",
        3600,
        "A call is ended after this long: the bot says `TIME_LIMIT_MESSAGE` and hangs up "
        "(if it cannot within 20 s, Twilio says it). `0`: no limit. Also caps each "
        "recording. `MAX_CALL_S` is read too.",
        parse=whole(0, 86_400),
        also_read="MAX_CALL_S",
    )
    time_limit_message: str = setting(
        "TIME_LIMIT_MESSAGE",
        DEFAULT_TIME_LIMIT,
        "Said when a call reaches `MAX_CALL_SECONDS`.",
        shown='"We have reached the time limit for this call…"',
    )
    idle_prompt_s: float = setting(
        "IDLE_PROMPT_S",
        20.0,
        "After this much silence from the caller, with nothing playing or pending, the bot "
        "asks whether they are there (`IDLE_PROMPT_MESSAGE`). `0`: never.",
        parse=number(0, 3600),
        shown="`20`",
    )
    idle_prompts: int = setting(
        "IDLE_PROMPTS",
        2,
        "How many times the bot asks; after the next silence it says `IDLE_GOODBYE_MESSAGE` "
        "and hangs up.",
        parse=whole(0, 100),
    )
    idle_prompt_message: str = setting(
        "IDLE_PROMPT_MESSAGE",
        DEFAULT_IDLE_PROMPT,
        "What the bot says to a silent caller.",
        shown=f'"{DEFAULT_IDLE_PROMPT}"',
    )
    idle_goodbye_message: str = setting(
        "IDLE_GOODBYE_MESSAGE",
        DEFAULT_IDLE_GOODBYE,
        "What the bot says before it hangs up on a silent caller.",
        shown="\"I haven't heard from you, so I'll end the call now. Goodbye.\"",
    )
    reconnect_s: float = setting(
        "REALTIME_RECONNECT_S",
        5.0,
        "After the Realtime session drops, closes abnormally or fails, how long the bridge "
        "tries to open another and carry the call on (re-seeded with the conversation). "
        "`0`: the call ends, as on a 401 or 403.",
        parse=number(0, 60),
        shown="`5`",
    )
    reconnect_filler: bytes | None = setting(
        "RECONNECT_FILLER",
        None,
        "A WAV file the caller hears while the bridge reconnects (any rate, 8 or 16 bit; at "
        "most 10 s). Without it, silence.",
        parse=filler_wav,
        shown="— (silence)",
    )
    append_ms: int = setting(
        "AUDIO_APPEND_MS",
        40,
        "How much of the caller's audio goes to the model in each append: 20 sends every "
        "Twilio frame as it comes; 40 sends two at a time, for half the messages and CPU on "
        "that side, and the first of each pair waits 20 ms more.",
        parse=frames_ms(20, 100),
    )
    seed_tokens: int = setting(
        "RESEED_MAX_TOKENS",
        4000,
        "How much of the conversation a new session is given, newest turns first, in "
        "estimated tokens; a note says how many older turns were left out.",
        parse=whole(100, 100_000),
    )
    interruptions: str = setting(
        "INTERRUPTIONS",
        "confirm",
        "`instant`: speech over an answer stops it at once, as a barge-in. `confirm`: pause, "
        'then decide: a cough or an "uh-huh" lets the answer go on from where it stopped '
        "(see *Turn-taking*).",
        parse=choice("instant", "confirm"),
    )
    greeting_interruptible: bool = setting(
        "GREETING_INTERRUPTIBLE",
        True,
        "`false`: the greeting plays to its end whatever the caller says (needs "
        "`INTERRUPTIONS=confirm`); what they say still reaches the model, which answers "
        "after it.",
        parse=flag,
        shown="`true`",
    )
    interrupt_min_ms: int = setting(
        "INTERRUPT_MIN_MS",
        500,
        "With `confirm`: how long the caller's sound must last to interrupt.",
        parse=whole(0, 10_000),
    )
    interrupt_min_words: int = setting(
        "INTERRUPT_MIN_WORDS",
        2,
        "With `confirm`: or how many words, not counting fillers and backchannels, its "
        "transcript must have.",
        parse=whole(1, 100),
    )
    handover: bool = setting(
        "DEPLOY_HANDOVER",
        True,
        "On SIGTERM, move each live call to another instance (needs Twilio credentials and "
        "a PostgreSQL call log shared by the instances); otherwise calls get "
        "`SHUTDOWN_GRACE_SECONDS` to finish.",
        parse=flag,
        shown="`true`",
    )
    handover_wait_s: float = setting(
        "HANDOVER_WAIT_S",
        5.0,
        "How long a call that is moving waits for a turn boundary; then the answer playing "
        "is cut at what the caller heard.",
        parse=number(0, 60),
        shown="`5`",
    )
    session_max_s: float = setting(
        "REALTIME_SESSION_MAX_S",
        1800.0,
        "A Realtime session older than this is renewed at the next turn boundary: a new one "
        "is opened and seeded in parallel, then swapped in. `0`: never.",
        parse=number(0, 86_400),
        shown="`1800`",
    )
    session_limit_s: float = setting(
        "REALTIME_SESSION_LIMIT_S",
        3540.0,
        "If no turn boundary came, the session is replaced at this age anyway, cutting any "
        "answer at what the caller heard (OpenAI ends sessions at 60 minutes).",
        parse=number(1, 86_400),
        shown="`3540`",
    )
    stream_idle_s: float = setting(
        "STREAM_IDLE_SECONDS",
        10.0,
        "A stream that sends no audio for this long is over (Twilio sends a frame every "
        "20 ms, even in silence).",
        parse=number(1, 600),
        shown="`10`",
    )


def dial_target(raw: str) -> str:
    if not (is_e164(raw) or raw.startswith(("sip:", "client:"))):
        raise ValueError(f"must be an E.164 number, a sip: URI or a client: name, got {raw!r}")
    return raw


def transcribed_lines(raw: str) -> tuple[tuple[str, str], ...]:
    """`+15550001111=+15552223333,+15550004444=sip:desk@example.com`: called -> target."""
    pairs = []
    for entry in raw.split(","):
        called, sep, target = entry.strip().partition("=")
        if not sep:
            raise ValueError(f"each entry is called-number=target, got {entry.strip()!r}")
        pairs.append((e164(called.strip()), dial_target(target.strip())))
    return tuple(pairs)


@dataclass(frozen=True)
class ListenSettings:
    """Listen-only calls: the call goes to a person and its audio to live transcription."""

    call_mode: str = setting(
        "CALL_MODE",
        "bot",
        "`bot`: the AI answers. `transcribe`: every call is forwarded to `FORWARD_TO` "
        "(`<Dial>`) and both sides are transcribed live (`<Start><Stream both_tracks>`).",
        parse=choice("bot", "transcribe"),
    )
    forward_to: str | None = setting(
        "FORWARD_TO",
        None,
        "Who answers a transcribed call: an E.164 number, a `sip:` URI or `client:name`.",
        parse=dial_target,
    )
    line_targets: tuple[tuple[str, str], ...] = setting(
        "TRANSCRIBE_LINES",
        (),
        "Called numbers that are transcribed whatever `CALL_MODE` says, each with its own "
        "target: `+15550001111=+15552223333,+15550004444=sip:desk@example.com`.",
        parse=transcribed_lines,
        shown="—",
    )
    transcribe_url: str | None = setting(
        "TRANSCRIBE_URL",
        None,
        "Transcription endpoint. Default: `REALTIME_URL` with `?intent=transcription` (and "
        "no model); the local backend when calls use it.",
        parse=url("wss", "ws"),
        shown="from `REALTIME_URL`",
    )
    transcribe_dialect: Dialect | None = setting(
        "TRANSCRIBE_DIALECT",
        None,
        "`ga` (`session.update`, `type: transcription`) or `beta` "
        "(`transcription_session.update`).",
        parse=dialect,
        shown="`REALTIME_DIALECT`",
    )
    api_key: Secret | None = setting(
        "TRANSCRIBE_API_KEY",
        None,
        "Key for the transcription endpoint.",
        parse=secret,
        shown="`REALTIME_API_KEY`",
    )
    model: str = setting(
        "TRANSCRIBE_MODEL",
        DEFAULT_TRANSCRIPTION_MODEL,
        "Transcription model (or Azure deployment).",
    )
    language: str | None = setting(
        "TRANSCRIBE_LANGUAGE", None, "ISO-639-1 language of the calls, e.g. `en`."
    )
    prompt: str | None = setting(
        "TRANSCRIBE_PROMPT", None, "Words that prime the transcription (names, products)."
    )
    turns: str = setting(
        "TRANSCRIBE_TURNS",
        "server_vad",
        "`server_vad`: the provider finds each turn. `manual`: turn detection off; the bridge "
        "commits after each pause (for models that need `turn_detection: null`).",
        parse=choice("server_vad", "manual"),
    )
    audio: AudioFormat = setting(
        "TRANSCRIBE_AUDIO",
        AudioFormat.G711_ULAW,
        "`g711_ulaw` passes Twilio's audio through; `pcm16` transcodes to 24 kHz.",
        parse=audio_format,
        shown="`g711_ulaw`",
    )
    ai_calls: bool = setting(
        "TRANSCRIBE_AI_CALLS",
        False,
        "Also transcribe the bot's own calls in separate transcription sessions (both "
        "sides), for speech-to-speech providers that do not transcribe.",
        parse=flag,
        shown="`false`",
    )
    summary_model: str | None = setting(
        "SUMMARY_MODEL",
        None,
        "After each call, a summary and action items from this chat model; blank: none.",
        blank_means_off=True,
    )
    summary_url: str = setting(
        "SUMMARY_URL",
        "https://api.openai.com/v1",
        "OpenAI-compatible base URL for the summary (`/chat/completions`).",
        parse=url("https", "http"),
    )
    summary_api_key: Secret | None = setting(
        "SUMMARY_API_KEY",
        None,
        "Key for `SUMMARY_URL`.",
        parse=secret,
        shown="`OPENAI_API_KEY`",
        also_read="OPENAI_API_KEY",
    )

    def forward_target(self, called: str) -> str | None:
        """Where a call to `called` is forwarded when it is transcribed; None: the bot."""
        for number, target in self.line_targets:
            if number == called:
                return target
        return self.forward_to if self.call_mode == "transcribe" else None


@dataclass(frozen=True)
class OutboundSettings:
    """Calls the bridge places."""

    machine_detection: bool = setting(
        "MACHINE_DETECTION",
        True,
        "Outbound calls use Twilio's asynchronous answering-machine detection; the greeting "
        "waits for a person.",
        parse=flag,
        shown="`true`",
    )


@dataclass(frozen=True)
class CallLogSettings:
    """The call log, recordings and who may read them."""

    database_url: str | None = setting(
        "DATABASE_URL",
        None,
        "The call log. `postgresql://user:pass@host/db` for production and for several "
        "instances sharing one log. Migrations run at start; a database that cannot be "
        "opened stops `bot serve` with one line that says why.",
        shown="`sqlite:///$BOT_DATA_DIR/calls.db`",
    )
    record_audio: bool = setting(
        "RECORD_AUDIO",
        False,
        "Record calls as stereo WAV: caller left, what the caller heard of the bot right.",
        parse=flag,
        shown="`false`",
    )
    recordings_dir: Path | None = setting(
        "RECORDINGS_DIR",
        None,
        "Where recordings are written.",
        parse=Path,
        shown="`$BOT_DATA_DIR/recordings`",
    )
    retention_days: int = setting(
        "RECORDING_RETENTION_DAYS",
        30,
        "Recordings of older calls are deleted (checked at start and every 6 hours); `0` "
        "keeps them.",
        parse=whole(0, 36500),
    )
    review_password: Secret | None = setting(
        "REVIEW_PASSWORD",
        None,
        "Password for `/calls` and `/api/calls` (at least 8 characters). Without it, every "
        "call-data URL answers 403.",
        parse=secret,
        shown="— (review off)",
    )
    # Not variables: derived from BOT_DATA_DIR when unset.
    data_dir: Path = Path("data")

    @property
    def database(self) -> str:
        """SQLAlchemy async URL of the call log."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'calls.db'}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def recordings_path(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"


@dataclass(frozen=True)
class LocalBackendSettings:
    """The built-in Realtime backend: each service an OpenAI-compatible API, or offline."""

    stt_url: str | None = setting(
        "LOCAL_STT_URL",
        None,
        "Base URL (`…/v1`) of an `/audio/transcriptions` service.",
        shown="offline Whisper",
    )
    stt_model: str = setting("LOCAL_STT_MODEL", "whisper-1", "Its model.")
    stt_prompt: str | None = setting(
        "LOCAL_STT_PROMPT",
        None,
        "Words that prime speech-to-text (names, how numbers are written).",
        shown="the demo agent's, with the demo agent",
    )
    llm_url: str | None = setting(
        "LOCAL_LLM_URL",
        None,
        "Base URL of a `/chat/completions` service (streaming, tools), e.g. "
        "`http://localhost:11434/v1` for Ollama.",
        shown="the demo agent",
    )
    llm_model: str = setting("LOCAL_LLM_MODEL", "gpt-4o-mini", "Its model.")
    tts_url: str | None = setting(
        "LOCAL_TTS_URL",
        None,
        "Base URL of an `/audio/speech` service (asked for 24 kHz `pcm`).",
        shown="offline Piper",
    )
    tts_model: str = setting("LOCAL_TTS_MODEL", "gpt-4o-mini-tts", "Its model.")
    tts_voice: str | None = setting(
        "LOCAL_TTS_VOICE", None, "Its voice.", shown="the session's voice"
    )
    tts_engine: str = setting(
        "LOCAL_TTS",
        "piper",
        "The offline voice: `piper`, or `espeak` (eSpeak NG from `espeakng-loader`: tiny and "
        "robotic, the light fallback).",
        parse=choice("piper", "espeak"),
    )
    api_key: Secret | None = setting(
        "LOCAL_API_KEY", None, "Bearer key for those services, if they need one.", parse=secret
    )
    realtime_key: Secret | None = setting(
        "LOCAL_REALTIME_KEY",
        None,
        "The key clients of `/v1/realtime` present (`Authorization: Bearer`, `api-key`, or "
        "the `openai-insecure-api-key.` subprotocol).",
        parse=secret,
        shown="a new one each start, in `$BOT_DATA_DIR/local-realtime-key`",
    )


_SECTIONS: Final = {
    "server": ServerSettings,
    "twilio": TwilioSettings,
    "realtime": RealtimeSettings,
    "call": CallSettings,
    "outbound": OutboundSettings,
    "calllog": CallLogSettings,
    "listen": ListenSettings,
    "local": LocalBackendSettings,
}


def _rows(section: type) -> Iterator[tuple[str, Row]]:
    for f in dataclasses.fields(section):
        row = f.metadata.get("row")
        if row is not None:
            yield f.name, row


@dataclass(frozen=True)
class Settings:
    """Every section; defaults make a local server that needs no keys."""

    server: ServerSettings = field(default_factory=ServerSettings)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    call: CallSettings = field(default_factory=CallSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    calllog: CallLogSettings = field(default_factory=CallLogSettings)
    listen: ListenSettings = field(default_factory=ListenSettings)
    local: LocalBackendSettings = field(default_factory=LocalBackendSettings)
    warnings: tuple[str, ...] = ()

    @property
    def local_mode(self) -> bool:
        """No Twilio auth token: loopback only, webhooks signed with a generated local secret."""
        return self.twilio.auth_token is None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            ConfigError: with every problem found, not just the first.
        """
        problems: list[str] = []
        notes: list[str] = []
        values: dict[str, dict[str, Any]] = {}
        for name, section in _SECTIONS.items():
            values[name] = {}
            for attr, row in _rows(section):
                raw = env.get(row.env)
                if (raw is None or not raw.strip()) and row.also_read is not None:
                    raw = env.get(row.also_read)
                if raw is None:
                    continue
                raw = raw.strip()
                if not raw:
                    if row.blank_means_off:
                        values[name][attr] = None
                    continue
                try:
                    values[name][attr] = row.parse(raw)
                except ValueError as exc:
                    problems.append(f"{row.env} {exc}")
        server, twilio, realtime = values["server"], values["twilio"], values["realtime"]
        call, calllog = values["call"], values["calllog"]
        local_mode = twilio.get("auth_token") is None

        host = server.get("host")
        if local_mode:
            if host and not is_loopback(host):
                notes.append(
                    f"HOST={host} ignored: without TWILIO_AUTH_TOKEN the server binds to "
                    "127.0.0.1 only, so unverified webhooks are never served publicly"
                )
            server["host"] = "127.0.0.1"
        else:
            server["host"] = host or "0.0.0.0"
        problems += _check_public_url(server, local_mode)

        account_sid = twilio.get("account_sid")
        if account_sid is not None and not is_account_sid(account_sid):
            problems.append("TWILIO_ACCOUNT_SID must look like AC followed by 32 characters")
        transfer_to = call.get("transfer_to")
        if transfer_to is not None and not (is_e164(transfer_to) or transfer_to.startswith("sip:")):
            problems.append("TRANSFER_TO must be an E.164 number or a sip: address")
        database_url = calllog.get("database_url")
        if database_url is not None and not database_url.startswith(("sqlite", "postgres")):
            problems.append("DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        shared = database_url is not None and database_url.startswith("postgres")
        if server.get("workers", 0) > 1 and not shared:
            problems.append(
                "WORKERS above 1 needs a PostgreSQL DATABASE_URL: workers share their calls "
                "through it"
            )
        if call.get("greeting_interruptible") is False and call.get("interruptions") != "confirm":
            problems.append(
                "GREETING_INTERRUPTIBLE=false needs INTERRUPTIONS=confirm: in instant mode the "
                "provider cancels an answer by itself as soon as the caller speaks"
            )
        listen = values["listen"]
        if listen.get("call_mode") == "transcribe" and listen.get("forward_to") is None:
            problems.append("CALL_MODE=transcribe needs FORWARD_TO: the person who answers")
        password = calllog.get("review_password")
        if password is not None and len(password.reveal()) < 8:
            problems.append("REVIEW_PASSWORD must be at least 8 characters")

        local = realtime.get("api_key") is None and "url" not in realtime
        realtime["local"] = local
        if local:
            notes.append(
                "no REALTIME_API_KEY, OPENAI_API_KEY or REALTIME_URL: calls use the local offline "
                "backend (Whisper tiny.en, a rules-based demo agent, Piper)"
            )
            call.setdefault("greeting", LOCAL_GREETING)
            call.setdefault("tools_module", LOCAL_TOOLS)
        realtime_dialect = realtime.get("dialect", Dialect.GA)
        if "voice" not in realtime:
            realtime["voice"] = "marin" if realtime_dialect is Dialect.GA else "alloy"
        if realtime_dialect is Dialect.GA and "api-version=" in realtime.get("url", ""):
            notes.append(
                "REALTIME_URL carries api-version (Azure preview shape) but REALTIME_DIALECT "
                "is ga; Azure preview deployments speak the beta dialect"
            )
        calllog["data_dir"] = server.get("data_dir", Path("data"))
        if problems:
            raise ConfigError(problems)
        sections = {name: _SECTIONS[name](**values[name]) for name in _SECTIONS}
        return cls(**sections, warnings=tuple(notes))


def _check_public_url(server: dict[str, Any], local_mode: bool) -> list[str]:
    public_url = server.get("public_url")
    if public_url is None:
        if local_mode:
            return []
        return [
            "PUBLIC_URL is required with TWILIO_AUTH_TOKEN: it is the https URL Twilio "
            "reaches and the URL webhook signatures are checked against"
        ]
    public_url = server["public_url"] = public_url.rstrip("/")
    parts = urlsplit(public_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return [f"PUBLIC_URL must be an https:// URL, got {public_url!r}"]
    if parts.path or parts.query:
        return [
            "PUBLIC_URL must be a bare origin such as https://bot.example.com, without a path; "
            f"got {public_url!r}"
        ]
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return [f"PUBLIC_URL must use https:// (Twilio streams need wss://); got {public_url!r}"]
    return []


def settings_tables() -> dict[Literal["bridge", "local"], str]:
    """The README's settings tables in Markdown, from the rows above."""
    tables: dict[Literal["bridge", "local"], list[str]] = {"bridge": [], "local": []}
    for name, section in _SECTIONS.items():
        lines = tables["local" if name == "local" else "bridge"]
        for _, row in _rows(section):
            lines.append(f"| `{row.env}` | {row.shown_default} | {row.doc} |")
    header = "| Setting | Default | Meaning |\n|---|---|---|\n"
    return {key: header + "\n".join(lines) for key, lines in tables.items()}


# ---- reading the environment (only here) ---------------------------------------------------


def environment(dotenv: bool = True) -> dict[str, str]:
    """The process environment, with `.env` from the working directory beneath it (real
    environment variables win)."""
    values: dict[str, str] = {}
    if dotenv:
        from dotenv import dotenv_values, find_dotenv

        found = find_dotenv(usecwd=True)
        if found:
            values.update({k: v for k, v in dotenv_values(found).items() if v is not None})
    values.update(os.environ)
    return values


def simulator_defaults(env: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """What `bot simulate` needs to reach a bridge, read leniently (the bridge's other
    settings are its own business): base URL, auth token (or the local secret), account."""
    port = env.get("PORT", "").strip() or "5050"
    base = env.get("PUBLIC_URL", "").strip() or f"http://127.0.0.1:{port}"
    token = env.get("TWILIO_AUTH_TOKEN", "").strip() or None
    if token is None:
        data_dir = Path(env.get("BOT_DATA_DIR", "").strip() or "data")
        token = load_local_secret(data_dir, create=False)
    return base, token, env.get("TWILIO_ACCOUNT_SID", "").strip() or None


def local_realtime_key(settings: LocalBackendSettings, data_dir: Path) -> str:
    """The key of `/v1/realtime`: LOCAL_REALTIME_KEY, or a new one for this process, left
    in a 0600 file for the clients on this machine."""
    if settings.realtime_key is not None:
        return settings.realtime_key.reveal()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path = data_dir / LOCAL_REALTIME_KEY_FILE
    temporary = path.with_suffix(".new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
    temporary.replace(path)
    return value


def load_local_secret(data_dir: Path, *, create: bool = True) -> str | None:
    """The local-mode signing secret, shared by `bot serve` and `bot simulate` via a 0600 file."""
    path = data_dir / LOCAL_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return None
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
    return value
