"""Pure parts of the call log: the recording timeline and how a stored call is shown."""
