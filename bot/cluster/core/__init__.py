"""The messages instances send each other, pure."""
