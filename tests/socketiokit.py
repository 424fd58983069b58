"""Real Socket.IO peers for the tests: a python-socketio server (run as a child process with
`python -m tests.socketiokit PORT`) and a Node.js socket.io server (npm-installed
once per session into tests/.node/). Both answer the same events:

- "echo" acks with its arguments; "shout" broadcasts "news" with its arguments to everyone;
- "join"/"leave" ROOM put the socket in or out of a room (ack "joined"/"left");
- "to_room" ROOM, DATA emits "room_message" DATA to that room;
- on connect, "welcome" with the auth payload it received; namespace /chat echoes too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import until

NODE_DIR = Path(__file__).parent / ".node"

NODE_SERVER = r"""
const { Server } = require("socket.io");
const port = parseInt(process.argv[2], 10);
const io = new Server(port, { pingInterval: 1000, pingTimeout: 1000 });
function wire(nsp) {
  nsp.on("connection", (socket) => {
    socket.emit("welcome", socket.handshake.auth || {});
    socket.on("echo", (...args) => {
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
      if (ack) ack(...args);
    });
    socket.on("shout", (...args) => { nsp.emit("news", ...args); });
    socket.on("join", (room, ack) => { socket.join(room); if (ack) ack("joined", room); });
    socket.on("leave", (room, ack) => { socket.leave(room); if (ack) ack("left", room); });
    socket.on("to_room", (room, data) => { nsp.to(room).emit("room_message", data); });
  });
}
wire(io.of("/"));
wire(io.of("/chat"));
console.log("listening " + port);
"""


def node_available() -> str | None:
    """Why Node tests cannot run, or None when node and npm are there."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not on PATH"
    return None


def install_node_socketio() -> str | None:
    """npm-install socket.io into tests/.node once; returns a skip reason or None."""
    reason = node_available()
    if reason:
        return reason
    if (NODE_DIR / "node_modules" / "socket.io" / "package.json").exists():
        (NODE_DIR / "server.js").write_text(NODE_SERVER)
        return None
    NODE_DIR.mkdir(exist_ok=True)
    if not (NODE_DIR / "package.json").exists():
        (NODE_DIR / "package.json").write_text('{"name": "wsconsole-tests", "private": true}\n')
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "socket.io@4"],
            cwd=NODE_DIR, capture_output=True, timeout=240,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install socket.io failed: {exc}"
    if done.returncode != 0:
        return f"npm install socket.io failed: {done.stderr.decode(errors='replace')[-300:]}"
    (NODE_DIR / "server.js").write_text(NODE_SERVER)
    return None


def node_argv(port: int) -> list[str]:
    """Command line of the Node socket.io test server."""
    return ["node", str(NODE_DIR / "server.js"), str(port)]


def python_argv(port: int) -> list[str]:
    """Command line of the python-socketio test server."""
    return [sys.executable, "-m", "tests.socketiokit", str(port)]


def build_python_app():  # type: ignore[no-untyped-def]
    """The python-socketio server (aiohttp) with the events above."""
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp", ping_interval=1, ping_timeout=1)
    app = web.Application()
    sio.attach(app)

    for ns in ("/", "/chat"):
        def wire(ns: str = ns) -> None:
            @sio.on("connect", namespace=ns)
            async def connect(sid, environ, auth=None):  # type: ignore[no-untyped-def]
                await sio.emit("welcome", auth or {}, to=sid, namespace=ns)

            @sio.on("echo", namespace=ns)
            async def echo(sid, *args):  # type: ignore[no-untyped-def]
                return args

            @sio.on("shout", namespace=ns)
            async def shout(sid, *args):  # type: ignore[no-untyped-def]
                await sio.emit("news", args if len(args) != 1 else args[0], namespace=ns)

            @sio.on("join", namespace=ns)
            async def join(sid, room):  # type: ignore[no-untyped-def]
                await sio.enter_room(sid, room, namespace=ns)
                return "joined", room

            @sio.on("leave", namespace=ns)
            async def leave(sid, room):  # type: ignore[no-untyped-def]
                await sio.leave_room(sid, room, namespace=ns)
                return "left", room

            @sio.on("to_room", namespace=ns)
            async def to_room(sid, room, data):  # type: ignore[no-untyped-def]
                await sio.emit("room_message", data, room=room, namespace=ns)

        wire()
    return app


def main(argv: list[str]) -> None:
    """Serve the python-socketio test server on 127.0.0.1:PORT."""
    from aiohttp import web

    port = int(argv[0])
    print(f"listening {port}", flush=True)
    web.run_app(build_python_app(), host="127.0.0.1", port=port, print=None,
                handle_signals=True)


async def wait_listening(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            return False
        return True

    await until(listening, f"something listening on 127.0.0.1:{port}", timeout)


@pytest.fixture(scope="session")
def node_socketio() -> str:
    """Install socket.io for Node once per session; skip (with the reason) when impossible."""
    reason = install_node_socketio()
    if reason:
        pytest.skip(reason)
    return str(NODE_DIR)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
