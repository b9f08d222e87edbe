"""Listen-only calls: a fork of a call that a person answers, transcribed live."""
