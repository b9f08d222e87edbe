"""A Realtime-compatible backend built from separate speech-to-text, chat and text-to-speech
services: in process for the bridge, or at `/v1/realtime` for any client."""
