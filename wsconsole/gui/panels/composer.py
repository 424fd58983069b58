"""Composer panel: send text, JSON (validated first), binary (hex / base64 / file); join,
leave, publish and rpc over the harness protocol; saved templates and a send history.

`encode_payload` is the one place that turns what the user typed into a frame, and it
refuses bad input with a message instead of sending it.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.app.ports import HarnessClient, SessionClient
from wsconsole.core.lifecycle import State
from wsconsole.gui.theme import mono

FORMATS = ("Text", "JSON", "Hex", "Base64", "File")
MAX_FILE = 1 << 20  # the default max message size (DESIGN.md)
HISTORY = 200


def encode_payload(fmt: str, text: str) -> str | bytes:
    """The frame for `text` in format `fmt` (text -> str, binary -> bytes); ValueError if bad."""
    if fmt == "Text":
        return text
    if fmt == "JSON":
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        return orjson.dumps(value).decode()
    if fmt == "Hex":
        cleaned = "".join(text.split()).removeprefix("0x")
        try:
            return bytes.fromhex(cleaned)
        except ValueError:
            raise ValueError("invalid hex: use pairs of 0-9a-f digits") from None
    if fmt == "Base64":
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"invalid base64: {exc}") from None
    if fmt == "File":
        path = os.path.expanduser(text.strip())
        if not path:
            raise ValueError("choose a file to send")
        if not os.path.isfile(path):
            raise ValueError(f"file {path} does not exist")
        size = os.path.getsize(path)
        if size > MAX_FILE:
            raise ValueError(f"file is {size} bytes; the limit is {MAX_FILE}")
        with open(path, "rb") as handle:
            return handle.read()
    raise ValueError(f"unknown format {fmt!r}")


def json_value(text: str) -> Any:
    """Parse a JSON value for publish data / rpc params; empty text is null."""
    if not text.strip():
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None


class ComposerPanel(QWidget):
    """Editor with format selector, target connection, harness actions, templates, history."""

    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.templates: dict[str, dict[str, str]] = {}
        self.history: list[dict[str, Any]] = []

        self.target = QComboBox()
        self.format = QComboBox()
        self.format.setToolTip("how the editor's content is sent; a decoder's format takes "
                               "the decoded tree's JSON and encodes it (docs/decoders.md)")
        self._encoders: dict[str, str] = {}  # format label -> decoder name
        self.sync_formats()
        self.template_box = QComboBox()
        self.template_box.setPlaceholderText("templates")
        self.save_template_button = QPushButton("Save as\u2026")
        self.delete_template_button = QPushButton("Delete")
        top = QHBoxLayout()
        top.addWidget(QLabel("to"))
        top.addWidget(self.target, 1)
        top.addWidget(QLabel("as"))
        top.addWidget(self.format)
        top.addWidget(self.template_box, 1)
        top.addWidget(self.save_template_button)
        top.addWidget(self.delete_template_button)

        self.editor = QPlainTextEdit()
        self.editor.setFont(mono())
        self.editor.setPlaceholderText('{"hello": "world"}')
        self.file_button = QPushButton("File\u2026")
        self.send_button = QPushButton("Send")
        self.room_edit = QLineEdit(placeholderText="room")
        self.join_button = QPushButton("Join")
        self.leave_button = QPushButton("Leave")
        self.publish_button = QPushButton("Publish")
        self.method_edit = QLineEdit(placeholderText="rpc method")
        self.rpc_button = QPushButton("RPC")
        actions = QHBoxLayout()
        actions.addWidget(self.send_button)
        actions.addWidget(self.file_button)
        actions.addSpacing(12)
        actions.addWidget(self.room_edit, 1)
        actions.addWidget(self.join_button)
        actions.addWidget(self.leave_button)
        actions.addWidget(self.publish_button)
        actions.addSpacing(12)
        actions.addWidget(self.method_edit, 1)
        actions.addWidget(self.rpc_button)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.history_list = QListWidget()
        self.history_list.setFont(mono())
        editor_box = QWidget()
        editor_layout = QVBoxLayout(editor_box)
        editor_layout.setContentsMargins(0, 0, 0, 0)
        editor_layout.addWidget(self.editor)
        editor_layout.addLayout(actions)
        editor_layout.addWidget(self.message)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(editor_box)
        splitter.addWidget(self.history_list)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

        self.send_button.clicked.connect(self.send)
        self.file_button.clicked.connect(self._choose_file)
        self.join_button.clicked.connect(lambda: self.room_action("join"))
        self.leave_button.clicked.connect(lambda: self.room_action("leave"))
        self.publish_button.clicked.connect(lambda: self.room_action("publish"))
        self.rpc_button.clicked.connect(self.rpc)
        self.save_template_button.clicked.connect(self._save_template_dialog)
        self.delete_template_button.clicked.connect(self._delete_template)
        self.template_box.activated.connect(self._load_template)
        self.history_list.itemDoubleClicked.connect(self._load_history)
        console.on_change.append(self.sync_targets)
        self.sync_targets()

    # -- formats
    def sync_formats(self) -> None:
        """The fixed formats, then every decoder that encodes (a loaded schema adds one)."""
        registry = self.console.frames.decoding.registry
        self._encoders = {d.title: d.name for d in registry.encoders() if d.name != "json"}
        labels = [*FORMATS, *self._encoders]
        if [self.format.itemText(i) for i in range(self.format.count())] != labels:
            current = self.format.currentText()
            self.format.clear()
            self.format.addItems(labels)
            if current in labels:
                self.format.setCurrentText(current)

    def encode(self, fmt: str, text: str) -> str | bytes:
        """The frame for the editor's content in `fmt`; ValueError with the reason if bad.

        A decoder's format reads the text as JSON (a decoded tree) and encodes it with the
        target connection's context (its subprotocol, what was learned from its frames).
        """
        name = self._encoders.get(fmt)
        if name is None:
            return encode_payload(fmt, text)
        if not text.strip():
            raise ValueError(f"write the {fmt} message as JSON (a decoded tree)")
        context = self.console.frames.decoding.context(self.target.currentText())
        return self.console.frames.decoding.registry.encode(name, json_value(text), context)

    # -- targets
    def sync_targets(self) -> None:
        """Mirror the console's connections in the target selector."""
        names = list(self.console.sessions)
        current = self.target.currentText()
        if [self.target.itemText(i) for i in range(self.target.count())] != names:
            self.target.clear()
            self.target.addItems(names)
            if current in names:
                self.target.setCurrentText(current)

    def _client(self) -> SessionClient:
        name = self.target.currentText()
        session = self.console.sessions.get(name)
        if session is None or session.client is None:
            raise ValueError(f"connection {name or '(none)'} is not started: connect it first")
        return session.client

    def _harness_client(self, action: str) -> HarnessClient:
        client = self._client()
        if not client.options.harness:
            raise ValueError(f"{action} needs a connection in harness protocol mode")
        return cast("HarnessClient", client)  # only the WebSocket client has harness mode

    def _fail(self, text: str) -> None:
        self.message.setStyleSheet("color: #c0392b;")
        self.message.setText(text)

    def _ok(self, text: str) -> None:
        self.message.setStyleSheet("color: #2e9e44;")
        self.message.setText(text)

    def _run(self, label: str, make: Callable[[], Awaitable[Any]],
             done: Callable[[Any], None] | None = None) -> None:
        async def job() -> None:
            try:
                result = await make()
            except Exception as exc:  # shown in place; the hub also logs it
                self._fail(f"{label} failed: {type(exc).__name__}: {exc}")
                self.console.errors.report(f"{label} failed: {exc}", exc, level="info")
                return
            if done is not None:
                done(result)

        self.console.spawn(job(), label)

    # -- actions
    def send(self) -> bool:
        """Encode the editor's content and send it on the target connection."""
        fmt = self.format.currentText()
        text = self.editor.toPlainText()
        try:
            data = self.encode(fmt, text)
            client = self._client()
        except ValueError as exc:
            self._fail(str(exc))
            return False
        queued = client.state is not State.OPEN
        self._record("send", fmt, text)
        size = len(data.encode() if isinstance(data, str) else data)
        self._run("send", lambda: client.send(data), lambda _r: self._ok(
            f"{'queued' if queued else 'sent'} {size} bytes as {fmt}"))
        return True

    def room_action(self, action: str) -> bool:
        """join / leave / publish on the room field (publish sends the editor as JSON data)."""
        room = self.room_edit.text().strip()
        if not room:
            self._fail("enter a room name")
            return False
        try:
            client = self._harness_client(action)
            data = json_value(self.editor.toPlainText()) if action == "publish" else None
            if action == "publish" and self.format.currentText() == "Text":
                data = self.editor.toPlainText()
        except ValueError as exc:
            self._fail(str(exc))
            return False
        if action == "join":
            self._run("join", lambda: client.join(room), lambda _r: self._ok(f"joined {room}"))
        elif action == "leave":
            self._run("leave", lambda: client.leave(room), lambda _r: self._ok(f"left {room}"))
        else:
            self._record("publish", self.format.currentText(), self.editor.toPlainText(), room)
            self._run("publish", lambda: client.publish(room, data),
                      lambda ident: self._ok(f"published to {room} (id {ident})"))
        return True

    def rpc(self) -> bool:
        """Call the method in the rpc field with the editor's JSON as params."""
        method = self.method_edit.text().strip()
        if not method:
            self._fail("enter an rpc method")
            return False
        try:
            client = self._harness_client("rpc")
            params = json_value(self.editor.toPlainText())
        except ValueError as exc:
            self._fail(str(exc))
            return False
        self._record("rpc", "JSON", self.editor.toPlainText(), method)
        self._run("rpc", lambda: client.rpc(method, params),
                  lambda result: self._ok(f"rpc {method}: {orjson.dumps(result).decode()[:300]}"))
        return True

    # -- history and templates
    def _record(self, kind: str, fmt: str, text: str, target: str = "") -> None:
        entry = {"kind": kind, "format": fmt, "text": text, "target": target,
                 "conn": self.target.currentText(), "at": time.time()}
        self.history.append(entry)
        del self.history[:-HISTORY]
        label = f"{time.strftime('%H:%M:%S')} {kind} {target} {text[:60]!r}".replace("  ", " ")
        item = QListWidgetItem(label)
        item.setData(Qt.ItemDataRole.UserRole, len(self.history) - 1)
        self.history_list.insertItem(0, item)
        while self.history_list.count() > HISTORY:
            self.history_list.takeItem(self.history_list.count() - 1)

    def _load_history(self, item: QListWidgetItem) -> None:
        index = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(index, int) and 0 <= index < len(self.history):
            entry = self.history[index]
            self.format.setCurrentText(entry["format"])
            self.editor.setPlainText(entry["text"])

    def save_template(self, name: str) -> None:
        """Save the editor (format + text) under `name`."""
        self.templates[name] = {"format": self.format.currentText(),
                                "text": self.editor.toPlainText()}
        self._sync_templates(name)

    def set_templates(self, templates: dict[str, dict[str, str]]) -> None:
        """Replace the templates (restored from settings; malformed entries skipped)."""
        self.templates = {
            str(k): {"format": str(v.get("format", "Text")), "text": str(v.get("text", ""))}
            for k, v in templates.items() if isinstance(v, dict)
        }
        self._sync_templates()

    def _sync_templates(self, select: str | None = None) -> None:
        self.template_box.clear()
        self.template_box.addItems(sorted(self.templates))
        if select is not None:
            self.template_box.setCurrentText(select)
        else:
            self.template_box.setCurrentIndex(-1)

    def _save_template_dialog(self) -> None:
        name, ok = QInputDialog.getText(self, "Save template", "Template name:")
        if ok and name.strip():
            self.save_template(name.strip())

    def _delete_template(self) -> None:
        name = self.template_box.currentText()
        if name in self.templates:
            del self.templates[name]
            self._sync_templates()

    def _load_template(self, _index: int) -> None:
        entry = self.templates.get(self.template_box.currentText())
        if entry is not None:
            self.format.setCurrentText(entry["format"])
            self.editor.setPlainText(entry["text"])

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Send a file")
        if path:
            self.format.setCurrentText("File")
            self.editor.setPlainText(path)
