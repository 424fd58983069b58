"""The real client, target and supervisor classes still have the shape the app model's
Protocols (wsconsole/app/ports.py) describe: every member there, methods with parameters of
the same names. Catches a rename in core or the harness that would break the window."""

from __future__ import annotations

import inspect
from typing import Protocol

import pytest

from wsconsole.app.ports import ClusterPort, HarnessClient, SessionClient
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.targets.socketio import SocketIOClient, options_from_url
from wsconsole.core.targets.sse import SSEClient, SSEOptions
from wsconsole.harness.cluster import Cluster, ClusterConfig

_MISSING = object()


def protocol_members(proto: type) -> dict[str, object]:
    """Name -> declaration of every public member of `proto` and the Protocols it extends."""
    found: dict[str, object] = {}
    for klass in reversed(proto.__mro__):
        if klass in (object, Protocol) or Protocol not in klass.__mro__:
            continue
        found.update({k: v for k, v in vars(klass).items() if not k.startswith("_")})
    return found


def assert_conforms(instance: object, proto: type) -> None:
    """Every member of `proto` exists on `instance`; a method takes the same parameters."""
    for name, declared in protocol_members(proto).items():
        actual = inspect.getattr_static(instance, name, _MISSING)
        assert actual is not _MISSING, f"{type(instance).__name__} has no {name} ({proto.__name__})"
        if inspect.isfunction(declared):
            wanted = list(inspect.signature(declared).parameters)
            got = list(inspect.signature(getattr(instance, name)).parameters)
            assert got[: len(wanted) - 1] == wanted[1:], (
                f"{type(instance).__name__}.{name}{got} does not match {proto.__name__}")


def test_every_client_kind_is_a_session_client() -> None:
    clients = [
        ReconnectingClient(ClientOptions(url="ws://127.0.0.1:9/"), name="ws"),
        SocketIOClient(options_from_url("http://127.0.0.1:9/"), name="sio"),
        SSEClient(SSEOptions(url="http://127.0.0.1:9/events"), name="sse"),
    ]
    for client in clients:
        assert_conforms(client, SessionClient)


def test_the_websocket_client_is_a_harness_client() -> None:
    client = ReconnectingClient(ClientOptions(url="ws://127.0.0.1:9/", harness=True))
    assert_conforms(client, HarnessClient)


def test_the_cluster_is_a_cluster_port() -> None:
    assert_conforms(Cluster(ClusterConfig()), ClusterPort)


def test_a_missing_member_is_caught() -> None:
    class Half:
        name = "x"

    with pytest.raises(AssertionError, match="has no"):
        assert_conforms(Half(), SessionClient)
