"""Twilio Media Streams ⇄ OpenAI Realtime voice bot bridge."""

__version__ = "0.1.0"
