"""The call log: writer, recordings, review UI, JSON API and the `bot calls` command."""
