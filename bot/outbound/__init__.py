"""Calls the bridge places: one at a time, or a campaign through a contact list."""
