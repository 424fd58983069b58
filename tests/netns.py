"""Hosts simulated with Linux network namespaces, for the scale-out tests (issue 19).

`NetLab` makes a private bridge in the root namespace (the console's side, address
10.200.X.1/24) and one namespace per simulated host, each joined to the bridge by a veth pair
(its end inside renamed `eth0`, address 10.200.X.(10+i), `lo` up, a default route through the
bridge). A process runs on a host with `ip netns exec` (which execs: the PID we get is the
process's own), in its own session and process group; `Host.stop` ends it by PID.

Names carry this process's PID and a counter, and the subnet X is one no address on this
machine uses (chosen under a file lock), so parallel runs never collide. `down()` removes
every namespace and link it made, also when the test failed: first every process still in a
namespace is SIGKILLed by PID (`ip netns pids`: the agents' children too, which the test did
not start itself), then the namespaces and the bridge go.

Root and iproute2 are needed; `unavailable()` says why they are not, and the `netlab`
fixtures skip with that reason. Tests using it carry `pytest.mark.netns` (`-m netns`).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pytest

from tests.support import ProcessRegistry, pid_alive
from wsconsole.harness import procs

SUBNETS = ipaddress.ip_network("10.200.0.0/16")
IFNAMSIZ = 15  # longest Linux interface name
_labs = count(1)


class NetLabError(Exception):
    """A namespace, link or address could not be made (the `ip` command's own message)."""


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can (root, Linux, iproute2)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


def ip(*args: str) -> str:
    """Run `ip ARGS`; its output, or NetLabError with its message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NetLabError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class Host(ProcessRegistry):
    """One simulated host: a namespace with an address on the bridge; starts processes in it."""

    def __init__(self, name: str, netns: str, address: str) -> None:
        super().__init__()
        self.name = name
        self.netns = netns
        self.address = address

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Run `argv` inside this host's namespace, in a session of its own; kwargs go to
        Popen (tests/nodekit.py and tests/agentkit.py take a Host as their registry)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("preexec_fn", procs.DIE_WITH_PARENT)
        kwargs.setdefault("start_new_session", True)
        return super().start(["ip", "netns", "exec", self.netns, *argv], **kwargs)

    def stop(self, proc: subprocess.Popen[bytes], sig: int | None = signal.SIGTERM,
             timeout: float = 5.0) -> int | None:
        """End a process started here by its PID (its group: `sig`, SIGKILL after
        `timeout`; None: SIGKILL at once); its exit code."""
        return procs.stop_sync(proc, sig, timeout)

    def pids(self) -> list[int]:
        """Every process running in the namespace, whoever started it."""
        with contextlib.suppress(NetLabError):
            return [int(pid) for pid in ip("netns", "pids", self.netns).split()]
        return []


@dataclass
class NetLab:
    """A bridge and a namespace per host on it; see the module docstring."""

    names: tuple[str, ...] = ("hostA", "hostB")
    hosts: dict[str, Host] = field(default_factory=dict)
    bridge: str = ""
    bridge_address: str = ""
    _made_netns: list[str] = field(default_factory=list)
    _made_links: list[str] = field(default_factory=list)

    def up(self) -> NetLab:
        """Make the bridge and the hosts (everything made so far is removed on failure)."""
        tag = f"wsc{os.getpid():x}{next(_labs):x}"
        self.bridge = f"{tag}b"
        if len(self.bridge) + 1 > IFNAMSIZ:
            raise NetLabError(f"interface names too long for this PID: {self.bridge}")
        try:
            net = self._bridge_up()
            for index, name in enumerate(self.names):
                self._host_up(tag, index, name, net)
        except BaseException:
            self.down()
            raise
        return self

    def _bridge_up(self) -> ipaddress.IPv4Network:
        lock = Path(tempfile.gettempdir()) / "wsconsole-netns.lock"
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # two runs never pick the same free subnet
            net = self._free_subnet()
            ip("link", "add", self.bridge, "type", "bridge")
            self._made_links.append(self.bridge)
            self.bridge_address = str(net[1])
            ip("addr", "add", f"{self.bridge_address}/{net.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        return net

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        used = [ipaddress.ip_interface(word).network for line in
                ip("-o", "-4", "addr", "show").splitlines()
                for prev, word in zip(line.split(), line.split()[1:], strict=False)
                if prev == "inet"]
        subnets = list(SUBNETS.subnets(new_prefix=24))
        first = os.getpid() % len(subnets)
        for net in subnets[first:] + subnets[:first]:
            if not any(net.overlaps(other) for other in used):
                return net
        raise NetLabError(f"no free /24 left in {SUBNETS}")

    def _host_up(self, tag: str, index: int, name: str, net: ipaddress.IPv4Network) -> None:
        netns = f"{tag}-{name}"
        ip("netns", "add", netns)
        self._made_netns.append(netns)
        outside = f"{tag}v{index}"
        ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self._made_links.append(outside)
        ip("link", "set", outside, "master", self.bridge, "up")
        address = str(net[10 + index])
        ip("-n", netns, "addr", "add", f"{address}/{net.prefixlen}", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "route", "add", "default", "via", self.bridge_address)
        self.hosts[name] = Host(name, netns, address)

    def clear(self, timeout: float = 5.0) -> list[str]:
        """SIGKILL every process in the namespaces by PID (the ones started here are reaped);
        returns the ones still there after `timeout`, named."""
        left: list[str] = []
        for host in self.hosts.values():
            for pid in host.pids():
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            host.kill_all()
            deadline = time.monotonic() + timeout
            while (alive := [p for p in host.pids() if pid_alive(p)]) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            if alive:
                left.append(f"{host.name}: processes {alive} still running")
        return left

    def down(self, timeout: float = 5.0) -> list[str]:
        """`clear`, then remove the namespaces and the links made; returns what could not be
        removed (empty when all went)."""
        left = self.clear(timeout)
        for netns in reversed(self._made_netns):
            try:
                ip("netns", "del", netns)
            except NetLabError as exc:
                left.append(str(exc))
        self._made_netns.clear()
        for link in reversed(self._made_links):
            try:
                ip("link", "del", link)
            except NetLabError as exc:  # a veth goes with its peer's namespace, on its own time
                if GONE not in str(exc):
                    left.append(str(exc))
        self._made_links.clear()
        return left


GONE = "Cannot find device"  # `ip link del` of a link that is not there (any more)
NOT_PERMITTED = ("Operation not permitted", "Permission denied", "not supported")


@pytest.fixture(scope="module")
def netlab() -> Iterator[NetLab]:
    """Two hosts, hostA and hostB, on a private bridge for the module; skipped with the reason
    where namespaces cannot be made. Teardown removes everything, and fails the test run if
    it could not."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    lab = NetLab()
    try:
        lab.up()
    except NetLabError as exc:
        if not any(text in str(exc) for text in NOT_PERMITTED):
            raise
        pytest.skip(f"network namespaces cannot be made here: {exc}")
    try:
        yield lab
    finally:
        left = lab.down()
        assert not left, f"left behind: {left}"


@pytest.fixture
def hosts(netlab: NetLab) -> Iterator[dict[str, Host]]:
    """The module's hosts for one test; every process still running in them afterwards is
    killed by PID."""
    try:
        yield netlab.hosts
    finally:
        left = netlab.clear()
        assert not left, f"left running: {left}"
