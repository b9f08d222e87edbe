"""Settings read once at start-up from the environment (and `.env`, loaded by the CLI).

`Settings.from_env(mapping)` validates everything and raises one `ConfigError` listing
every problem, so a misconfigured deployment is fixed in one round trip.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from bot.errors import ConfigError
from bot.sansio.realtime import AudioFormat, Dialect

__all__ = ["DEFAULT_REALTIME_URL", "Secret", "Settings", "load_local_secret"]

DEFAULT_REALTIME_URL: Final = "wss://api.openai.com/v1/realtime"
DEFAULT_MODEL: Final = "gpt-realtime"
DEFAULT_INSTRUCTIONS: Final = (
    "You are a friendly, concise phone assistant. Speak naturally and keep answers short: "
    "the caller is listening on a telephone."
)
DEFAULT_FALLBACK: Final = (
    "Sorry, the assistant is not available right now. Please call again later. Goodbye."
)
LOCAL_SECRET_FILE: Final = "local-secret"
LOCAL_GREETING: Final = "Hello! I am the demo assistant. Ask me about an order, like order 4417."
_AUTH_MODES: Final = ("bearer", "api-key")


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


@dataclass(frozen=True)
class Settings:
    """Everything the bridge can be told. Defaults make a local server that needs no keys."""

    public_url: str | None = None  # None: local mode, derived from the bound port
    host: str = "127.0.0.1"
    port: int = 5050
    twilio_account_sid: str | None = None
    twilio_auth_token: Secret | None = None
    realtime_url: str = DEFAULT_REALTIME_URL
    realtime_model: str = DEFAULT_MODEL
    realtime_api_key: Secret | None = None
    realtime_auth: str = "bearer"
    realtime_dialect: Dialect = Dialect.GA
    realtime_audio: AudioFormat = AudioFormat.PCM16
    realtime_connect_timeout_s: float = 5.0
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    bot_instructions: str = DEFAULT_INSTRUCTIONS
    bot_voice: str = "marin"
    bot_greeting: str | None = None
    fallback_message: str = DEFAULT_FALLBACK
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500
    vad_prefix_ms: int = 300
    stream_token_ttl_s: int = 300
    shutdown_grace_s: float = 25.0
    data_dir: Path = field(default_factory=lambda: Path("data"))
    database_url: str | None = None  # None: SQLite in data_dir
    record_audio: bool = False
    recordings_dir: Path | None = None  # None: data_dir / "recordings"
    recording_retention_days: int = 30
    review_password: Secret | None = None
    twilio_api_url: str = "https://api.twilio.com"
    twilio_from_number: str | None = None
    bot_tools: str | None = None  # module with custom tools
    tool_timeout_s: float = 10.0
    transfer_to: str | None = None  # E.164 number or sip: URI
    transfer_announcement: str = "Please hold while I connect you."
    voicemail_message: str | None = None
    machine_detection: bool = True
    forward_dtmf: bool = True
    log_level: str = "INFO"
    local_backend: bool = False  # no model key or URL: the built-in offline pipeline
    # The local backend's services: an OpenAI-compatible API each, or the offline default.
    local_stt_url: str | None = None
    local_stt_model: str = "whisper-1"
    local_llm_url: str | None = None
    local_llm_model: str = "gpt-4o-mini"
    local_tts_url: str | None = None
    local_tts_model: str = "gpt-4o-mini-tts"
    local_tts_voice: str | None = None
    local_tts: str = "piper"  # offline voice: piper | espeak
    local_api_key: Secret | None = None
    warnings: tuple[str, ...] = ()

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

    @property
    def local_mode(self) -> bool:
        """No Twilio auth token: loopback only, webhooks signed with a generated local secret."""
        return self.twilio_auth_token is None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from environment variables.

        Raises:
            ConfigError: with every problem found, not just the first.
        """
        problems: list[str] = []
        notes: list[str] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name} must be a number, got {raw!r}")
                return default
            if not low <= value <= high:
                problems.append(f"{name} must be between {low:g} and {high:g}, got {raw}")
                return default
            return value

        def choice(name: str, allowed: tuple[str, ...], default: str) -> str:
            raw = (text(name) or default).lower()
            if raw not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
                return default
            return raw

        token_raw = text("TWILIO_AUTH_TOKEN")
        token = Secret(token_raw) if token_raw else None
        port = int(number("PORT", 5050, 0, 65535))
        host = text("HOST")
        if token is None:
            if host and not _is_loopback(host):
                notes.append(
                    f"HOST={host} ignored: without TWILIO_AUTH_TOKEN the server binds to "
                    "127.0.0.1 only, so unverified webhooks are never served publicly"
                )
            host = "127.0.0.1"
        else:
            host = host or "0.0.0.0"

        public_url = text("PUBLIC_URL")
        if public_url is not None:
            public_url = public_url.rstrip("/")
            parts = urlsplit(public_url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                problems.append(f"PUBLIC_URL must be an https:// URL, got {public_url!r}")
            elif parts.path or parts.query:
                problems.append(
                    f"PUBLIC_URL must be a bare origin such as https://bot.example.com, "
                    f"without a path; got {public_url!r}"
                )
            elif parts.scheme == "http" and not _is_loopback(parts.hostname):
                problems.append(
                    f"PUBLIC_URL must use https:// (Twilio streams need wss://); got {public_url!r}"
                )
        elif token is not None:
            problems.append(
                "PUBLIC_URL is required with TWILIO_AUTH_TOKEN: it is the https URL Twilio "
                "reaches and the URL webhook signatures are checked against"
            )

        account_sid = text("TWILIO_ACCOUNT_SID")
        if account_sid is not None and not (
            account_sid.startswith("AC") and len(account_sid) == 34 and account_sid.isalnum()
        ):
            problems.append("TWILIO_ACCOUNT_SID must look like AC followed by 32 characters")

        realtime_url_raw = text("REALTIME_URL")
        realtime_url = realtime_url_raw or DEFAULT_REALTIME_URL
        if urlsplit(realtime_url).scheme not in ("ws", "wss") or not urlsplit(realtime_url).netloc:
            problems.append("REALTIME_URL must be a ws:// or wss:// URL")
        key_raw = text("REALTIME_API_KEY") or text("OPENAI_API_KEY")
        local_backend = key_raw is None and realtime_url_raw is None
        if local_backend:
            notes.append(
                "no REALTIME_API_KEY, OPENAI_API_KEY or REALTIME_URL: calls use the local offline "
                "backend (Whisper tiny.en, a rules-based demo agent, Piper)"
            )
        dialect = Dialect(choice("REALTIME_DIALECT", ("ga", "beta"), "ga"))
        audio = AudioFormat(choice("REALTIME_AUDIO", ("pcm16", "g711_ulaw"), "pcm16"))
        auth = choice("REALTIME_AUTH", _AUTH_MODES, "bearer")
        if dialect is Dialect.GA and "api-version=" in realtime_url:
            notes.append(
                "REALTIME_URL carries api-version (Azure preview shape) but REALTIME_DIALECT "
                "is ga; Azure preview deployments speak the beta dialect"
            )
        transcription = env.get("REALTIME_TRANSCRIPTION_MODEL")
        default_voice = "marin" if dialect is Dialect.GA else "alloy"

        def flag(name: str, default: bool = False) -> bool:
            raw = (text(name) or str(default)).lower()
            if raw not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                problems.append(f"{name} must be true or false, got {raw!r}")
                return False
            return raw in ("true", "1", "yes", "on")

        database_url = text("DATABASE_URL")
        if database_url is not None and not database_url.startswith(
            ("sqlite", "postgres", "postgresql")
        ):
            problems.append("DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        from bot.sansio.numbers import is_e164

        from_number = text("TWILIO_FROM_NUMBER")
        if from_number is not None and not is_e164(from_number):
            problems.append(
                f"TWILIO_FROM_NUMBER must be an E.164 number like +15551234567, got {from_number!r}"
            )
        transfer_to = text("TRANSFER_TO")
        if transfer_to is not None and not (is_e164(transfer_to) or transfer_to.startswith("sip:")):
            problems.append("TRANSFER_TO must be an E.164 number or a sip: address")
        api_url = text("TWILIO_API_URL") or "https://api.twilio.com"
        if urlsplit(api_url).scheme not in ("http", "https"):
            problems.append("TWILIO_API_URL must be an http(s) URL")
        review_raw = text("REVIEW_PASSWORD")
        if review_raw is not None and len(review_raw) < 8:
            problems.append("REVIEW_PASSWORD must be at least 8 characters")

        level = (text("LOG_LEVEL") or "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR; got {level!r}")
            level = "INFO"

        settings = cls(
            public_url=public_url,
            host=host,
            port=port,
            twilio_account_sid=account_sid,
            twilio_auth_token=token,
            realtime_url=realtime_url,
            realtime_model=text("REALTIME_MODEL") or DEFAULT_MODEL,
            realtime_api_key=Secret(key_raw) if key_raw else None,
            realtime_auth=auth,
            realtime_dialect=dialect,
            realtime_audio=audio,
            realtime_connect_timeout_s=number("REALTIME_CONNECT_TIMEOUT", 5.0, 0.1, 60),
            transcription_model=(
                "gpt-4o-mini-transcribe" if transcription is None else transcription.strip()
            )
            or None,
            bot_instructions=text("BOT_INSTRUCTIONS") or DEFAULT_INSTRUCTIONS,
            bot_voice=text("BOT_VOICE") or default_voice,
            bot_greeting=text("BOT_GREETING") or (LOCAL_GREETING if local_backend else None),
            fallback_message=text("BOT_FALLBACK_MESSAGE") or DEFAULT_FALLBACK,
            vad_threshold=number("VAD_THRESHOLD", 0.5, 0.0, 1.0),
            vad_silence_ms=int(number("VAD_SILENCE_MS", 500, 100, 10000)),
            vad_prefix_ms=int(number("VAD_PREFIX_MS", 300, 0, 5000)),
            stream_token_ttl_s=int(number("STREAM_TOKEN_TTL", 300, 10, 86400)),
            shutdown_grace_s=number("SHUTDOWN_GRACE_SECONDS", 25.0, 0, 3600),
            data_dir=Path(text("BOT_DATA_DIR") or "data"),
            database_url=database_url,
            record_audio=flag("RECORD_AUDIO"),
            recordings_dir=Path(raw_dir) if (raw_dir := text("RECORDINGS_DIR")) else None,
            recording_retention_days=int(number("RECORDING_RETENTION_DAYS", 30, 0, 36500)),
            review_password=Secret(review_raw) if review_raw else None,
            twilio_api_url=api_url,
            twilio_from_number=from_number,
            bot_tools=text("BOT_TOOLS") or ("bot.example_tools" if local_backend else None),
            tool_timeout_s=number("TOOL_TIMEOUT_SECONDS", 10.0, 0.1, 300),
            transfer_to=transfer_to,
            transfer_announcement=text("TRANSFER_ANNOUNCEMENT")
            or "Please hold while I connect you.",
            voicemail_message=text("VOICEMAIL_MESSAGE"),
            machine_detection=flag("MACHINE_DETECTION", default=True),
            forward_dtmf=flag("FORWARD_DTMF", default=True),
            log_level=level,
            local_backend=local_backend,
            local_stt_url=text("LOCAL_STT_URL"),
            local_stt_model=text("LOCAL_STT_MODEL") or "whisper-1",
            local_llm_url=text("LOCAL_LLM_URL"),
            local_llm_model=text("LOCAL_LLM_MODEL") or "gpt-4o-mini",
            local_tts_url=text("LOCAL_TTS_URL"),
            local_tts_model=text("LOCAL_TTS_MODEL") or "gpt-4o-mini-tts",
            local_tts_voice=text("LOCAL_TTS_VOICE"),
            local_tts=choice("LOCAL_TTS", ("piper", "espeak"), "piper"),
            local_api_key=Secret(raw_key) if (raw_key := text("LOCAL_API_KEY")) else None,
            warnings=tuple(notes),
        )
        if problems:
            raise ConfigError(problems)
        return settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
