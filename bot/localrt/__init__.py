"""A Realtime-compatible backend assembled from separate speech-to-text, chat and
text-to-speech services. The protocol logic is `bot.sansio.rtserver`; this package runs it."""
