"""wsconsole: a desktop console for WebSocket and real-time systems."""

__version__ = "0.1.0"
