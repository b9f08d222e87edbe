"""The live call: from a verified media stream to the end of the call."""
