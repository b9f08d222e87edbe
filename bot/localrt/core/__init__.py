"""The local Realtime backend's protocol core, free of I/O."""
