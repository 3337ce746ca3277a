"""End-to-end tests against a real Asterisk (skipped when no Asterisk binary is found)."""
