"""From `ConnectionOptions` to the core's option objects and the one client of each kind.

`options.kind` is "ws" (the reconnecting WebSocket client), "socketio" or "sse"
(`core.targets`). Every client reports the same core events, so the Console and the
`connect` command wire any of them the same way; `make_client` is the one place that
builds one. The probe's `Target` (the `probe` command, the Inject panel) and what
`diagnose` checks (the command, the Diagnose dialog) come from the same options.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from wsconsole.app.options import SIO_TRANSPORTS, ConnectionOptions
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.events import Observer
from wsconsole.core.tokens import CommandToken, TokenProvider, UrlToken, fetch_token

if TYPE_CHECKING:  # python-socketio and httpx take a second to load: imported when used
    from wsconsole.app.ports import SessionClient
    from wsconsole.core.targets.socketio import SocketIOOptions
    from wsconsole.core.targets.sse import SSEOptions
    from wsconsole.diagnostics.model import DiagnoseOptions
    from wsconsole.faults.target import Target


def backoff_policy(options: ConnectionOptions) -> BackoffPolicy:
    """The reconnect policy the options describe."""
    return BackoffPolicy(initial=options.backoff_initial, factor=options.backoff_factor,
                         cap=options.backoff_cap, jitter=options.backoff_jitter,
                         max_attempts=options.max_attempts)


def token_provider(options: ConnectionOptions,
                   fallback: TokenProvider | None = None) -> TokenProvider | None:
    """Where the client takes its token from before each connect: the command or URL
    (asked again for a fresh token after the server refused one), else the fixed token,
    else `fallback`, a provider the application holds for the connection (the demo
    cluster signing the console's own tokens, a fresh one for every connect)."""
    if options.token_command:
        return CommandToken(options.token_command)
    if options.token_url:
        return UrlToken(options.token_url, verify=not options.insecure)
    return options.token if options.token is not None else fallback


async def current_token(options: ConnectionOptions,
                        fallback: TokenProvider | None = None) -> str | None:
    """The token a one-off connection (a probe, a diagnosis) presents now, asked of the
    provider `token_provider` names; TokenError when that provider fails."""
    return await fetch_token(token_provider(options, fallback))


def websocket_options(options: ConnectionOptions,
                      token: TokenProvider | None = None) -> ClientOptions:
    """ClientOptions for the WebSocket client; `token` is the fallback provider (see
    `token_provider`)."""
    return ClientOptions(
        url=options.url, headers=list(options.headers),
        subprotocols=list(options.subprotocols), origin=options.origin,
        ca_file=options.ca_file, insecure=options.insecure,
        connect_timeout=options.connect_timeout, max_size=options.max_size,
        token=token_provider(options, token), token_mode=options.token_mode,
        harness=options.harness or bool(options.rooms), rooms=list(options.rooms),
        backoff=backoff_policy(options), stable_after=options.stable_after,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout, close_timeout=options.close_timeout,
        queue_limit=options.queue_limit, compression=options.compression,
        pongs=options.pongs)


def socketio_options(options: ConnectionOptions,
                     token: TokenProvider | None = None) -> SocketIOOptions:
    """SocketIOOptions: the URL's path is the namespace unless --path / --namespace say
    otherwise; the token (or a provider's) is sent in the auth payload as {"token": ...}
    next to its other fields (the harness's Socket.IO nodes read it there)."""
    from wsconsole.core.targets.socketio import options_from_url

    extra: dict[str, Any] = {}
    if options.sio_namespaces:
        extra["namespaces"] = list(options.sio_namespaces)
    if options.sio_path:
        extra["path"] = options.sio_path
    return options_from_url(
        options.url, auth=options.sio_auth, token=token_provider(options, token),
        headers=list(options.headers), transports=SIO_TRANSPORTS[options.sio_transport],
        backoff=backoff_policy(options), stable_after=options.stable_after,
        connect_timeout=options.connect_timeout, ack_timeout=options.sio_ack_timeout,
        insecure=options.insecure, rooms=list(options.rooms),
        join_event=options.sio_join_event, leave_event=options.sio_leave_event, **extra)


def sse_options(options: ConnectionOptions, token: TokenProvider | None = None) -> SSEOptions:
    """SSEOptions for an event stream."""
    from wsconsole.core.targets.sse import SSEOptions

    return SSEOptions(url=options.url, headers=list(options.headers),
                      backoff=backoff_policy(options), stable_after=options.stable_after,
                      token=token_provider(options, token),
                      token_mode=options.token_mode,  # type: ignore[arg-type]
                      connect_timeout=options.connect_timeout,
                      read_timeout=options.sse_read_timeout, insecure=options.insecure,
                      last_event_id=options.sse_last_event_id)


def core_options(options: ConnectionOptions) -> ClientOptions | SocketIOOptions | SSEOptions:
    """The core's options object for the options' kind (ClientOptionsError if the core
    refuses what the declaration let through, e.g. a URL `websockets` cannot parse)."""
    if options.kind == "socketio":
        return socketio_options(options)
    if options.kind == "sse":
        return sse_options(options)
    return websocket_options(options)


def make_client(options: ConnectionOptions, name: str, observers: Iterable[Observer] = (),
                token: TokenProvider | None = None) -> SessionClient:
    """A (not started) client of the options' kind reporting to `observers`; `token` is
    asked for its token when the options name no source of their own (`token_provider`)."""
    if options.kind == "socketio":
        from wsconsole.core.targets.socketio import SocketIOClient

        return SocketIOClient(socketio_options(options, token), name=name, observers=observers)
    if options.kind == "sse":
        from wsconsole.core.targets.sse import SSEClient

        return SSEClient(sse_options(options, token), name=name, observers=observers)
    return ReconnectingClient(websocket_options(options, token), name=name, observers=observers)


def probe_target(options: ConnectionOptions, token: str | None) -> Target:
    """The probe's raw-socket target: the same URL and credentials as the client's, with
    `token` the one the options' provider gave (`current_token`: a probe connects once)."""
    from wsconsole.faults.target import Target

    return Target(options.url, headers=tuple(options.headers),
                  subprotocols=tuple(options.subprotocols), token=token,
                  token_via=options.token_mode,  # type: ignore[arg-type]
                  origin=options.origin, ca_file=options.ca_file, insecure=options.insecure)


def diagnose_options(options: ConnectionOptions, token: str | None,
                     **run: Any) -> DiagnoseOptions:
    """What `diagnose` checks: the connection's URL and credentials, `token` the one its
    provider gave (`current_token`), with `run` settings (timeout, pings, reconnect,
    audit); DiagnoseError when those cannot work."""
    from wsconsole.diagnostics.model import DiagnoseOptions

    diagnose = DiagnoseOptions(
        url=options.url, token=token, token_mode=options.token_mode,
        headers=list(options.headers), subprotocols=list(options.subprotocols),
        origin=options.origin, ca_file=options.ca_file, insecure=options.insecure, **run)
    diagnose.validate()
    return diagnose
