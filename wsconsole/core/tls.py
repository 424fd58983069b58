"""The TLS context every client-side connection uses (client, probe, diagnostics, swarm).

Besides the system's CAs (or `ca_file`), a loopback host is also checked against
wsconsole's local CA when it exists (core/localca.py): the harness (`--tls`) and the proxy
serve certificates from it on this machine, so the console's own clients connect to them
without flags. Only for loopback hosts: a certificate for any other host must verify
against the CAs the rest of the system trusts, or the tool would hide what a user's
browser would refuse.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from wsconsole.core.urls import is_loopback


def client_context(
    ca_file: str | None = None, insecure: bool = False, host: str | None = None
) -> ssl.SSLContext:
    """System CAs (or `ca_file`), plus the local CA for a loopback `host`; `insecure` turns
    certificate and hostname checks off."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif is_loopback(host):
        # here, not at the top: localca imports cryptography (~10 MB), which only a
        # process that makes or uses the CA needs
        from wsconsole.core.localca import existing_ca_file

        local = existing_ca_file()
        if local is not None:
            try:
                context.load_verify_locations(cafile=local)
            except (OSError, ssl.SSLError):
                pass  # an unreadable local CA trusts nothing more; the handshake will say why
    return context


def url_context(url: str, ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """`client_context` for the host of `url` (what the WebSocket, Socket.IO and SSE
    clients and their HTTP sniffing use)."""
    return client_context(ca_file, insecure, urlsplit(url).hostname)
