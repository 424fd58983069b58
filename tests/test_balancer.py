"""The balancer as a real subprocess in front of real websockets backends: routing, health, control.

Time is scaled by tests.support.MS; the 2 s detection bound of the issue is asserted as stated
(times WSCONSOLE_TEST_TIMESCALE on a slow machine).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.balancerkit import (
    TIMEOUT,
    local_backends,
    open_client,
    raw_exchange,
    served_by,
    start_balancer,
    start_process_backend,
)
from tests.support import MS, SCALE, ProcessRegistry, until
from wsconsole.harness.control import ControlError

__all__ = ["local_backends", "start_balancer"]

SOURCES = [f"127.0.0.{n}" for n in range(10, 34)]
DETECT_BOUND = 2000 * MS


async def test_ip_hash_sticks_per_source_address_and_spreads(local_backends, start_balancer):
    backends = await local_backends(3)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    first = {src: await served_by(balancer.url, src) for src in SOURCES}
    again = {src: await served_by(balancer.url, src) for src in SOURCES}
    assert first == again
    assert set(first.values()) == set(backends), f"24 addresses all on {set(first.values())}"


async def test_dead_backend_clients_spread_and_the_rest_keep_their_node(
    local_backends, start_balancer
):
    backends = await local_backends(3)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    before = {src: await served_by(balancer.url, src) for src in SOURCES}
    victim = "n2"
    assert victim in before.values()
    await backends[victim].stop()
    await balancer.wait_health(victim, False)
    after = {src: await served_by(balancer.url, src) for src in SOURCES}
    for src in SOURCES:
        if before[src] == victim:
            assert after[src] != victim
        else:
            assert after[src] == before[src], f"{src} moved although its node is alive"
    moved = {after[src] for src in SOURCES if before[src] == victim}
    assert moved  # the victim's clients went somewhere healthy
    # it comes back: its clients return to it (rendezvous is stable)
    await backends[victim].start()
    await balancer.request("backend_remove", id=victim)
    await balancer.request("backend_add", id=victim, host="127.0.0.1", port=backends[victim].port)
    back = {src: await served_by(balancer.url, src) for src in SOURCES}
    assert back == before


async def test_draining_backend_is_not_routable(local_backends, start_balancer):
    backends = await local_backends(2)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    backends["n1"].healthy = False  # /healthz now answers 503
    await balancer.wait_health("n1", False)
    assert {await served_by(balancer.url, src) for src in SOURCES} == {"n2"}
    backends["n1"].healthy = True
    await balancer.wait_health("n1", True)


async def test_cookie_mode_sets_and_honours_the_cookie(local_backends, start_balancer):
    backends = await local_backends(3)
    balancer = await start_balancer({b.id: b.port for b in backends.values()}, sticky="cookie")
    ws, first = await open_client(balancer.url)
    assert ws.response.headers["Set-Cookie"].startswith(f"wsc_node={first};")
    await ws.close()
    for backend_id in backends:
        for _ in range(3):
            headers = {"Cookie": f"theme=dark; wsc_node={backend_id}"}
            ws, served = await open_client(balancer.url, additional_headers=headers)
            assert served == backend_id
            assert "Set-Cookie" not in ws.response.headers
            await ws.close()
    # new clients without a cookie are spread (fewest open connections first)
    held = [await open_client(balancer.url) for _ in range(3)]
    assert {served for _, served in held} == set(backends)
    for ws, _ in held:
        await ws.close()
    # a cookie naming a node that is gone is replaced by a healthy one
    await backends["n3"].stop()
    await balancer.wait_health("n3", False)
    ws, served = await open_client(balancer.url, additional_headers={"Cookie": "wsc_node=n3"})
    assert served != "n3"
    assert ws.response.headers["Set-Cookie"].startswith(f"wsc_node={served};")
    await ws.close()


async def test_sid_mode_routes_by_connection_id(local_backends, start_balancer):
    backends = await local_backends(3)
    balancer = await start_balancer({b.id: b.port for b in backends.values()}, sticky="sid")
    placement = {}
    for n in range(12):
        url = f"{balancer.url}?sid=session-{n}"
        seen = {await served_by(url, src) for src in SOURCES[:4]}
        assert len(seen) == 1, f"sid session-{n} served by {seen} from different addresses"
        placement[n] = seen.pop()
    assert set(placement.values()) == set(backends)
    # switching the mode live: now the source address decides, whatever the sid
    assert (await balancer.request("sticky", mode="ip"))["sticky"] == "ip"
    src = SOURCES[0]
    assert len({await served_by(f"{balancer.url}?sid=s{n}", src) for n in range(8)}) == 1


async def test_sigkilled_backend_is_detected_and_avoided(procs: ProcessRegistry, start_balancer):
    ports = {}
    pids = {}
    for backend_id in ("k1", "k2"):
        ports[backend_id], pids[backend_id] = await start_process_backend(procs, backend_id)
    balancer = await start_balancer(ports, health_interval=0.5)
    ws, victim = await open_client(balancer.url)
    os.kill(pids[victim], signal.SIGKILL)
    detected = await balancer.wait_health(victim, False)
    assert detected <= DETECT_BOUND, f"killed backend noticed after {detected:.2f} s"
    # the open connection just ends; new ones go to the survivor
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    survivor = "k1" if victim == "k2" else "k2"
    assert {await served_by(balancer.url, src) for src in SOURCES[:8]} == {survivor}


async def test_sigstopped_backend_is_detected_and_avoided(procs: ProcessRegistry, start_balancer):
    ports = {}
    pids = {}
    for backend_id in ("p1", "p2"):
        ports[backend_id], pids[backend_id] = await start_process_backend(procs, backend_id)
    balancer = await start_balancer(ports, health_interval=0.5)
    victim = await served_by(balancer.url, SOURCES[0])
    os.kill(pids[victim], signal.SIGSTOP)
    try:
        detected = await balancer.wait_health(victim, False)
        assert detected <= DETECT_BOUND, f"paused backend noticed after {detected:.2f} s"
        survivor = "p1" if victim == "p2" else "p2"
        assert {await served_by(balancer.url, src) for src in SOURCES[:8]} == {survivor}
        os.kill(pids[victim], signal.SIGCONT)
        await balancer.wait_health(victim, True)
        assert await served_by(balancer.url, SOURCES[0]) == victim
    finally:
        os.kill(pids[victim], signal.SIGCONT)
        os.kill(pids[victim], signal.SIGKILL)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET noslash HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 20_000 + b"\r\n\r\n",
        b"G" * 40_000,
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # then EOF before the blank line
    ],
    ids=["binary", "version", "header", "nul", "target", "oversize", "endless", "truncated"],
)
async def test_bad_request_head_gets_400_and_the_balancer_keeps_serving(
    local_backends, start_balancer, payload
):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", balancer.port), timeout=TIMEOUT) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
            return b"".join(chunks)

    reply = await asyncio.to_thread(exchange)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply[:80]
    assert await served_by(balancer.url) == "n1"
    assert balancer.proc.poll() is None


async def test_slow_request_head_gets_408(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer(
        {b.id: b.port for b in backends.values()}, extra=("--head-timeout", str(300 * MS))
    )

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", balancer.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # and then nothing
            return sock.recv(65536)

    reply = await asyncio.to_thread(exchange)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]


async def test_no_healthy_backend_gives_503(start_balancer):
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    balancer = await start_balancer({"gone": dead_port})
    reply = await asyncio.to_thread(
        raw_exchange, balancer.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), reply[:80]
    with pytest.raises(InvalidStatus) as caught:
        await served_by(balancer.url)
    assert caught.value.response.status_code == 503
    await balancer.request("backend_remove", id="gone")
    with pytest.raises(InvalidStatus):
        await served_by(balancer.url)
    stats = await balancer.request("stats")
    assert stats["backends"] == {} and stats["rejected"]["503"] >= 3


async def test_stats_and_commands_over_the_control_channel(local_backends, start_balancer):
    backends = await local_backends(2)
    balancer = await start_balancer({"n1": backends["n1"].port}, sticky="ip")
    ws, served = await open_client(balancer.url)
    assert served == "n1"
    await ws.send("x" * 1000)
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x" * 1000

    snapshot = await balancer.request("stats")
    entry = snapshot["backends"]["n1"]
    assert entry["healthy"] is True
    assert entry["connections"] == 1 and entry["total"] == 1
    assert entry["bytes_up"] > 1000 and entry["bytes_down"] > 1000
    assert snapshot["sticky"] == "ip" and snapshot["faults"] == []
    await ws.close()

    # pushed several times a second, with the same shape
    count = len(balancer.stats)
    await until(lambda: len(balancer.stats) >= count + 2, "two more stats pushes")
    pushed = balancer.stats[-1]
    assert pushed["t"] - balancer.stats[-2]["t"] < 1.0 * SCALE
    assert pushed["type"] == "stats" and isinstance(pushed["t"], float)
    assert set(pushed["backends"]["n1"]) >= {
        "healthy",
        "connections",
        "total",
        "bytes_up",
        "bytes_down",
    }
    assert pushed["backends"]["n1"]["connections"] == 0

    # add a backend live; it gets traffic; remove the first one
    reply = await balancer.request(
        "backend_add", id="n2", host="127.0.0.1", port=backends["n2"].port
    )
    assert reply["healthy"] is True
    await balancer.request("backend_remove", id="n1")
    assert {await served_by(balancer.url, src) for src in SOURCES[:6]} == {"n2"}
    reply = await balancer.request("fault", target="n2", kind="latency", ms=5)
    assert reply["faults"] == [{"target": "n2", "kind": "latency", "ms": 5.0, "jitter_ms": 0.0}]
    await until(lambda: balancer.stats[-1]["faults"] == reply["faults"], "the fault in the stats")
    assert (await balancer.clear("n2"))["faults"] == []

    # bad commands are refused with a reason; the balancer keeps running
    bad = [
        ("backend_remove", {"id": "nope"}),
        ("backend_add", {"id": "n2", "host": "127.0.0.1", "port": 1}),
        ("backend_add", {"id": "n9", "host": "127.0.0.1", "port": "x"}),
        ("fault", {"target": "n2", "kind": "earthquake"}),
        ("fault", {"target": "n2", "kind": "latency"}),
        ("fault", {"target": "n2", "kind": "latency", "ms": -1}),
        ("fault", {"target": "nope", "kind": "blackhole"}),
        ("fault", {"target": "n2", "kind": "half_open", "direction": "sideways"}),
        ("sticky", {"mode": "random"}),
        ("explode", {}),
    ]
    for cmd, fields in bad:
        with pytest.raises(ControlError, match="refused"):
            await balancer.request(cmd, **fields)
    assert await served_by(balancer.url) == "n2"


async def test_balancer_exits_when_its_control_channel_goes(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    await balancer.control.close()
    code = await asyncio.to_thread(balancer.proc.wait, TIMEOUT)
    assert code == 0


async def test_module_entry_point_and_bad_usage(
    procs: ProcessRegistry, local_backends, start_balancer
):
    backends = await local_backends(1)
    balancer = await start_balancer(
        {b.id: b.port for b in backends.values()},
        argv_prefix=[sys.executable, "-m", "wsconsole.harness.balancer"],
    )
    assert await served_by(balancer.url) == "n1"
    for args in (["--backend", "nohost"], ["--sticky", "round-robin"], ["--port", "70000"]):
        proc = procs.python("-m", "wsconsole", "balancer", *args, stderr=subprocess.PIPE)
        _, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
        assert proc.returncode == 2
        assert b"error:" in err and b"Traceback" not in err


@pytest.mark.parametrize(
    "fault",
    [None, {"kind": "latency", "ms": 100}, {"kind": "slice", "size": 1000}],
    ids=["plain", "latency", "slice"],
)
async def test_half_close_is_passed_on(start_balancer, fault):
    """A client that shuts down its sending side still gets the backend's answer, faults or not."""

    async def counter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /healthz"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        else:
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            total = 0
            while data := await reader.read(65536):
                total += len(data)
            writer.write(f"got {total}".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(counter, "127.0.0.1", 0)
    try:
        balancer = await start_balancer({"raw": server.sockets[0].getsockname()[1]})
        if fault is not None:
            await balancer.fault("raw", **fault)

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", balancer.port), timeout=TIMEOUT) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"z" * 300_000)
                sock.shutdown(socket.SHUT_WR)
                chunks = []
                while data := sock.recv(65536):
                    chunks.append(data)
                return b"".join(chunks)

        reply = await asyncio.to_thread(exchange)
        assert reply.endswith(b"\r\n\r\ngot 300000"), reply[-60:]
        await balancer.stats_until(lambda b: b["raw"]["connections"] == 0)
    finally:
        server.close()


async def test_removed_backend_keeps_its_open_connections(local_backends, start_balancer):
    backends = await local_backends(2)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    src = {await served_by(balancer.url, s): s for s in SOURCES}
    ws, served = await open_client(balancer.url, src["n1"])
    assert served == "n1"
    await balancer.request("backend_remove", id="n1")
    assert await served_by(balancer.url, src["n1"]) == "n2"  # new connections avoid it
    await ws.send("still here")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "still here"  # the open one lives on
    assert set((await balancer.request("stats"))["backends"]) == {"n2"}
    await ws.close()
    reply = await balancer.request("backend_add", id="n3", host="127.0.0.1", port=1)
    assert reply["healthy"] is False  # added, but nothing listens there


async def test_port_in_use_is_a_clear_error(procs: ProcessRegistry):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = procs.python(
            "-m", "wsconsole", "balancer", "--port", str(port), stderr=subprocess.PIPE
        )
        _, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert b"cannot start" in err and b"Traceback" not in err


async def test_sigterm_stops_the_balancer_and_its_connections(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    ws, _ = await open_client(balancer.url)
    balancer.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(balancer.proc.wait, TIMEOUT) == 0
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), TIMEOUT)
