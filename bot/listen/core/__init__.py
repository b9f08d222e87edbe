"""The listened call's pure core: tracks, skipped frames and speaker-labelled turns."""
