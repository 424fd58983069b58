"""The TLS options every harness server takes: `--tls-cert FILE --tls-key FILE`.

`wsconsole harness --tls` (harness/members.py) writes a certificate from wsconsole's local CA
(core/localca.py) for the loopback names and hands both files to the balancer and the
nodes, so each serves wss:// (and https:// for /metrics and /healthz).
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from wsconsole.core.localca import ServerFiles, server_context
from wsconsole.errors import WsconsoleError


class TlsFilesError(WsconsoleError, ValueError):
    """--tls-cert / --tls-key given alone, or files that cannot be used (exit code 2)."""


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """--tls-cert / --tls-key: serve TLS (the harness's nodes and balancer share them)."""
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve wss:// with this certificate chain (PEM); needs --tls-key")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")


def tls_files(args: argparse.Namespace) -> ServerFiles | None:
    """The --tls-cert / --tls-key pair (None when neither is given); TlsFilesError for half."""
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise TlsFilesError("--tls-cert and --tls-key go together")
    return ServerFiles(Path(args.tls_cert), Path(args.tls_key))


def tls_context(files: ServerFiles | None) -> ssl.SSLContext | None:
    """A server context for `files` (None for None); TlsFilesError naming what cannot be read."""
    if files is None:
        return None
    try:
        return server_context(files)
    except (OSError, ssl.SSLError) as exc:
        raise TlsFilesError(f"cannot use --tls-cert {files.cert} / --tls-key {files.key}: "
                           f"{exc}") from None
