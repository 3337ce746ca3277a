"""callgate: live call-control policy for Asterisk (pickup, listen, whisper, phone replace)."""

__version__ = "0.1.0"
