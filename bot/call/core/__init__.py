"""The call session, free of I/O: events in, commands and reports out."""
