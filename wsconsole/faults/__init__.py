"""Malformed-frame catalogue and the probe / audit runner."""
