from __future__ import annotations

import wave
from pathlib import Path

import pytest

from bot.call.realtime_socket import realtime_headers, realtime_url, redact_url
from bot.config import DEFAULT_REALTIME_URL, Settings, settings_tables
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import AudioFormat
from bot.errors import ConfigError


def test_defaults_start_a_local_loopback_server() -> None:
    settings = Settings.from_env({})
    assert settings.local_mode
    assert settings.server.host == "127.0.0.1" and settings.server.port == 5050
    assert settings.server.base_url == "http://127.0.0.1:5050"
    assert settings.realtime.url == DEFAULT_REALTIME_URL
    assert settings.realtime.dialect is Dialect.GA
    assert settings.realtime.audio is AudioFormat.PCM16
    assert settings.realtime.local  # no key, no URL: the offline pipeline answers
    assert settings.call.tools_module == "bot.example_tools" and settings.call.greeting
    assert any("local offline backend" in warning for warning in settings.warnings)
    assert not Settings.from_env({"OPENAI_API_KEY": "sk"}).realtime.local
    assert not Settings.from_env({"REALTIME_URL": "ws://127.0.0.1:9/v1/realtime"}).realtime.local
    assert Settings.from_env({"REALTIME_API_KEY": " ", "OPENAI_API_KEY": "sk"}).realtime.api_key


def test_without_auth_token_a_public_host_is_refused() -> None:
    settings = Settings.from_env({"HOST": "0.0.0.0"})
    assert settings.server.host == "127.0.0.1"
    assert any("HOST=0.0.0.0 ignored" in warning for warning in settings.warnings)


def test_every_problem_is_reported_at_once_and_secrets_stay_hidden() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "TWILIO_AUTH_TOKEN": "tok-SECRET-123",
                "PORT": "http",
                "REALTIME_URL": "https://api.openai.com/v1/realtime",
                "REALTIME_DIALECT": "v2",
                "REALTIME_AUDIO": "mp3",
                "REALTIME_AUTH": "basic",
                "VAD_THRESHOLD": "3",
                "TWILIO_ACCOUNT_SID": "nope",
                "REALTIME_API_KEY": "sk-SECRET-456",
            }
        )
    message = str(caught.value)
    for name in (
        "PUBLIC_URL",
        "PORT",
        "REALTIME_URL",
        "REALTIME_DIALECT",
        "REALTIME_AUDIO",
        "REALTIME_AUTH",
        "VAD_THRESHOLD",
        "TWILIO_ACCOUNT_SID",
    ):
        assert name in message
    assert len(caught.value.problems) == 8
    assert "SECRET" not in message


@pytest.mark.parametrize(
    "url", ["ftp://x", "http://bot.example.com", "https://bot.example.com/prefix"]
)
def test_public_url_must_be_an_https_origin(url: str) -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        Settings.from_env({"TWILIO_AUTH_TOKEN": "t", "PUBLIC_URL": url})


def test_production_settings() -> None:
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": "t",
            "PUBLIC_URL": "https://bot.example.com/",
            "OPENAI_API_KEY": "sk-test",
            "BOT_GREETING": "Hello!",
        }
    )
    assert not settings.local_mode
    assert settings.server.host == "0.0.0.0"
    assert settings.server.public_url == "https://bot.example.com"
    key = settings.realtime.api_key
    assert key is not None and key.reveal() == "sk-test"
    assert "sk-test" not in repr(settings)
    assert settings.call.greeting == "Hello!"


def test_openai_ga_url_and_headers() -> None:
    settings = Settings.from_env({"REALTIME_API_KEY": "sk-1", "REALTIME_MODEL": "gpt-realtime"})
    assert realtime_url(settings.realtime) == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert realtime_headers(settings.realtime) == {"Authorization": "Bearer sk-1"}


def test_azure_ga_shape() -> None:
    settings = Settings.from_env(
        {
            "REALTIME_URL": "wss://res.openai.azure.com/openai/v1/realtime",
            "REALTIME_MODEL": "my-deployment",
            "REALTIME_AUTH": "api-key",
            "REALTIME_API_KEY": "az-key",
        }
    )
    assert realtime_url(settings.realtime) == (
        "wss://res.openai.azure.com/openai/v1/realtime?model=my-deployment"
    )
    assert realtime_headers(settings.realtime) == {"api-key": "az-key"}


def test_azure_preview_shape_speaks_beta() -> None:
    url = (
        "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview"
        "&deployment=gpt-4o-realtime"
    )
    settings = Settings.from_env(
        {
            "REALTIME_URL": url,
            "REALTIME_AUTH": "api-key",
            "REALTIME_DIALECT": "beta",
            "REALTIME_API_KEY": "az-key",
        }
    )
    assert realtime_url(settings.realtime) == url  # the deployment names the model; nothing added
    assert realtime_headers(settings.realtime) == {
        "api-key": "az-key",
        "OpenAI-Beta": "realtime=v1",
    }
    assert settings.realtime.voice == "alloy"


def test_compatible_provider_with_its_own_model_ids() -> None:
    settings = Settings.from_env(
        {
            "REALTIME_URL": "wss://voice.example.net/v1/realtime",
            "REALTIME_MODEL": "opeai/AudioLLM/Voice2",
            "REALTIME_DIALECT": "beta",
            "REALTIME_API_KEY": "k",
        }
    )
    assert realtime_url(settings.realtime) == (
        "wss://voice.example.net/v1/realtime?model=opeai/AudioLLM/Voice2"
    )


def test_redacted_urls_hide_keys() -> None:
    assert (
        redact_url("wss://h/x?api-key=SECRET&deployment=d") == "wss://h/x?api-key=***&deployment=d"
    )
    assert "pw" not in redact_url("wss://user:pw@h:8443/x")


def test_a_blank_transcription_model_turns_transcription_off() -> None:
    assert Settings.from_env({}).realtime.transcription_model == "gpt-4o-mini-transcribe"
    assert (
        Settings.from_env({"REALTIME_TRANSCRIPTION_MODEL": ""}).realtime.transcription_model is None
    )


def test_the_readme_settings_tables_are_generated_from_the_settings_table() -> None:
    """The README is the user's reference: it must list exactly what the code reads."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name, table in settings_tables().items():
        start, end = f"<!-- settings:{name} -->", f"<!-- /settings:{name} -->"
        assert start in readme and end in readme, f"README lacks the {name} settings markers"
        shown = readme.split(start, 1)[1].split(end, 1)[0].strip()
        assert shown == table, (
            f"README {name} settings are stale; put this between the markers:\n{table}"
        )


def test_nothing_outside_the_config_module_reads_the_environment() -> None:
    root = Path(__file__).parents[2] / "bot"
    readers = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "config.py"
        and any(needle in path.read_text() for needle in ("os.environ", "os.getenv", "getenv("))
    ]
    assert readers == []


def test_continuity_settings_and_the_filler(tmp_path: Path) -> None:
    filler = tmp_path / "hold.wav"
    with wave.open(str(filler), "wb") as clip:
        clip.setnchannels(2)
        clip.setsampwidth(2)
        clip.setframerate(16000)
        clip.writeframes(b"\x00\x10" * 2 * 16000)  # one second, stereo
    settings = Settings.from_env(
        {"RECONNECT_FILLER": str(filler), "MAX_CALL_S": "0", "IDLE_PROMPT_S": "0"}
    )
    assert settings.call.reconnect_filler is not None
    assert len(settings.call.reconnect_filler) == 8000  # one second of 8 kHz μ-law
    assert settings.call.max_call_s == 0 and settings.call.idle_prompt_s == 0
    assert (settings.call.reconnect_s, settings.call.session_max_s) == (5.0, 1800.0)
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "RECONNECT_FILLER": str(tmp_path / "junk.wav"),
                "REALTIME_SESSION_MAX_S": "-1",
                "IDLE_PROMPTS": "x",
            }
        )
    message = str(caught.value)
    for name in ("RECONNECT_FILLER", "REALTIME_SESSION_MAX_S", "IDLE_PROMPTS"):
        assert name in message


def test_a_protected_greeting_needs_pause_then_decide() -> None:
    with pytest.raises(ConfigError, match="GREETING_INTERRUPTIBLE=false needs INTERRUPTIONS"):
        Settings.from_env({"GREETING_INTERRUPTIBLE": "false"})
    settings = Settings.from_env({"GREETING_INTERRUPTIBLE": "false", "INTERRUPTIONS": "confirm"})
    assert settings.call.greeting_interruptible is False


def test_listened_calls_are_checked_at_start_up() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "CALL_MODE": "transcribe",
                "TRANSCRIBE_LINES": "+15550001111=nobody,5550002222=+15550003333",
                "TRANSCRIBE_URL": "https://example.com/realtime",
                "TRANSCRIBE_TURNS": "sometimes",
            }
        )
    problems = "\n".join(caught.value.problems)
    assert "CALL_MODE=transcribe needs FORWARD_TO" in problems
    assert "TRANSCRIBE_LINES" in problems and "TRANSCRIBE_URL" in problems
    assert "TRANSCRIBE_TURNS" in problems
    with pytest.raises(ConfigError, match="FORWARD_TO"):
        Settings.from_env({"FORWARD_TO": "somebody"})
    listen = Settings.from_env(
        {
            "FORWARD_TO": "sip:desk@example.com",
            "TRANSCRIBE_LINES": "+15550001111=client:desk, +15550002222=+15550003333",
        }
    ).listen
    assert listen.forward_target("+15550001111") == "client:desk"
    assert listen.forward_target("+15550002222") == "+15550003333"
    assert listen.forward_target("+15550009999") is None  # CALL_MODE=bot: the bot answers
