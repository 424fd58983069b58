"""Headless core: the reconnecting client and its plain-object policies. No Qt below here."""
