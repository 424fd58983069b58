"""The Frames view's detail pane: the selected frame decoded as a tree (or the decoder's error
next to the raw bytes), its text and hex; which decoder reads its connection ("decode as");
loading a Protocol Buffers schema. The decoding itself is app/decoding.py (no Qt)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.framestore import FrameRow, FrameStore
from wsconsole.core.events import Opcode
from wsconsole.decoders.base import Decoded
from wsconsole.decoders.protobuf import ProtoSchema
from wsconsole.decoders.registry import AUTO
from wsconsole.decoders.tree import compact
from wsconsole.gui.theme import mono

OPCODE_NAMES = {
    Opcode.TEXT: "text",
    Opcode.BINARY: "binary",
    Opcode.PING: "ping",
    Opcode.PONG: "pong",
    Opcode.CLOSE: "close",
    Opcode.CONTINUATION: "cont",
}
MAX_TREE_ITEMS = 5000  # a huge message is shown in part; the Text and Hex tabs have it all
ERROR_COLOR = "#c0392b"


def hexdump(data: bytes, limit: int = 65_536) -> str:
    """Classic offset / hex / ASCII dump of at most `limit` bytes."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  {text}")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return "\n".join(lines)


def fill_tree(tree: QTreeWidget, value: Any, limit: int = MAX_TREE_ITEMS) -> int:
    """Show a JSON tree as items (key, value); at most `limit` items. Returns how many."""
    tree.clear()
    count = 0

    def add(parent: QTreeWidget | QTreeWidgetItem, key: str, item: Any) -> None:
        nonlocal count
        if count >= limit:
            return
        count += 1
        if isinstance(item, dict):
            shown = f"{{{len(item)}}}"
            children: list[tuple[str, Any]] = [(str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            shown = f"[{len(item)}]"
            children = [(str(i), v) for i, v in enumerate(item)]
        else:
            shown, children = compact(item), []
        node = QTreeWidgetItem(parent, [key, shown])
        for child_key, child in children:
            add(node, child_key, child)
        if count >= limit and children:
            QTreeWidgetItem(node, ["\u2026", f"more than {limit} items: see Text / Hex"])

    add(tree, "(message)", value)
    tree.expandToDepth(2)
    tree.resizeColumnToContents(0)
    return count


class FrameDetail(QWidget):
    """Title, "decode as" and schema loading, and the Decoded / Text / Hex tabs."""

    decoding_changed = Signal()  # the frames' decoded forms changed (choice or schema)

    def __init__(self, store: FrameStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.frame: FrameRow | None = None
        self.decoded: Decoded | None = None
        self.title = QLabel("select a frame")
        self.decode_as = QComboBox()
        self.decode_as.setToolTip("the decoder for this frame's connection")
        self.schema_button = QPushButton("Load .proto\u2026")
        self.schema_button.setToolTip("decode binary frames with a Protocol Buffers schema "
                                      "(.proto or descriptor set)")
        self.decoder_line = QLabel()
        self.decoder_line.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["key", "value"])
        self.tree.setFont(mono())
        self.text_view = QPlainTextEdit(readOnly=True)
        self.hex_view = QPlainTextEdit(readOnly=True)
        for view in (self.text_view, self.hex_view):
            view.setFont(mono())
        decoded_tab = QWidget()
        decoded_layout = QVBoxLayout(decoded_tab)
        decoded_layout.setContentsMargins(0, 0, 0, 0)
        decoded_layout.addWidget(self.decoder_line)
        decoded_layout.addWidget(self.tree, 1)
        self.tabs = QTabWidget()
        self.decoded_tab = decoded_tab
        self.tabs.addTab(decoded_tab, "Decoded")
        self.tabs.addTab(self.text_view, "Text")
        self.tabs.addTab(self.hex_view, "Hex")
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(QLabel("decode as"))
        head.addWidget(self.decode_as)
        head.addWidget(self.schema_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.tabs, 1)
        self.sync_decoders()
        self.decode_as.activated.connect(self._picked)
        self.schema_button.clicked.connect(self._schema_dialog)

    # -- decoders ----------------------------------------------------------------------------

    def sync_decoders(self) -> None:
        """Mirror the registry in the "decode as" list (after a schema was loaded)."""
        self.decode_as.blockSignals(True)
        self.decode_as.clear()
        self.decode_as.addItem("auto", AUTO)
        for decoder in self.store.decoding.registry:
            self.decode_as.addItem(decoder.title, decoder.name)
        self.decode_as.blockSignals(False)
        self._show_choice()

    def _show_choice(self) -> None:
        name = self.store.decoding.choice(self.frame.conn) if self.frame else AUTO
        index = self.decode_as.findData(name)
        self.decode_as.setCurrentIndex(max(index, 0))
        self.decode_as.setEnabled(self.frame is not None)

    def set_decoder(self, name: str) -> None:
        """Decode the selected frame's connection with `name` ("auto" to let it be found)."""
        if self.frame is None:
            return
        self.store.decoding.choose(self.frame.conn, name)
        self.decoding_changed.emit()
        self.show_frame(self.frame)

    def _picked(self, index: int) -> None:
        self.set_decoder(str(self.decode_as.itemData(index)))

    def load_schema(self, path: str, message: str) -> str:
        """Load a schema, use it for the selected frame's connection; the decoder's name.

        SchemaError (ValueError) with protoc's message when it cannot be loaded.
        """
        name = self.store.decoding.load_schema(path, message)
        self.sync_decoders()
        if self.frame is not None:
            self.set_decoder(name)
        else:
            self.decoding_changed.emit()
        return name

    def _schema_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Protocol Buffers schema", "",
            "Schemas (*.proto *.pb *.desc *.binpb);;All files (*)")
        if not path:
            return
        try:
            names = ProtoSchema.load(path).message_names()
            if not names:
                raise ValueError(f"{path} defines no message type")
            message, ok = QInputDialog.getItem(self, "Message type",
                                               "The connection's messages are:", names, 0,
                                               False)
            if ok:
                self.load_schema(path, message)
        except ValueError as exc:
            self._say(str(exc), error=True)

    # -- showing a frame -------------------------------------------------------------------

    def show_frame(self, frame: FrameRow | None) -> None:
        """Show a frame (None: nothing selected)."""
        self.frame = frame
        self._show_choice()
        if frame is None:
            self.title.setText("select a frame")
            self.tree.clear()
            self.decoder_line.setText("")
            for view in (self.text_view, self.hex_view):
                view.setPlainText("")
            self.decoded = None
            return
        bits = [f"#{frame.id}", frame.conn, frame.direction.value,
                OPCODE_NAMES.get(frame.opcode, "?"), f"{frame.size} bytes"]
        if frame.close_code is not None:
            bits.append(f"close code {frame.close_code} reason {frame.close_reason or '(none)'}")
        if frame.truncated:
            bits.append(f"(first {len(frame.payload)} bytes kept)")
        if frame.injected:
            bits.append("injected")
        self.title.setText("  ".join(bits))
        self.text_view.setPlainText(frame.payload.decode("utf-8", "replace"))
        self.hex_view.setPlainText(hexdump(frame.payload))
        self.decoded = decoded = self.store.decoded(frame)
        if decoded.ok:
            fill_tree(self.tree, decoded.tree)
            self._say(f"{decoded.title}: {decoded.summary}")
            self.tabs.setCurrentWidget(self.decoded_tab)
            return
        self.tree.clear()
        if decoded.error is not None:
            where = f"{decoded.title}: " if decoded.title else ""
            self._say(f"{where}{decoded.error}", error=True)
            self.tabs.setCurrentWidget(self.decoded_tab)
        else:
            self._say("no decoder reads this payload: see Text / Hex")
            self.tabs.setCurrentWidget(
                self.text_view if frame.opcode is Opcode.TEXT else self.hex_view)

    def _say(self, text: str, error: bool = False) -> None:
        self.decoder_line.setStyleSheet(f"color: {ERROR_COLOR};" if error else "")
        self.decoder_line.setText(text)
        if error:  # the raw bytes under the error, in the tree's place
            self.tree.clear()
            raw = self.frame.payload if self.frame is not None else b""
            item = QTreeWidgetItem(self.tree, ["raw bytes", f"{len(raw)} bytes"])
            item.setForeground(0, QColor(ERROR_COLOR))
            for line in hexdump(raw, 4096).splitlines():
                QTreeWidgetItem(item, ["", line])
            self.tree.expandAll()
