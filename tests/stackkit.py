"""What the shipped stack examples' tests share: an independent count of what the swarm's
clients sent and received, and a small client of the apps written from their protocols.

`WireRecorder` sees every frame the swarm's clients write and read (the frames themselves,
through the client's observer API, like the Frames view) and counts with its own parsing
and its own rule, not the swarm's accounting: every chat message a client wrote is owed to
every client of its room that had written its join before (the examples' scenarios publish
only once everybody joined), and a loss is an owed id a client never read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.swarm import appclient

NPM_CACHE = Path(__file__).parent / ".node-stacks"  # the examples' npm packages, per checkout


def install_example(example: Path) -> str | None:
    """npm-install an example's package.json into the cache folder (once; again when the
    package.json changes); the `node_modules` path, or pytest.skip with the reason."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not on PATH")
    target = NPM_CACHE / example.name
    wanted = (example / "package.json").read_text()
    modules = target / "node_modules"
    if (target / "package.json").exists() and (target / "package.json").read_text() == wanted \
            and (target / "package-lock.json").exists() and modules.is_dir():
        return str(modules)
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text(wanted)
    try:
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"],
                              cwd=target, capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm install for {example.name} failed (registry unreachable?): {exc}")
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace")[-300:]
        pytest.skip(f"npm install for {example.name} failed (registry unreachable?): {detail}")
    return str(modules)


@dataclass
class Seen:
    """One swarm client's traffic, as its frames show it."""

    room: str | None = None
    joined_at: float | None = None
    received: set[str] = field(default_factory=set)


class WireRecorder:
    """Independent count of the swarm clients' chat messages, from their raw frames."""

    def __init__(self, event: str | None = None) -> None:
        self.event = event  # a Socket.IO app: the chat event's name (frames are packets)
        self.clients: dict[str, Seen] = defaultdict(Seen)
        self.sent: list[tuple[float, str, str]] = []  # (time written, room, id)

    def attach(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Observe every AppClient the swarm makes from now on."""
        original = appclient.AppClient.__init__
        recorder = self

        def init(client: appclient.AppClient, *args: Any, **kwargs: Any) -> None:
            original(client, *args, **kwargs)
            client.driver.subscribe(lambda event, name=client.name: recorder.frame(name, event))

        monkeypatch.setattr(appclient.AppClient, "__init__", init)

    def _decode(self, payload: bytes) -> tuple[str, Any] | None:
        """(kind, body) of a chat app frame: "join" or "chat"."""
        text = payload.decode("utf-8", "replace")
        if self.event is None:
            try:
                body = json.loads(text)
            except ValueError:
                return None
            return (body.get("type"), body) if isinstance(body, dict) else None
        if not text.startswith("2"):  # Socket.IO EVENT packets only
            return None
        try:
            packet = json.loads(text[text.index("["):])
        except ValueError:
            return None
        if not isinstance(packet, list) or not packet:
            return None
        kind = "chat" if packet[0] == self.event else packet[0]
        return kind, packet[1] if len(packet) > 1 else None

    def frame(self, name: str, event: object) -> None:
        """One frame of client `name`."""
        if not isinstance(event, FrameRecord) or event.opcode is not Opcode.TEXT:
            return
        decoded = self._decode(event.payload)
        if decoded is None:
            return
        kind, body = decoded
        seen = self.clients[name]
        if event.direction is Direction.OUT:
            if kind == "join" and seen.joined_at is None:
                seen.joined_at = event.at
                seen.room = body["room"] if isinstance(body, dict) else str(body)
            elif kind == "chat":
                self.sent.append((event.at, body["room"], body["id"]))
        elif kind == "chat" and isinstance(body, dict):
            seen.received.add(body["id"])

    def lost(self) -> int:
        """Owed and never read, over every client that joined."""
        total = 0
        for seen in self.clients.values():
            if seen.joined_at is None:
                continue
            owed = {ident for at, room, ident in self.sent
                    if room == seen.room and at >= seen.joined_at}
            total += len(owed - seen.received)
        return total
