"""The TLS context every client-side connection uses (client, probe, diagnostics)."""

from __future__ import annotations

import ssl


def client_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """System CAs (or `ca_file`); `insecure` turns certificate and hostname checks off."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
