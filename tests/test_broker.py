"""The broker: resolution order, a real server on a loopback port, kill / restart / stop."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

import pytest

from tests.support import pid_alive
from wsconsole.harness import broker as broker_module
from wsconsole.harness.broker import Broker, BrokerError, find_server_binary, ping, server_pid


def _redis_set_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        data = b""
        while not data.endswith(b"$1\r\nv\r\n") and len(data) < 64:
            data += sock.recv(64)
    return data


def test_started_broker_answers_on_loopback_and_stops_cleanly() -> None:
    broker = Broker()
    url = broker.start()
    try:
        assert url == f"redis://127.0.0.1:{broker.port}/0"
        assert broker.pid is not None and pid_alive(broker.pid)
        assert server_pid("127.0.0.1", broker.port) == broker.pid
        assert _redis_set_get(broker.port).endswith(b"$1\r\nv\r\n")
        data_dir = broker.data_dir
        assert data_dir is not None
        pid = broker.pid
    finally:
        broker.stop()
    assert not pid_alive(pid)
    assert not data_dir.exists(), "the temp dir it owns is removed"
    assert not ping("127.0.0.1", broker.port)


def test_kill_is_sigkill_and_restart_reuses_the_port() -> None:
    broker = Broker()
    broker.start()
    try:
        port, first_pid = broker.port, broker.pid
        assert first_pid is not None
        broker.kill()
        assert not broker.alive and not pid_alive(first_pid)
        assert not ping("127.0.0.1", port)
        broker.restart()
        assert broker.port == port and broker.alive
        assert broker.pid != first_pid
        assert server_pid("127.0.0.1", port) == broker.pid
    finally:
        broker.stop()


def test_pause_makes_it_silent_and_resume_brings_it_back() -> None:
    with Broker() as broker:
        broker.pause()
        assert broker.alive, "a stopped process is still alive"
        assert not ping("127.0.0.1", broker.port, timeout=0.3)
        broker.resume()
        assert ping("127.0.0.1", broker.port, timeout=5)


def test_no_disk_writes_outside_its_dir() -> None:
    with Broker() as broker:
        assert broker.pid is not None
        cwd = os.readlink(f"/proc/{broker.pid}/cwd")
        assert cwd == str(broker.data_dir)
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
            sock.sendall(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n")
            reply = sock.recv(256)
        assert reply.endswith(b"$4\r\nsave\r\n$0\r\n\r\n"), reply


def test_a_taken_port_is_a_clear_error() -> None:
    with Broker() as first:
        with pytest.raises(BrokerError, match="exited at start"):
            Broker(ready_timeout=5).start(first.port)


def test_explicit_url_starts_nothing_and_cannot_be_killed() -> None:
    with Broker() as owned:
        external = Broker(owned.url)
        assert external.start() == owned.url
        assert external.pid is None and not external.owned and external.alive
        with pytest.raises(BrokerError, match="not ours"):
            external.kill()
        with pytest.raises(BrokerError, match="not ours"):
            external.restart()
        external.stop()  # a no-op for a broker we do not own
        assert owned.alive
        external.wait_ready(timeout=5)


def test_unreachable_url_and_bad_scheme_are_clear_errors() -> None:
    with pytest.raises(BrokerError, match="not a Redis URL"):
        Broker("http://127.0.0.1:1")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(BrokerError, match="does not answer PING"):
        Broker(f"redis://127.0.0.1:{port}/0", ready_timeout=0.2).start()


def test_redis_server_on_path_wins_over_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert find_server_binary() == fake
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_server_binary().name == "valkey-server"


def test_unsupported_platform_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Windows")
    with pytest.raises(BrokerError) as caught:
        broker_module.bundled_server_binary()
    message = str(caught.value)
    assert "--redis URL" in message and "redis-server" in message
